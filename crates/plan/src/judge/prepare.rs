//! The preparation steps: which of migrate, collectstatic and compilemessages run, and
//! why. A stamp may only skip a step when what it claims still holds on disk: for migrate
//! the database's own `django_migrations` must hold every migration the last migrate
//! applied.

use std::collections::BTreeSet;
use std::path::PathBuf;

use launcher_config::{Config, Database};

use crate::Step;
use crate::facts::{Facts, FileKind};
use crate::finding::Finding;
use crate::rule::Rule;
use crate::stamp::{self, Fingerprint, FingerprintInputs, Reason, utc};

/// What happens to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Reason),
    /// Nothing to do: it succeeded at `finished` (seconds since the epoch) and nothing
    /// it depends on changed.
    Skip {
        finished: u64,
    },
    /// There is nothing for the step to do (the catalogs are compiled in the app source).
    NoWork(&'static str),
    /// `run` refuses to start.
    Refuse(Finding),
}

/// One enabled step with its decision and the fingerprint its stamp will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub step: Step,
    pub decision: Decision,
    pub fingerprint: Fingerprint,
}

impl Planned {
    pub fn runs(&self) -> bool {
        matches!(self.decision, Decision::Run(_))
    }

    /// The finding `check` prints for this decision; `run` logs the same words.
    pub fn finding(&self) -> Finding {
        let subject = format!("step {}", self.step);
        match &self.decision {
            Decision::Run(reason) => Finding::info(
                Rule::PrepareStep,
                subject,
                format!("runs at the next start: {reason}"),
            ),
            Decision::Skip { finished } => Finding::ok(
                Rule::PrepareStep,
                subject,
                format!(
                    "skipped: nothing changed since it succeeded at {}",
                    utc(*finished)
                ),
            ),
            Decision::NoWork(why) => {
                Finding::ok(Rule::PrepareStep, subject, format!("skipped: {why}"))
            }
            Decision::Refuse(f) => f.clone(),
        }
    }
}

/// What the judgement needs besides config and facts: the preparation environment the
/// steps would run with (see [`crate::env`]).
pub struct Inputs<'a> {
    pub env: &'a crate::env::Env,
    pub force: bool,
}

/// Decide every enabled step, in run order.
pub fn judge(cfg: &Config, facts: &Facts, inputs: &Inputs<'_>) -> Vec<Planned> {
    let Ok(source) = &facts.source else {
        return Vec::new();
    };
    let secret_names: Vec<&str> = cfg.secrets.keys().map(String::as_str).collect();
    let configured: Vec<&str> = cfg.environment.keys().map(String::as_str).collect();
    Step::enabled(&cfg.prepare)
        .into_iter()
        .map(|step| {
            let fingerprint = stamp::fingerprint(&FingerprintInputs {
                step,
                python: &facts.python_identity,
                source_digest: &source.digest,
                settings_module: &cfg.app.settings_module,
                env: inputs.env,
                secret_names: &secret_names,
                configured: &configured,
            });
            let witness = facts.witnesses.get(&step).map_or("", String::as_str);
            let stored = facts.stamps.get(&step).map(String::as_str);
            let decision = match stamp::decide(step, stored, &fingerprint, witness, inputs.force) {
                stamp::Decision::Run(reason) => Decision::Run(reason),
                stamp::Decision::Skip(stamp) => match step {
                    Step::Migrate => migrate_truth(facts, &stamp),
                    _ => Decision::Skip {
                        finished: stamp.finished,
                    },
                },
            };
            let decision = match step {
                Step::Compilemessages if source.po_files == 0 => {
                    Decision::NoWork("the app has no translation catalogs")
                }
                Step::Compilemessages if source.fresh_mo_files == source.po_files => {
                    Decision::NoWork("every catalog is compiled in the app source")
                }
                _ => decision,
            };
            Planned {
                step,
                decision,
                fingerprint,
            }
        })
        .collect()
}

