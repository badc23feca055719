//! `bitpoll-launcher run`: every phase from config to exec, in order.
//!
//! 1. config       load and validate the whole file; the sockets systemd passed, if any,
//!    must be listening stream sockets (src/run/sockets.rs)
//! 2. preflight    observe the host read-only (crate::observe) and judge it for `run`
//!    (launcher_plan::judge::start): any error stops here, before any change, in the words
//!    `check` prints; with PostgreSQL, wait for the server, read what the database holds
//!    and judge again with it
//! 3. account      create or verify the service user and group; as root, act as that user
//!    from here on (root is taken back only where needed)
//! 4. directories  the data directory tree with exact owner and mode
//! 5. secrets      the values the judgement allows, and missing keys generated once
//! 6. prepare      the data directory lock and, with PostgreSQL, the migration lock,
//!    another look at stamps and database, then migrate / collectstatic / compilemessages
//!    as the service user, as judged
//! 7. drop         groups, gid, uid, capabilities, no_new_privs; verified
//! 8. exec         the server, in place, with an environment built from scratch
//!
//! The order is held by the types each phase takes and returns, not by statement order:
//! acting as the user needs the [`account::Account`] the account phase returns, the secrets
//! need the [`tree::DataTree`] of the directories, the preparation needs the
//! [`secrets::Secrets`], and the exec needs the [`SingleThreaded`] that only the end of the
//! runtime gives. The stop signals are caught from the first step to the last wait
//! ([`Waits`]), so a stop ends any phase cleanly, also as a container's PID 1, which also
//! reaps exited children until the server takes the PID over.

mod account;
mod preflight;
mod preparation;
mod secrets;
mod server;
mod sockets;
mod tree;

pub(crate) use account::account_exit;
pub(crate) use server::become_service_user;

use std::convert::Infallible;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use tracing::info;

use launcher_plan::layout;
use launcher_sys::privs::Identity;

use crate::cli::RunArgs;
use crate::exit::{self, Exit, OrExit};
use crate::lock;
use crate::notify;
use crate::signals::StopSignals;

pub fn run(args: &RunArgs) -> Result<Infallible, Exit> {
    let started = Instant::now();
    // Files the preparation and the app create are not readable by others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(layout::UMASK));
    let mut waits = Waits::start()?;
    let mut ids = Identity::of_process()
        .context("cannot read this process's identity")
        .or_exit(exit::PRIVILEGES)?;

    let phase = Phase::begin("config", "Reading configuration");
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
    phase.end(&format!("configuration {} is valid", args.config.display()));
    let sockets = sockets::verify()?;

    let preflight::Preflight {
        mut facts,
        mut start,
        session,
    } = preflight::preflight(&mut waits, &mut ids, &cfg)?;
    let account = account::account(&mut waits, &cfg, &start)?;
    let mut acting = account::act_as(&mut ids, &account)?;
    let tree = tree::directories(&mut acting, &cfg, &account)?;
    let secrets = secrets::secrets(&mut acting, &mut start, &tree, &account)?;
    waits.stopped("loading secrets")?;
    preparation::prepare(
        &mut waits,
        &mut acting,
        &cfg,
        preparation::Inputs {
            facts: &mut facts,
            session,
            start: &start,
            tree: &tree,
            account: &account,
            secrets: &secrets,
            force: args.force_prepare,
        },
    )?;
    server::ready_hook(&mut acting, &cfg, &tree, &account)?;
    let single = waits.end()?;
    // Root again: the drop needs it, and no guard may outlive it.
    drop(acting);
    server::start(
        single,
        ids,
        server::Inputs {
            cfg: &cfg,
            start: &start,
            inherited: &facts.inherited,
            account: &account,
            secrets,
            sockets,
            started,
        },
    )
}

/// Times a phase and logs its end with PHASE and DURATION_MS.
pub(super) struct Phase {
    name: &'static str,
    started: Instant,
}

impl Phase {
    pub(super) fn begin(name: &'static str, status: &str) -> Phase {
        notify::status(status);
        Phase {
            name,
            started: Instant::now(),
        }
    }

    pub(super) fn end(self, message: &str) {
        let ms = self.started.elapsed().as_millis() as u64;
        info!(phase = self.name, duration_ms = ms, "{message}");
    }
}

