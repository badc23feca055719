//! The preflight: observe the host read-only and judge it for `run`; with PostgreSQL,
//! wait for the server and judge again with what the database holds. An error stops the
//! start here, before anything is changed, in the words `check` prints.

use tracing::{info, warn};

use launcher_config::Config;
use launcher_plan::facts::{Facts, View};
use launcher_plan::judge::{self, Command, Start};
use launcher_plan::postgres::{Server, instance_name};
use launcher_plan::rule::Rule;
use launcher_sys::privs::Identity;

use super::{Phase, Waits};
use crate::exit::{self, Exit};
use crate::observe::{self, Options};
use crate::postgres::{self, Login, Session, WaitError};

/// What the start goes on with.
pub(super) struct Preflight {
    pub facts: Facts,
    pub start: Start,
    /// The launcher's own PostgreSQL session (the migration lock is taken on it).
    pub session: Option<Session>,
}

pub(super) fn preflight(
    waits: &mut Waits,
    ids: &mut Identity,
    cfg: &Config,
) -> Result<Preflight, Exit> {
    let phase = Phase::begin("preflight", "Checking the deployment");
    let mut facts = observe::observe(
        ids,
        cfg,
        &Options {
            view: View::Service,
            unit: "bitpoll",
            postgres: observe::Postgres::Later,
        },
    );
    // Everything but what the database holds first: a refusal needs no server.
    let mut start = judged(cfg, &facts)?;
    waits.stopped("checking the deployment")?;
    let session = match Server::of(cfg) {
        None => None,
        Some(server) => {
            let db = Phase::begin(
                "database",
                &format!("Connecting to PostgreSQL at {}", server.address()),
            );
            let login = Login {
                password: observe::db_password(&facts),
                peer: observe::user_ids(&facts.account).filter(|_| ids.privileged()),
                name: instance_name(&launcher_sys::hostname(), std::process::id()),
            };
            let session = waits
                .block_on(|stop| postgres::wait(ids, &server, &login, stop))
                .map_err(|e| match e {
                    WaitError::Stopped { signal, .. } => Exit::stopped(signal, e),
                    WaitError::Refused { .. } => {
                        Exit::new(exit::SYSTEM, e).rule(Rule::DatabaseRefused)
                    }
                    WaitError::TimedOut { .. } => {
                        Exit::new(exit::RUNTIME, e).rule(Rule::DatabaseUnreachable)
                    }
                })?;
            let pg = waits.block_on(|_| session.observe());
            db.end(&format!("connected to PostgreSQL ({server})"));
            facts.database.postgresql = Some(pg);
            // Again with what PostgreSQL holds (a Fernet key is never generated over data).
            start = judged(cfg, &facts)?;
            Some(session)
        }
    };
    // What run itself will create or repair is logged when it does; warnings now.
    for f in start.warnings() {
        let (message_id, id) = (f.rule.message_id(), f.id());
        if launcher_plan::accept::accepts(&cfg.check.accept, f) {
            info!(phase = "preflight", subject = %f.subject, message_id, finding_id = %id, "{f} (accepted in check.accept)");
        } else {
            warn!(phase = "preflight", subject = %f.subject, message_id, finding_id = %id, "{f}");
        }
    }
    phase.end("the deployment is usable");
    Ok(Preflight {
        facts,
        start,
        session,
    })
}

/// The judgement for `run`, or its refusal.
fn judged(cfg: &Config, facts: &Facts) -> Result<Start, Exit> {
    let start = judge::start(cfg, facts, Command::Run, crate::now());
    match Exit::refused(&start.findings) {
        Some(refusal) => Err(refusal),
        None => Ok(start),
    }
}
