//! Judgements: pure functions from the validated config and the observed [`Facts`] to
//! decisions and findings. Every rule the launcher applies to a deployment lives here,
//! once: `run` acts on these decisions and refuses on their errors, `check` prints the
//! very same findings. A new rule goes into the module of its subject, with a table test.
//!
//! [`Facts`]: crate::facts::Facts

pub mod account;
pub mod data_dir;
pub mod database;
pub mod keys;
pub mod prepare;
pub mod programs;
pub mod secrets;
pub mod start;

pub use start::{Command, Preparation, SecretPlan, Start, preparation, start};

use launcher_config::{Config, Database};

use crate::Step;
use crate::facts::{Facts, FileKind, PostgresState};
use crate::finding::Finding;

/// The judgement of a deployment before anything is changed: every finding in the order
/// `check` prints them, and what `run` does about the account and each secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub findings: Vec<Finding>,
    pub account: account::Action,
    pub secrets: Vec<secrets::Verdict>,
}

/// Judge programs, account, data directory, database file and secrets.
pub fn deployment(cfg: &Config, facts: &Facts) -> Deployment {
    let mut findings = programs::judge(cfg, facts);
    let (account, account_findings) = account::judge(cfg, facts);
    findings.extend(account_findings);
    findings.extend(data_dir::judge(cfg, facts));
    findings.extend(prepare::database(cfg, facts));
    findings.extend(database::postgresql(cfg, facts));
    let secrets = secrets::judge(cfg, facts);
    findings.extend(secrets.iter().map(|v| v.finding.clone()));
    findings.extend(secrets::shared_by_instances(cfg));
    findings.extend(keys::judge(cfg, facts));
    Deployment {
        findings,
        account,
        secrets,
    }
}

/// Evidence that the app's database already holds data, for the rules that protect it
/// (never generate a new encryption key for existing data). None when there is none.
pub fn existing_data(cfg: &Config, facts: &Facts) -> Option<String> {
    if facts.stamps.contains_key(&Step::Migrate) {
        return Some(format!(
            "state/{} records an earlier migration",
            crate::layout::stamp_file_name(Step::Migrate)
        ));
    }
    if let (Database::Postgresql { .. }, Some(pg)) = (&cfg.database, &facts.database.postgresql) {
        // Data present = tables with rows: `django_migrations` is the table every
        // migrated database fills; other tables count too (restored or created by hand)
        // whether or not they hold rows, since that is not cheap to tell.
        if let PostgresState::Connected {
            tables, applied, ..
        } = &pg.state
        {
            let applied = applied.as_ref().map_or(0, |a| a.len());
            return match (applied, tables) {
                (0, 0) => None,
                (0, t) => Some(format!("{} holds {t} table(s)", pg.server)),
                (a, _) => Some(format!(
                    "{} holds {a} applied migration(s) in django_migrations",
                    pg.server
                )),
            };
        }
        return None;
    }
    match (&cfg.database, &facts.database.sqlite) {
        (Database::Sqlite { .. }, Some(db)) => {
            let applied = db.applied.as_ref().map_or(0, |a| a.len());
            (db.kind != FileKind::Missing && (db.size > 0 || applied > 0)).then(|| {
                let mut e = format!("{} exists, {} bytes", db.path.display(), db.size);
                if applied > 0 {
                    e.push_str(&format!(", with {applied} applied migration(s)"));
                }
                e
            })
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod fixture;
