//! Secrets: use what was read, generate what is missing once, and never generate a key
//! that would orphan data encrypted with another one.

use launcher_config::{Config, Database, GenerateKind, SecretSource};

use crate::facts::{DirState, Facts, Observer, SecretFailure, SecretState, View};
use crate::finding::Finding;
use crate::rule::Rule;

/// What `run` does with one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The value read is used as is.
    Use,
    /// Generated now, kept in the secrets directory for every later start.
    Generate(GenerateKind),
    /// No value: refused (an error finding) or not visible from here (`check`).
    Unavailable,
}

/// The decision about one secret and the finding that describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub action: Action,
    pub finding: Finding,
}

/// One verdict per configured secret, in config order.
pub fn judge(cfg: &Config, facts: &Facts) -> Vec<Verdict> {
    let existing = super::existing_data(cfg, facts);
    let hidden = facts.observer == Observer::Other
        && facts
            .tree
            .dirs
            .iter()
            .any(|d| matches!(d.state, DirState::Unreadable { denied: true, .. }));
    facts
        .secrets
        .iter()
        .map(|s| {
            let subject = format!("{} ({})", s.name, s.source);
            let (action, finding) = match &s.state {
                SecretState::Read { value, origin } => (
                    Action::Use,
                    Finding::ok(
                        Rule::SecretUsable,
                        subject,
                        format!("usable: {origin}, {} bytes", value.len()),
                    ),
                ),
                SecretState::NotGenerated { kind, path } => match (kind, &existing) {
                    (GenerateKind::FernetKey, Some(evidence)) => (
                        Action::Unavailable,
                        Finding::error(
                            Rule::SecretFernetOverData,
                            subject,
                            format!(
                                "no key in {} although the database exists ({evidence}); refusing to generate a new Fernet key because the database already exists: data encrypted with the old key would become unreadable",
                                path.display()
                            ),
                            format!(
                                "restore the key that encrypted the existing data to {} (mode 0600, owned by the service user), or provide it with a file or credential source",
                                path.display()
                            ),
                        ),
                    ),
                    _ if hidden => (
                        Action::Unavailable,
                        Finding::warning(
                            Rule::SecretHidden,
                            subject,
                            "cannot be seen as this user (the data directory is not readable)",
                            "run check as root or as the service user",
                        ),
                    ),
                    (kind, _) => (
                        Action::Generate(*kind),
                        Finding::info(
                            Rule::SecretToGenerate,
                            subject,
                            "not generated yet; the first `run` generates and keeps it",
                        ),
                    ),
                },
                SecretState::Failed { failure, message } => {
                    (Action::Unavailable, failed(cfg, facts, &s.name, subject, *failure, message))
                }
            };
            Verdict {
                name: s.name.clone(),
                action,
                finding,
            }
        })
        .collect()
}

/// With PostgreSQL, instances behind one load balancer share one database: each must use
/// the same SECRET_KEY (sessions and CSRF tokens made by one are checked by another) and
/// the same FIELD_ENCRYPTION_KEY (data encrypted by one is read by all). A key generated
/// per instance is that instance's alone, so it is worth a warning.
pub fn shared_by_instances(cfg: &Config) -> Vec<Finding> {
    if !matches!(cfg.database, Database::Postgresql { .. }) {
        return Vec::new();
    }
    cfg.secrets
        .iter()
        .filter_map(|(name, source)| match source {
            SecretSource::Generate(kind) => Some(Finding::warning(
                Rule::SecretSharedByInstances,
                format!("{name} (generate {kind})"),
                "is generated and kept by this instance alone; with PostgreSQL, every instance that serves the same database must use the same value",
                format!(
                    "generate it once and give it to every instance: `{name} = {{ file = \"/run/keys/{name}\" }}` or a systemd credential (a single instance may keep generate)"
                ),
            )),
            _ => None,
        })
        .collect()
}