/// The start's one single-threaded runtime, for every wait (PostgreSQL, the locks, the
/// preparation process), and the stop signals it catches from the first step on.
///
/// A helper thread of the runtime (its blocking pool, which runs name lookups) blocks the
/// stop signals, so the kernel hands them to the launcher's own thread, whose handler
/// records them. [`Waits::end`] blocks them in that thread too before the runtime goes: a
/// stop received before counts then, one received after stays pending until right before
/// the exec. A start that fails or is stopped drops the runtime without waiting for its
/// helper threads (a name lookup that hangs does not delay the exit).
pub(super) struct Waits {
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<StopSignals>,
}

/// Proof that the runtime is gone and the stop signals are blocked: the process has one
/// thread and the next stop stays pending. Only [`Waits::end`] makes one.
pub(super) struct SingleThreaded(());

impl Waits {
    fn start() -> Result<Waits, Exit> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(|| {
                let _ = launcher_sys::signals::block_stop_signals();
            })
            .build()
            .context("cannot start the launcher's runtime")
            .or_exit(exit::RUNTIME)?;
        let stop = {
            let _entered = rt.enter();
            StopSignals::install()
                .context("cannot catch the stop signals")
                .or_exit(exit::RUNTIME)?
        };
        if std::process::id() == 1 {
            info!(
                "running as PID 1 (a container's entrypoint): stop signals are handled and exited children reaped until the server takes over"
            );
        }
        Ok(Waits {
            rt: Some(rt),
            stop: Some(stop),
        })
    }

    fn parts(&mut self) -> (&tokio::runtime::Runtime, &mut StopSignals) {
        match (&self.rt, &mut self.stop) {
            (Some(rt), Some(stop)) => (rt, stop),
            _ => unreachable!("the runtime lives until Waits::end"),
        }
    }

    /// `f` with the runtime and the stop signals at hand.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&tokio::runtime::Runtime, &mut StopSignals) -> T,
    ) -> T {
        let (rt, stop) = self.parts();
        f(rt, stop)
    }

    /// Run `f` on the runtime with the stop signals at hand.
    pub(super) fn block_on<'a, F: std::future::Future>(
        &'a mut self,
        f: impl FnOnce(&'a mut StopSignals) -> F,
    ) -> F::Output {
        let (rt, stop) = self.parts();
        rt.block_on(f(stop))
    }

    /// A stop signal received since the last look ends the start here.
    pub(super) fn stopped(&mut self, during: &str) -> Result<(), Exit> {
        let (rt, stop) = self.parts();
        match rt.block_on(stop.pending()) {
            Some(signal) => Err(Exit::stopped(
                signal,
                anyhow!(
                    "stopped by signal {} ({signal}) during {during}",
                    signal.raw()
                ),
            )),
            None => Ok(()),
        }
    }

    /// The end of every wait: the stop signals blocked, a last look for one received, the
    /// runtime gone (its threads joined), the stop signals' default actions back; as PID 1,
    /// the orphans reaped.
    fn end(mut self) -> Result<SingleThreaded, Exit> {
        launcher_sys::signals::block_stop_signals()
            .context("cannot block the stop signals")
            .or_exit(exit::RUNTIME)?;
        self.stopped("the end of preparation")?;
        drop(self.stop.take());
        drop(self.rt.take());
        launcher_sys::default_stop_signals()
            .context("cannot restore the default action of the stop signals")
            .or_exit(exit::RUNTIME)?;
        if std::process::id() == 1 {
            // The server becomes PID 1 and reaps its own children from then on.
            for orphan in launcher_sys::reap_zombies(&[]) {
                info!(
                    pid = orphan,
                    "reaped exited orphan process {orphan} (PID 1 inherits them)"
                );
            }
        }
        Ok(SingleThreaded(()))
    }
}

impl Drop for Waits {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn lock_exit(e: lock::LockError) -> Exit {
    match e.stop_signal() {
        Some(signal) => Exit::stopped(signal, e),
        None => Exit::new(exit::RUNTIME, e).rule(launcher_plan::rule::Rule::PrepareLock),
    }
}