/// The stamp says nothing changed; the database decides, SQLite and PostgreSQL alike:
/// its own `django_migrations` must hold every migration the last migrate applied.
fn migrate_truth(facts: &Facts, stamp: &stamp::Stamp) -> Decision {
    let Some(recorded) = &stamp.migrations else {
        return Decision::Run(Reason::OldStamp);
    };
    match facts.database.applied() {
        None => Decision::Run(Reason::DatabaseUnknown("not observed".into())),
        Some(Err(why)) => Decision::Run(Reason::DatabaseUnknown(why)),
        Some(Ok(applied)) => {
            let missing = behind(recorded, applied);
            if missing.is_empty() {
                Decision::Skip {
                    finished: stamp.finished,
                }
            } else {
                Decision::Run(Reason::DatabaseBehind {
                    count: missing.len(),
                    missing,
                })
            }
        }
    }
}

/// The recorded migrations the database does not hold.
fn behind(recorded: &[String], applied: &BTreeSet<String>) -> Vec<String> {
    recorded
        .iter()
        .filter(|m| !applied.contains(*m))
        .cloned()
        .collect()
}

/// The translation base directories to compile and where their catalogs go: every
/// `locale` directory of the source mirrored into the data directory, unless the source
/// carries all its catalogs compiled (a package built them) or the step is off. The
/// launcher never writes into the app source, which the service user may not own.
pub fn catalog_targets(cfg: &Config, facts: &Facts) -> Vec<(PathBuf, PathBuf)> {
    let Ok(source) = &facts.source else {
        return Vec::new();
    };
    if !cfg.prepare.compilemessages || source.fresh_mo_files == source.po_files {
        return Vec::new();
    }
    source
        .locale_dirs
        .iter()
        .map(|rel| {
            (
                cfg.app.source_dir.join(rel),
                crate::layout::catalog_target(cfg, rel),
            )
        })
        .collect()
}

/// The backup taken before migrate changes an SQLite database that holds data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backup {
    /// Nothing to back up (no migration runs, no data, PostgreSQL, backups = 0).
    None,
    /// Written here (an online backup, by the preparation process).
    Take(PathBuf),
    /// Not taken: too little free space for a copy of the database.
    NoRoom { need: u64, free: u64 },
}

impl Backup {
    pub fn finding(&self) -> Option<Finding> {
        match self {
            Backup::None => None,
            Backup::Take(path) => Some(Finding::info(
                Rule::PrepareBackup,
                "backup",
                format!(
                    "the database is backed up to {} before migrate",
                    path.display()
                ),
            )),
            Backup::NoRoom { need, free } => Some(Finding::warning(
                Rule::PrepareBackup,
                "backup",
                format!(
                    "no backup before migrate: it needs {} MiB, the data directory's file system has {} MiB free",
                    need >> 20,
                    free >> 20
                ),
                "free disk space, or set prepare.backups = 0 to migrate without a backup",
            )),
        }
    }
}

/// Whether and where to back up the database before the migrate of `planned`.
pub fn backup(cfg: &Config, facts: &Facts, planned: &[Planned], now: u64) -> Backup {
    let migrate = planned.iter().find(|p| p.step == Step::Migrate && p.runs());
    let (Database::Sqlite { .. }, Some(db)) = (&cfg.database, &facts.database.sqlite) else {
        return Backup::None;
    };
    if migrate.is_none() || cfg.prepare.backups == 0 || db.kind != FileKind::Regular || db.size == 0
    {
        return Backup::None;
    }
    // Forced with nothing new on disk and a database holding all of it: nothing to apply.
    let forced_without_work = migrate.is_some_and(|p| p.decision == Decision::Run(Reason::Forced))
        && facts
            .stamps
            .get(&Step::Migrate)
            .and_then(|t| stamp::Stamp::parse(t))
            .filter(|s| {
                s.fingerprint.digest == migrate.map_or("", |p| p.fingerprint.digest.as_str())
            })
            .and_then(|s| s.migrations)
            .zip(db.applied.as_ref().ok())
            .is_some_and(|(recorded, applied)| behind(&recorded, applied).is_empty());
    if forced_without_work {
        return Backup::None;
    }
    let need = db.size + db.size / 10 + (16 << 20);
    match facts.tree.free_bytes {
        Some((_, free)) if free < need => Backup::NoRoom { need, free },
        _ => Backup::Take(
            cfg.service
                .data_dir
                .join(crate::layout::BACKUPS_DIR)
                .join(crate::layout::backup_name(now)),
        ),
    }
}