fn failed(
    cfg: &Config,
    facts: &Facts,
    name: &str,
    subject: String,
    failure: SecretFailure,
    message: &str,
) -> Finding {
    let credential = match cfg.secrets.get(name) {
        Some(SecretSource::Credential(id)) => id.as_str(),
        _ => "ID",
    };
    let fix = match failure {
        SecretFailure::NoCredentialsDirectory if facts.view == View::Outside => {
            return Finding::info(
                Rule::SecretNotVisible,
                subject,
                format!(
                    "not visible outside the running unit ({message}); make sure the unit has LoadCredential= for it"
                ),
            );
        }
        SecretFailure::NoCredentialsDirectory => format!(
            "add `LoadCredential={credential}:/path/to/file` to the unit (or use a file source)"
        ),
        SecretFailure::PermissionDenied if facts.observer != Observer::Root => {
            return Finding::warning(
                Rule::SecretPermissionDenied,
                subject,
                format!("cannot be read by this user ({message})"),
                "run check as root: the launcher reads secrets as root",
            );
        }
        SecretFailure::Exposed => "chmod 0600 the file (see the message)".into(),
        SecretFailure::KnownSample => "generate a fresh key; never reuse a published one".into(),
        SecretFailure::Missing => "create the file, or change the secret's source".into(),
        SecretFailure::WrongKind => {
            "restore the key that encrypted the existing data; remove the file only if no data depends on it (a new one is then generated)".into()
        }
        SecretFailure::PermissionDenied
        | SecretFailure::Untrusted
        | SecretFailure::Invalid
        | SecretFailure::Io => "fix the secret's file or source (see the message)".into(),
    };
    Finding::error(failure_rule(failure), subject, message, fix)
}

