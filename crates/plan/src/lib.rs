//! Pure planning for the launcher: given the validated config and facts observed on the
//! system, decide what to do. Nothing here touches the file system, the process table or
//! the environment; every input is an argument, so every decision is unit-tested.
//!
//! - [`facts`]: what the observer found on the host, as typed values;
//! - [`judge`]: every rule, from config + facts to decisions and findings;
//! - [`finding`]: a judgement's words: severity, subject, message, fix;
//! - [`accept`]: the warnings `[check] accept` names, and the entries that do not apply;
//! - [`rule`]: every rule's stable id, journal MESSAGE_ID and catalog entry;
//! - [`keys`]: fingerprints of the keys that protect the data, for key continuity;
//! - [`env`]: the app's environment, built from scratch from explicit inputs;
//! - [`secret`]: the rules a secret value must pass, and generation from given random bytes;
//! - [`stamp`]: fingerprints of a preparation step's inputs and the run/skip decision;
//! - [`layout`]: the data directory tree with its modes;
//! - [`postgres`]: the PostgreSQL connection the app makes, the migration lock's key, the
//!   wait's schedule;
//! - [`protocol`]: the preparation driver's events, bounded line splitting, and which
//!   steps the events prove finished;
//! - [`text`]: outside text made safe to show on a terminal.

pub mod accept;
pub mod env;
pub mod facts;
pub mod finding;
pub mod judge;
pub mod keys;
pub mod layout;
pub mod postgres;
pub mod protocol;
pub mod rule;
pub mod secret;
pub mod stamp;
pub mod text;

/// A preparation step, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Migrate,
    Collectstatic,
    Compilemessages,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Migrate, Step::Collectstatic, Step::Compilemessages];

    /// The Django management command, also the name used in logs and stamps.
    pub fn name(self) -> &'static str {
        match self {
            Step::Migrate => "migrate",
            Step::Collectstatic => "collectstatic",
            Step::Compilemessages => "compilemessages",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The steps the config enables, in run order.
    pub fn enabled(prepare: &launcher_config::Prepare) -> Vec<Step> {
        Step::ALL
            .into_iter()
            .filter(|s| match s {
                Step::Migrate => prepare.migrate,
                Step::Collectstatic => prepare.collectstatic,
                Step::Compilemessages => prepare.compilemessages,
            })
            .collect()
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