/// The SQLite database migrate creates, when it runs and the file does not exist yet:
/// the driver then builds it under a temporary name beside it, without waiting for the
/// disk after every migration, and moves it into place in one rename once migrate
/// succeeded (a stop or crash on the way leaves no database, and the next start builds it
/// again). None for an existing file, PostgreSQL, or when migrate does not run.
pub fn new_database(cfg: &Config, facts: &Facts, planned: &[Planned]) -> Option<PathBuf> {
    let Database::Sqlite { path } = &cfg.database else {
        return None;
    };
    let db = facts.database.sqlite.as_ref()?;
    let migrates = planned.iter().any(|p| p.step == Step::Migrate && p.runs());
    (migrates && db.kind == FileKind::Missing).then(|| path.clone())
}

/// The database file must be a plain file of its own, or absent (migrate creates it).
pub fn database(cfg: &Config, facts: &Facts) -> Option<Finding> {
    let Database::Sqlite { path } = &cfg.database else {
        return None;
    };
    let db = facts.database.sqlite.as_ref()?;
    let subject = format!("sqlite {}", path.display());
    let what = match db.kind {
        FileKind::Missing | FileKind::Regular if db.links <= 1 => return None,
        FileKind::Regular => {
            return Some(
                super::data_dir::DirProblem::HardLinked {
                    subject,
                    path: path.clone(),
                    links: db.links,
                }
                .finding(),
            );
        }
        FileKind::Symlink => "is a symbolic link, which the launcher never follows".into(),
        FileKind::Directory => "is a directory, not a database file".into(),
        FileKind::Other | FileKind::Missing => {
            "is not a regular file (a FIFO, socket or device)".to_string()
        }
    };
    Some(Finding::error(
        Rule::DatabaseFile,
        subject,
        what,
        format!(
            "move {} away (keep it if it holds data); migrate creates a new database there",
            path.display()
        ),
    ))
}

