//! The end of a start: the server's readiness hook, the terminal left, the privilege drop
//! for good, and the exec of the server in the launcher's place.

use std::convert::Infallible;
use std::time::Instant;

use anyhow::Context as _;
use tracing::info;

use launcher_config::Config;
use launcher_plan::env::{self, Purpose};
use launcher_plan::judge::Start;
use launcher_plan::layout;
use launcher_plan::rule::Rule;
use launcher_sys::exec::ExecError;
use launcher_sys::privs::{Identity, Switched, Target};

use super::account::Account;
use super::secrets::Secrets;
use super::tree::DataTree;
use super::{Phase, SingleThreaded, preparation};
use crate::exit::{self, Exit, OrExit};
use crate::notify;

/// What the server is started with.
pub(super) struct Inputs<'a> {
    pub cfg: &'a Config,
    pub start: &'a Start,
    /// The launcher's own environment, as observed.
    pub inherited: &'a [(String, String)],
    pub account: &'a Account,
    pub secrets: Secrets,
    /// The listening sockets systemd passed, checked (src/run/sockets.rs).
    pub sockets: usize,
    /// When the launcher started, for the total time it took.
    pub started: Instant,
}

/// gunicorn's config file with the readiness hooks (src/ready.rs), written on every start
/// so it is always the launcher's own text, as the service user.
pub(super) fn ready_hook(
    _acting: &mut Switched<'_>,
    cfg: &Config,
    tree: &DataTree,
    account: &Account,
) -> Result<(), Exit> {
    crate::ready::write_hook(cfg, tree, account.owner()).or_exit(exit::SYSTEM)
}

/// Drop to the service user for good and enter the app source, where the server and
/// `manage`'s command start (exit 4 when either fails).
pub(crate) fn become_service_user(
    ids: Identity,
    target: &Target,
    source_dir: &std::path::Path,
) -> Result<(), Exit> {
    launcher_sys::privs::drop_for_good(ids, target).or_exit(exit::PRIVILEGES)?;
    std::env::set_current_dir(source_dir)
        .with_context(|| {
            format!(
                "the service user cannot enter the app source {}; make it readable (a+rX) for the service user",
                source_dir.display()
            )
        })
        .or_exit(exit::PRIVILEGES)
}

/// Drop for good and exec the server. Needs the end of the runtime (`SingleThreaded`) and
/// the process's own identity back (no guard can be alive: `ids` is taken by value).
pub(super) fn start(
    _single: SingleThreaded,
    ids: Identity,
    i: Inputs<'_>,
) -> Result<Infallible, Exit> {
    let cfg = i.cfg;
    let locale_paths = i.start.locale_paths();
    let server_env = env::build(
        &env::Inputs {
            config: cfg,
            secrets: i.secrets.values(),
            inherited: i.inherited,
            user: &i.account.account.user,
            home: &cfg.service.data_dir,
            locale_paths: &locale_paths,
        },
        Purpose::Server,
    );
    drop(i.secrets);
    let server_argv = layout::server_argv(cfg);
    let target = preparation::target(i.account)?;

    // The server runs the app's code: it must not hold the terminal of an admin who
    // started the launcher by hand (launcher_sys::session).
    match launcher_sys::session::leave_controlling_terminal().or_exit(exit::RUNTIME)? {
        launcher_sys::session::Left::NoTerminal => {}
        left => info!(
            phase = "exec",
            "the server will not hold the terminal the launcher was started from ({left})"
        ),
    }

    let phase = Phase::begin("drop", "Dropping privileges");
    become_service_user(ids, &target, &cfg.app.source_dir)?;
    phase.end(&format!(
        "running as uid {} gid {} with groups {:?}, no capabilities, no_new_privs",
        target.uid,
        target.gid,
        target.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>()
    ));

    let total = i.started.elapsed().as_millis() as u64;
    let sockets = i.sockets;
    let server_env = server_env.pairs();
    if sockets > 0 {
        info!(
            phase = "exec",
            sockets,
            "handing {sockets} listening socket(s) from systemd to the server (socket activation)"
        );
    }
    notify::status("Starting the server");
    info!(phase = "exec", duration_ms = total, program = %server_argv[0], "launcher done in {total} ms, executing {}", server_argv.join(" "));
    match launcher_sys::exec::exec(&server_argv, &server_env) {
        ExecError::Stopped { signal } => Err(Exit::stopped(signal, ExecError::Stopped { signal })),
        err => Err(Exit::new(exit::RUNTIME, err).rule(Rule::ServerExecFailed)),
    }
}
