//! `bitpoll-launcher manage -- ARGS`: run `manage.py ARGS` exactly as the service would:
//! as the service user (privileges dropped for good, as for the server), with the app's
//! environment and secrets, in the app's source directory. It decides as `run` does
//! (launcher_plan::judge::start for `manage`): whatever `run` would refuse stops it too,
//! and it changes nothing the service owns by itself: no account is created, no directory
//! repaired, no secret generated (a missing generated secret means the service never
//! started: start it first).
//!
//! Run as root with a terminal on stdin, stdout or stderr, the command gets a
//! pseudo-terminal and a session of its own (launcher_sys::pty), relayed to the admin's;
//! the streams that are not terminals stay its own. Without a terminal on them the
//! launcher leaves its controlling terminal too (launcher_sys::session), drops privileges
//! and becomes the command. Either way the app's code never holds the admin's terminal.

use anyhow::{Context as _, anyhow};

use launcher_plan::env::{self, Purpose};
use launcher_plan::facts::View;
use launcher_plan::judge::{self, Command};
use launcher_plan::rule::Rule;
use launcher_sys::privs::{Identity, Target};

use crate::cli::ManageArgs;
use crate::exit::{self, Exit, OrExit};
use crate::observe::{self, Options, Postgres};

pub fn run(args: &ManageArgs) -> Result<u8, Exit> {
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
    // What the command creates is private, as under `run`.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        launcher_plan::layout::UMASK,
    ));
    let mut ids = Identity::of_process()
        .context("cannot read this process's identity")
        .or_exit(exit::PRIVILEGES)?;
    let privileged = ids.privileged();
    let facts = observe::observe(
        &mut ids,
        &cfg,
        &Options {
            view: View::Outside,
            unit: &args.unit,
            postgres: Postgres::Once,
        },
    );
    let mut start = judge::start(&cfg, &facts, Command::Manage, crate::now());
    if let Some(refusal) = Exit::refused(&start.findings) {
        return Err(refusal);
    }
    let account = if privileged {
        launcher_sys::account::lookup(&cfg.service.user, &cfg.service.group)
            .or_exit(exit::SYSTEM)?
            .ok_or_else(|| {
                anyhow!(
                    "the service account {}:{} does not exist; start the service once (or declare the account) first",
                    cfg.service.user,
                    cfg.service.group
                )
            })
            .map_err(|e| Exit::new(exit::SYSTEM, e).rule(Rule::AccountNeverStarted))?
    } else {
        launcher_sys::account::verify_current(&cfg.service.user, &cfg.service.group)
            .map_err(crate::run::account_exit)?
    };
    let values = start.take_values();
    let locale_paths = start.locale_paths();
    let mut app_env = env::build(
        &env::Inputs {
            config: &cfg,
            secrets: &values,
            inherited: &facts.inherited,
            user: &account.user,
            home: &cfg.service.data_dir,
            locale_paths: &locale_paths,
        },
        Purpose::Manage,
    );
    let extras = env::manage_extras(&args.env, &facts.inherited, &cfg)
        .map_err(|e| Exit::new(exit::CONFIG, anyhow!("{e}")))?;
    for (k, v) in extras {
        app_env.set(k, v);
    }
    drop(values);
    drop(facts);
    let target = Target::for_account(&account, privileged).or_exit(exit::PRIVILEGES)?;
    let mut argv = vec![
        cfg.app.python.display().to_string(),
        "manage.py".to_string(),
    ];
    argv.extend(args.args.iter().cloned());
    if privileged && launcher_sys::pty::caller_has_terminal() {
        // From a root terminal: the app gets a terminal and a session of its own, so it
        // cannot push input into the admin's (TIOCSTI) or signal the admin's shell.
        let code = launcher_sys::pty::run(&argv, &app_env.pairs(), &cfg.app.source_dir, &target)
            .map_err(|e| {
                let code = match e {
                    launcher_sys::pty::PtyError::Child {
                        step: "the privilege drop",
                        ..
                    } => exit::PRIVILEGES,
                    _ => exit::RUNTIME,
                };
                Exit::new(code, e)
            })?;
        return Ok(u8::try_from(code).unwrap_or(u8::MAX));
    }
    // No terminal on the standard streams (redirected, a cron job): the command must not
    // get the controlling terminal the admin's shell may still have either. (The service
    // user running manage on a terminal keeps it: the terminal is its own.)
    if !launcher_sys::pty::caller_has_terminal() {
        launcher_sys::session::leave_controlling_terminal().or_exit(exit::RUNTIME)?;
    }
    crate::run::become_service_user(ids, &target, &cfg.app.source_dir)?;
    Err(Exit::new(
        exit::RUNTIME,
        launcher_sys::exec::exec(&argv, &app_env.pairs()),
    ))
}
