//! The preparation steps: which of migrate, collectstatic and compilemessages run, and
//! why. A stamp may only skip a step when what it claims still holds on disk: for migrate
//! the database's own `django_migrations` must hold every migration the last migrate
//! applied.

use std::collections::BTreeSet;
use std::path::PathBuf;

use launcher_config::{Config, Database};

use crate::Step;
use crate::facts::{Facts, FileKind, PoDir};
use crate::finding::{Finding, Group};
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
    /// Cannot be done here, and that is worth a warning, not an outage: the catalogs'
    /// directories are not writable by the service user (a read-only install).
    SkipReadOnly {
        dirs: Vec<PathBuf>,
    },
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
    pub fn finding(&self, cfg: &Config) -> Finding {
        let subject = format!("step {}", self.step);
        match &self.decision {
            Decision::Run(reason) => Finding::info(
                Group::Prepare,
                subject,
                format!("runs at the next start: {reason}"),
            ),
            Decision::Skip { finished } => Finding::ok(
                Group::Prepare,
                subject,
                format!(
                    "skipped: nothing changed since it succeeded at {}",
                    utc(*finished)
                ),
            ),
            Decision::SkipReadOnly { dirs } => Finding::warning(
                Group::Prepare,
                subject,
                format!(
                    "skipped: compilemessages writes each .mo beside its .po, but the service user ({}) cannot write {}; the app runs without those translations",
                    cfg.service.user,
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "compile the catalogs when the app is built or installed (`manage.py compilemessages` as the source's owner) and set prepare.compilemessages = false, or make those directories writable by the service user",
            ),
            Decision::Refuse(f) => f.clone(),
        }
    }
}

/// What the judgement needs besides config and facts: the preparation environment the
/// steps would run with (see [`crate::env`]).
pub struct Inputs<'a> {
    pub env: &'a [(String, String)],
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
            let decision = match decision {
                Decision::Run(_) if step == Step::Compilemessages => {
                    let blocked = unwritable(&source.po_dirs, facts);
                    if blocked.is_empty() {
                        decision
                    } else {
                        Decision::SkipReadOnly { dirs: blocked }
                    }
                }
                d => d,
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

/// Catalog directories the service user cannot write. The account may not exist yet (the
/// first start creates it): then it owns nothing and only world-writable ones count.
fn unwritable(dirs: &[PoDir], facts: &Facts) -> Vec<PathBuf> {
    let user = facts.account.user.as_ref();
    let mut gids: Vec<u32> = facts
        .account
        .supplementary
        .iter()
        .map(|(g, _)| *g)
        .collect();
    if let Some(u) = user {
        gids.push(u.gid);
    }
    if let Some(g) = &facts.account.group {
        gids.push(g.gid);
    }
    dirs.iter()
        .filter(|d| {
            let bit = if user.is_some_and(|u| u.uid == d.uid) {
                0o200
            } else if gids.contains(&d.gid) && user.is_some() {
                0o020
            } else {
                0o002
            };
            d.mode & bit == 0
        })
        .map(|d| d.path.clone())
        .collect()
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
        FileKind::Regular => format!(
            "has {} hard links: a database with another name elsewhere may be a planted link to a file the service must not get",
            db.links
        ),
        FileKind::Symlink => "is a symbolic link, which the launcher never follows".into(),
        FileKind::Directory => "is a directory, not a database file".into(),
        FileKind::Other | FileKind::Missing => {
            "is not a regular file (a FIFO, socket or device)".into()
        }
    };
    Some(Finding::error(
        Group::Database,
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
    Some(if fresh == po {
        Finding::ok(
            Group::App,
            subject,
            format!("{po} catalog(s), all compiled and up to date"),
        )
    } else if cfg.prepare.compilemessages {
        Finding::info(
            Group::App,
            subject,
            format!("{} of {po} catalog(s) are not compiled yet", po - fresh),
        )
    } else {
        Finding::warning(
            Group::App,
            subject,
            format!(
                "{} of {po} catalog(s) are not compiled (or older than their .po) and prepare.compilemessages = false",
                po - fresh
            ),
            "compile them at build/deploy time (manage.py compilemessages) or enable prepare.compilemessages",
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
    fn read_only_catalogs_are_skipped_with_a_warning_not_refused() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.source.as_mut().unwrap().po_dirs = vec![PoDir {
            path: "/opt/src/locale/de/LC_MESSAGES".into(),
            uid: 0,
            gid: 0,
            mode: 0o755,
        }];
        let p = planned(&cfg, &facts);
        let c = p.iter().find(|p| p.step == Step::Compilemessages).unwrap();
        assert!(matches!(c.decision, Decision::SkipReadOnly { .. }), "{p:?}");
        assert_eq!(c.finding(&cfg).severity, crate::finding::Severity::Warning);
        // Writable by the service user: it runs.
        let uid = facts.account.user.as_ref().unwrap().uid;
        facts.source.as_mut().unwrap().po_dirs[0].uid = uid;
        let p = planned(&cfg, &facts);
        assert!(decision(&p, Step::Compilemessages) == &Decision::Run(Reason::NoStamp));
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