/// The translation catalogs as `check` reports them: compiled, to be compiled, or left
/// uncompiled by a config that turned the step off.
pub fn catalogs(cfg: &Config, facts: &Facts) -> Option<Finding> {
    let source = facts.source.as_ref().ok()?;
    let po = source.po_files;
    if po == 0 {
        return None;
    }
    let fresh = source.fresh_mo_files;
    let subject = format!("translations in {}", cfg.app.source_dir.display());
    let into = cfg.service.data_dir.join(crate::layout::LOCALE_DIR);
    Some(if fresh == po {
        Finding::ok(
            Rule::AppCatalogs,
            subject,
            format!("{po} catalog(s), all compiled and up to date in the app source"),
        )
    } else if !cfg.prepare.compilemessages {
        Finding::warning(
            Rule::AppCatalogs,
            subject,
            format!(
                "{} of {po} catalog(s) are not compiled (or older than their .po) and prepare.compilemessages = false",
                po - fresh
            ),
            "compile them at build/deploy time (manage.py compilemessages) or enable prepare.compilemessages",
        )
    } else if source.fresh_in_data_dir == po {
        Finding::ok(
            Rule::AppCatalogs,
            subject,
            format!(
                "{po} catalog(s), all compiled and up to date in {}",
                into.display()
            ),
        )
    } else {
        Finding::info(
            Rule::AppCatalogs,
            subject,
            format!(
                "{} of {po} catalog(s) are not compiled yet; `run` compiles them into {}",
                po - source.fresh_in_data_dir,
                into.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{PostgresState, SqliteFacts};
    use crate::judge::fixture;

    fn planned(cfg: &Config, facts: &Facts) -> Vec<Planned> {
        judge(
            cfg,
            facts,
            &Inputs {
                env: &fixture::env(),
                force: false,
            },
        )
    }

    /// Facts as right after a successful start: every stamp written for these facts.
    fn after_success(cfg: &Config, migrations: &[&str]) -> Facts {
        let mut facts = fixture::facts();
        for p in planned(cfg, &facts) {
            let s = stamp::Stamp {
                step: p.step,
                fingerprint: p.fingerprint,
                witness: facts.witnesses[&p.step].clone(),
                finished: 100,
                migrations: (p.step == Step::Migrate)
                    .then(|| migrations.iter().map(|m| m.to_string()).collect()),
            };
            facts.stamps.insert(p.step, s.render());
        }
        facts
    }

    fn decision(p: &[Planned], step: Step) -> &Decision {
        &p.iter().find(|p| p.step == step).unwrap().decision
    }

    #[test]
    fn only_a_database_migrate_creates_is_built_under_a_temporary_name() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        let path = match &cfg.database {
            Database::Sqlite { path } => path.clone(),
            _ => unreachable!(),
        };
        facts.database.sqlite.as_mut().unwrap().kind = FileKind::Missing;
        let p = planned(&cfg, &facts);
        assert!(p.iter().any(|p| p.step == Step::Migrate && p.runs()));
        assert_eq!(new_database(&cfg, &facts, &p), Some(path));
        // Migrate does not run: nothing is built.
        let skipped: Vec<Planned> = p
            .iter()
            .filter(|p| p.step != Step::Migrate)
            .cloned()
            .collect();
        assert_eq!(new_database(&cfg, &facts, &skipped), None);
        // An existing file is migrated in place.
        for kind in [FileKind::Regular, FileKind::Symlink, FileKind::Other] {
            facts.database.sqlite.as_mut().unwrap().kind = kind;
            assert_eq!(new_database(&cfg, &facts, &p), None, "{kind:?}");
        }
        let cfg = fixture::postgresql_config("db");
        let facts = fixture::postgresql_facts(&[]);
        let p = planned(&cfg, &facts);
        assert_eq!(new_database(&cfg, &facts, &p), None);
    }

    #[test]
    fn a_warm_start_skips_every_step() {
        let cfg = fixture::config("");
        let facts = after_success(&cfg, &["poll.0001_initial"]);
        let p = planned(&cfg, &facts);
        assert_eq!(p.len(), 3);
        assert!(
            p.iter()
                .all(|p| matches!(p.decision, Decision::Skip { .. })),
            "{p:?}"
        );
    }

    #[test]
    fn an_emptied_or_restored_database_runs_migrate_despite_the_stamp() {
        let cfg = fixture::config("");
        let mut facts = after_success(&cfg, &["poll.0001_initial", "poll.0002_more"]);
        let db = facts.database.sqlite.as_mut().unwrap();
        db.applied = Ok(["poll.0001_initial".to_string()].into());
        let p = planned(&cfg, &facts);
        assert!(
            matches!(
                decision(&p, Step::Migrate),
                Decision::Run(Reason::DatabaseBehind { count: 1, .. })
            ),
            "{p:?}"
        );
        facts.database.sqlite.as_mut().unwrap().applied = Err("locked".into());
        let p = planned(&cfg, &facts);
        assert!(matches!(
            decision(&p, Step::Migrate),
            Decision::Run(Reason::DatabaseUnknown(_))
        ));
        assert!(matches!(
            decision(&p, Step::Collectstatic),
            Decision::Skip { .. }
        ));
    }

    #[test]
    fn postgresql_decides_migrate_by_its_django_migrations_like_sqlite() {
        let cfg = fixture::postgresql_config("db");
        let applied = ["poll.0001_initial", "poll.0002_more"];
        let mut facts = fixture::postgresql_facts(&applied);
        let stamped = after_success(&cfg, &applied);
        facts.stamps = stamped.stamps;
        facts.witnesses = stamped.witnesses;
        let p = planned(&cfg, &facts);
        assert!(
            matches!(decision(&p, Step::Migrate), Decision::Skip { .. }),
            "{p:?}"
        );
        // DROP SCHEMA public CASCADE; CREATE SCHEMA public: no django_migrations at all.
        let pg = facts.database.postgresql.as_mut().unwrap();
        pg.state = PostgresState::Connected {
            version: "15.18".into(),
            tables: 0,
            applied: Ok(BTreeSet::new()),
        };
        let p = planned(&cfg, &facts);
        assert!(
            matches!(
                decision(&p, Step::Migrate),
                Decision::Run(Reason::DatabaseBehind { count: 2, .. })
            ),
            "{p:?}"
        );
        // Not read (check could not connect): cannot tell, so it runs.
        facts.database.postgresql.as_mut().unwrap().state = PostgresState::Failed {
            failure: crate::postgres::Failure::Unreachable,
            message: "connection refused".into(),
        };
        let p = planned(&cfg, &facts);
        assert!(matches!(
            decision(&p, Step::Migrate),
            Decision::Run(Reason::DatabaseUnknown(_))
        ));
        facts.database.postgresql = None;
        let p = planned(&cfg, &facts);
        assert!(matches!(
            decision(&p, Step::Migrate),
            Decision::Run(Reason::DatabaseUnknown(_))
        ));
    }

    #[test]
    fn catalogs_compiled_in_the_source_need_no_work_and_no_target() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        assert_eq!(
            catalog_targets(&cfg, &facts),
            vec![(
                PathBuf::from("/opt/src/locale"),
                PathBuf::from("/var/lib/bitpoll/locale")
            )]
        );
        let p = planned(&cfg, &facts);
        assert_eq!(
            decision(&p, Step::Compilemessages),
            &Decision::Run(Reason::NoStamp)
        );
        facts.source.as_mut().unwrap().fresh_mo_files = 1;
        let p = planned(&cfg, &facts);
        assert!(matches!(
            decision(&p, Step::Compilemessages),
            Decision::NoWork(_)
        ));
        assert!(catalog_targets(&cfg, &facts).is_empty());
        let cfg = fixture::config("").clone();
        let mut off = cfg.clone();
        off.prepare.compilemessages = false;
        facts.source.as_mut().unwrap().fresh_mo_files = 0;
        assert!(catalog_targets(&off, &facts).is_empty());
    }

    #[test]
    fn a_database_with_data_is_backed_up_before_a_migrate_when_there_is_room() {
        let cfg = fixture::config("");
        let facts = fixture::facts();
        let p = planned(&cfg, &facts);
        assert!(
            matches!(backup(&cfg, &facts, &p, 1_795_635_566), Backup::Take(ref path)
            if path.ends_with("backups/db-20261125193926.sqlite3"))
        );
        // Nothing migrates: no backup.
        let warm = after_success(&cfg, &["poll.0001_initial"]);
        assert_eq!(backup(&cfg, &warm, &planned(&cfg, &warm), 1), Backup::None);
        // No room.
        let mut full = fixture::facts();
        full.tree.free_bytes = Some(("/var/lib".into(), 1 << 20));
        assert!(matches!(backup(&cfg, &full, &p, 1), Backup::NoRoom { .. }));
        // Forced, but nothing new on disk and the database holds it all: no backup.
        let forced = judge(
            &cfg,
            &warm,
            &Inputs {
                env: &fixture::env(),
                force: true,
            },
        );
        assert_eq!(backup(&cfg, &warm, &forced, 1), Backup::None);
        // Turned off.
        let mut off = cfg.clone();
        off.prepare.backups = 0;
        assert_eq!(backup(&off, &facts, &p, 1), Backup::None);
    }

    #[test]
    fn a_database_that_is_not_a_plain_file_is_refused() {
        let cfg = fixture::config("");
        for (kind, links) in [
            (FileKind::Directory, 1),
            (FileKind::Other, 1),
            (FileKind::Symlink, 1),
            (FileKind::Regular, 2),
        ] {
            let mut facts = fixture::facts();
            facts.database.sqlite = Some(SqliteFacts {
                path: "/var/lib/bitpoll/db.sqlite3".into(),
                kind,
                size: 0,
                links,
                applied: Err("x".into()),
            });
            assert!(database(&cfg, &facts).is_some(), "{kind:?}");
        }
        assert!(database(&cfg, &fixture::facts()).is_none());
    }
}