/// The rule of a secret that could not be loaded.
pub fn failure_rule(failure: SecretFailure) -> Rule {
    match failure {
        SecretFailure::NoCredentialsDirectory => Rule::SecretNoCredentials,
        SecretFailure::PermissionDenied => Rule::SecretPermissionDenied,
        SecretFailure::Exposed => Rule::SecretExposed,
        SecretFailure::KnownSample => Rule::SecretKnownSample,
        SecretFailure::Missing => Rule::SecretMissing,
        SecretFailure::WrongKind => Rule::SecretWrongKind,
        SecretFailure::Untrusted => Rule::SecretUntrusted,
        SecretFailure::Invalid => Rule::SecretInvalid,
        SecretFailure::Io => Rule::SecretUnreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{FileKind, SqliteFacts};
    use crate::judge::fixture;

    fn fernet_not_generated(facts: &mut crate::facts::Facts) {
        for s in &mut facts.secrets {
            if s.name == "BITPOLL_FIELD_ENCRYPTION_KEY" {
                s.state = SecretState::NotGenerated {
                    kind: GenerateKind::FernetKey,
                    path: "/var/lib/bitpoll/secrets/BITPOLL_FIELD_ENCRYPTION_KEY".into(),
                };
            }
        }
    }

    fn verdict<'a>(v: &'a [Verdict], name: &str) -> &'a Verdict {
        v.iter().find(|v| v.name == name).unwrap()
    }

    #[test]
    fn a_missing_fernet_key_is_generated_for_a_fresh_deployment() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.database.sqlite = None;
        fernet_not_generated(&mut facts);
        let v = judge(&cfg, &facts);
        assert_eq!(
            verdict(&v, "BITPOLL_FIELD_ENCRYPTION_KEY").action,
            Action::Generate(GenerateKind::FernetKey)
        );
    }

    #[test]
    fn a_fernet_key_is_never_generated_over_existing_data() {
        let cfg = fixture::config("");
        // Evidence 1: a migrate stamp.
        let mut facts = fixture::facts();
        fernet_not_generated(&mut facts);
        facts
            .stamps
            .insert(crate::Step::Migrate, "bitpoll-launcher stamp v1".into());
        let v = judge(&cfg, &facts);
        let f = verdict(&v, "BITPOLL_FIELD_ENCRYPTION_KEY");
        assert_eq!(f.action, Action::Unavailable);
        assert!(
            f.finding
                .message
                .contains("refusing to generate a new Fernet key")
        );
        // Evidence 2: a non-empty database file, no stamp (restored from a backup).
        let mut facts = fixture::facts();
        fernet_not_generated(&mut facts);
        facts.database.sqlite = Some(SqliteFacts {
            path: "/var/lib/bitpoll/db.sqlite3".into(),
            kind: FileKind::Regular,
            size: 4096,
            links: 1,
            applied: Err("not read".into()),
        });
        let v = judge(&cfg, &facts);
        let f = verdict(&v, "BITPOLL_FIELD_ENCRYPTION_KEY");
        assert!(f.finding.is_error());
        assert!(f.finding.message.contains("db.sqlite3 exists, 4096 bytes"));
    }

    #[test]
    fn a_fernet_key_is_never_generated_over_postgresql_data() {
        let cfg = fixture::postgresql_config("db");
        let mut facts = fixture::postgresql_facts(&["poll.0001_initial"]);
        fernet_not_generated(&mut facts);
        let v = judge(&cfg, &facts);
        let f = verdict(&v, "BITPOLL_FIELD_ENCRYPTION_KEY");
        assert_eq!(f.action, Action::Unavailable);
        assert!(
            f.finding
                .message
                .contains("role bitpoll at db:5432, database bitpoll holds 1 applied migration(s)"),
            "{}",
            f.finding
        );
        // Tables without django_migrations rows (restored by hand) count as data too.
        let mut facts = fixture::postgresql_facts(&[]);
        fernet_not_generated(&mut facts);
        if let Some(pg) = facts.database.postgresql.as_mut() {
            pg.state = crate::facts::PostgresState::Connected {
                version: "15".into(),
                tables: 3,
                applied: Ok(Default::default()),
            };
        }
        let v = judge(&cfg, &facts);
        assert!(
            verdict(&v, "BITPOLL_FIELD_ENCRYPTION_KEY")
                .finding
                .is_error()
        );
        // An empty database: generated.
        let mut facts = fixture::postgresql_facts(&[]);
        fernet_not_generated(&mut facts);
        let v = judge(&cfg, &facts);
        assert_eq!(
            verdict(&v, "BITPOLL_FIELD_ENCRYPTION_KEY").action,
            Action::Generate(GenerateKind::FernetKey)
        );
    }

    #[test]
    fn generated_keys_with_postgresql_are_a_warning_because_instances_must_share_them() {
        let f = shared_by_instances(&fixture::postgresql_config("db"));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f.iter()
                .all(|f| f.severity == crate::finding::Severity::Warning)
        );
        assert!(f[0].message.contains("every instance"), "{}", f[0]);
        assert!(shared_by_instances(&fixture::config("")).is_empty());
    }

    #[test]
    fn a_credential_outside_the_unit_is_info_for_check_and_an_error_for_run() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.secrets[0].state = SecretState::Failed {
            failure: SecretFailure::NoCredentialsDirectory,
            message: "CREDENTIALS_DIRECTORY is not set".into(),
        };
        let name = facts.secrets[0].name.clone();
        let v = judge(&cfg, &facts);
        assert!(verdict(&v, &name).finding.is_error());
        facts.view = View::Outside;
        let v = judge(&cfg, &facts);
        assert_eq!(
            verdict(&v, &name).finding.severity,
            crate::finding::Severity::Info
        );
    }

    #[test]
    fn each_failure_kind_gets_its_fix() {
        let cfg = fixture::config("");
        for (failure, fix) in [
            (SecretFailure::Exposed, "chmod 0600"),
            (SecretFailure::KnownSample, "generate a fresh key"),
            (SecretFailure::Missing, "create the file"),
            (SecretFailure::WrongKind, "restore the key"),
        ] {
            let mut facts = fixture::facts();
            facts.secrets[0].state = SecretState::Failed {
                failure,
                message: "x".into(),
            };
            let v = judge(&cfg, &facts);
            let f = &v[0].finding;
            assert!(f.is_error(), "{failure:?}");
            assert!(f.fix.as_deref().unwrap().contains(fix), "{failure:?}: {f}");
        }
    }
}
