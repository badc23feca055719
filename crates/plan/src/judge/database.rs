//! The PostgreSQL database as the launcher's own connection found it: reachable (and
//! what it holds), or why not with the fix. `run` waits for an unreachable server and
//! fails at once on the rest before it judges, so for `run` this is the record of what it
//! connected to; for `check` it is what the next start would meet.

use launcher_config::Config;

use crate::facts::{Facts, PostgresState};
use crate::finding::Finding;
use crate::postgres::{Failure, Server};
use crate::rule::Rule;

/// The finding about the PostgreSQL connection; None for SQLite or when not observed.
pub fn postgresql(cfg: &Config, facts: &Facts) -> Option<Finding> {
    let server = Server::of(cfg)?;
    let pg = facts.database.postgresql.as_ref()?;
    let subject = format!("postgresql {}", pg.server);
    Some(match &pg.state {
        PostgresState::NotObserved(why) => Finding::info(
            Rule::DatabaseReachable,
            subject,
            format!("not checked: {why}"),
        ),
        PostgresState::Connected {
            version,
            tables,
            applied,
        } => {
            let migrations = match applied {
                Ok(a) if a.is_empty() => "no applied migrations".to_string(),
                Ok(a) => format!("{} applied migration(s)", a.len()),
                Err(why) => format!("its applied migrations cannot be read ({why})"),
            };
            Finding::ok(
                Rule::DatabaseReachable,
                subject,
                format!("reachable: PostgreSQL {version}, {tables} table(s), {migrations}"),
            )
        }
        PostgresState::Failed { failure, message } => {
            let what = match failure {
                Failure::Unreachable => format!(
                    "not reachable ({message}); `run` waits up to {} s for it, then fails",
                    server.wait_timeout.as_secs()
                ),
                Failure::Authentication => {
                    format!("refused the login ({message}); `run` fails at once")
                }
                Failure::NoDatabase => {
                    format!("has no such database ({message}); `run` fails at once")
                }
                Failure::Tls | Failure::Other => {
                    format!("cannot be used ({message}); `run` fails at once")
                }
            };
            let rule = match failure {
                Failure::Unreachable => Rule::DatabaseUnreachable,
                _ => Rule::DatabaseRefused,
            };
            Finding::error(rule, subject, what, failure.fix(&server))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use crate::judge::fixture;

    #[test]
    fn a_reachable_server_is_ok_and_says_what_it_holds() {
        let cfg = fixture::postgresql_config("db");
        let facts = fixture::postgresql_facts(&["poll.0001_initial"]);
        let f = postgresql(&cfg, &facts).unwrap();
        assert_eq!(f.severity, Severity::Ok);
        assert_eq!(
            f.message,
            "reachable: PostgreSQL 15.18, 12 table(s), 1 applied migration(s)"
        );
        assert!(postgresql(&fixture::config(""), &facts).is_none());
    }

    #[test]
    fn each_failure_is_an_error_with_its_fix() {
        let cfg = fixture::postgresql_config("db");
        for (failure, message, fix) in [
            (
                Failure::Unreachable,
                "waits up to 120 s",
                "start PostgreSQL",
            ),
            (Failure::Authentication, "fails at once", "pg_hba.conf"),
            (
                Failure::NoDatabase,
                "fails at once",
                "createdb --owner bitpoll bitpoll",
            ),
            (Failure::Tls, "fails at once", "database.sslmode"),
        ] {
            let mut facts = fixture::postgresql_facts(&[]);
            facts.database.postgresql.as_mut().unwrap().state = PostgresState::Failed {
                failure,
                message: "x".into(),
            };
            let f = postgresql(&cfg, &facts).unwrap();
            assert!(f.is_error(), "{failure:?}");
            assert!(f.message.contains(message), "{failure:?}: {f}");
            assert!(f.fix.as_deref().unwrap().contains(fix), "{failure:?}: {f}");
        }
    }
}
