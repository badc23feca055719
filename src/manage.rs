//! `bitpoll-launcher manage -- ARGS`: run `manage.py ARGS` exactly as the service would:
//! as the service user (privileges dropped for good, as for the server), with the app's
//! environment and secrets, in the app's source directory. It changes nothing the
//! service owns by itself: no account is created, no directory repaired, no secret
//! generated (a missing generated secret means the service never started: start it first).
//!
//! Run as root with a terminal on stdin, stdout or stderr, the command gets a
//! pseudo-terminal and a session of its own (launcher_sys::pty), relayed to the admin's;
//! the streams that are not terminals stay its own. Without a terminal on them the
//! launcher leaves its controlling terminal too (launcher_sys::session), drops privileges
//! and becomes the command. Either way the app's code never holds the admin's terminal.

use anyhow::{Context as _, anyhow};

use launcher_plan::env::{self, Purpose};
use launcher_plan::facts::{SecretFailure, SecretState, View};
use launcher_plan::judge::{self, secrets::Action};
use launcher_sys::privs::Target;

use crate::cli::ManageArgs;
use crate::exit::{self, Exit, OrExit};
use crate::observe::{self, Options, Postgres};

pub fn run(args: &ManageArgs) -> Result<u8, Exit> {
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
    // What the command creates is private, as under `run`.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        launcher_plan::layout::UMASK,
    ));
    let privileged = launcher_sys::is_root();
    let account = if privileged {
        launcher_sys::account::lookup(&cfg.service.user, &cfg.service.group)
            .or_exit(exit::SYSTEM)?
            .ok_or_else(|| anyhow!("the service account {}:{} does not exist; start the service once (or declare the account) first", cfg.service.user, cfg.service.group))
            .or_exit(exit::SYSTEM)?
    } else {
        launcher_sys::account::verify_current(&cfg.service.user, &cfg.service.group)
            .or_exit(exit::SYSTEM)?
    };
    let facts = observe::observe(
        &cfg,
        &Options {
            view: View::Outside,
            unit: &args.unit,
            postgres: Postgres::Later,
        },
    );
    let locale_paths: Vec<std::path::PathBuf> = judge::prepare::catalog_targets(&cfg, &facts)
        .into_iter()
        .map(|(_, to)| to)
        .collect();
    let mut values = Vec::new();
    let mut problems = Vec::new();
    let verdicts = judge::secrets::judge(&cfg, &facts);
    for (fact, verdict) in facts.secrets.into_iter().zip(verdicts) {
        match (fact.state, verdict.action) {
            (SecretState::Read { value, .. }, Action::Use) => values.push((fact.name, value)),
            (_, Action::Generate(_)) => problems.push(format!(
                "secret {} ({}) has not been generated yet: start the service once first",
                fact.name, fact.source
            )),
            (
                SecretState::Failed {
                    failure: SecretFailure::NoCredentialsDirectory,
                    ..
                },
                _,
            ) => problems.push(format!(
                "secret {} ({}) is a systemd credential and the unit {} is not running, so it cannot be read here: start the service, or pass --unit NAME",
                fact.name, fact.source, args.unit
            )),
            _ => problems.push(verdict.finding.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(Exit::new(exit::SYSTEM, anyhow!("{}", problems.join("\n"))));
    }
    let inherited = observe::inherited_env();
    let mut app_env = env::build(
        &env::Inputs {
            config: &cfg,
            secrets: &values,
            inherited: &inherited,
            user: &account.user,
            home: &cfg.service.data_dir,
            locale_paths: &locale_paths,
        },
        Purpose::Manage,
    );
    let extras = env::manage_extras(&args.env, &inherited, &cfg)
        .map_err(|e| Exit::new(exit::CONFIG, anyhow!("{e}")))?;
    app_env.retain(|(k, _)| !extras.iter().any(|(e, _)| e == k));
    app_env.extend(extras);
    app_env.sort();
    drop(values);
    let target = Target::for_account(&account, privileged).or_exit(exit::PRIVILEGES)?;
    let mut argv = vec![
        cfg.app.python.display().to_string(),
        "manage.py".to_string(),
    ];
    argv.extend(args.args.iter().cloned());
    if privileged && launcher_sys::pty::caller_has_terminal() {
        // From a root terminal: the app gets a terminal and a session of its own, so it
        // cannot push input into the admin's (TIOCSTI) or signal the admin's shell.
        let code =
            launcher_sys::pty::run(&argv, &app_env, &cfg.app.source_dir, &target).map_err(|e| {
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
    launcher_sys::privs::drop_to(&target).or_exit(exit::PRIVILEGES)?;
    launcher_sys::privs::verify(&target).or_exit(exit::PRIVILEGES)?;
    std::env::set_current_dir(&cfg.app.source_dir)
        .with_context(|| {
            format!(
                "the service user cannot enter {}",
                cfg.app.source_dir.display()
            )
        })
        .or_exit(exit::SYSTEM)?;
    Err(Exit::new(
        exit::RUNTIME,
        launcher_sys::exec::exec(&argv, &app_env),
    ))
}
