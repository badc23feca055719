//! `bitpoll-launcher manage -- ARGS`: run `manage.py ARGS` exactly as the service would:
//! as the service user (privileges dropped for good, as for the server), with the app's
//! environment and secrets, in the app's source directory. It changes nothing the
//! service owns by itself: no account is created, no directory repaired, no secret
//! generated (a missing generated secret means the service never started: start it first).

use std::convert::Infallible;

use anyhow::{Context as _, anyhow};

use launcher_plan::env::{self, Purpose};
use launcher_plan::layout::{SECRETS_DIR, TREE};
use launcher_sys::privs::Target;

use crate::cli::ManageArgs;
use crate::exit::{self, Exit, OrExit};
use crate::secrets;

pub fn run(args: &ManageArgs) -> Result<Infallible, Exit> {
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
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
    let dirs = launcher_sys::tree::inspect(&cfg.service.data_dir, TREE);
    let secrets_dir = dirs
        .iter()
        .find(|d| d.spec.name == SECRETS_DIR)
        .and_then(|d| d.fd().map(|fd| (fd, d.path.clone())));
    let creds = secrets::credentials_dir_for(&args.unit);
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for (name, source, result) in secrets::observe(
        &cfg,
        secrets_dir.as_ref().map(|(fd, p)| (*fd, p.as_path())),
        account.uid,
        creds.as_deref(),
        None,
    ) {
        match result {
            Ok(secrets::Observed::Loaded(l)) => values.push((name, l.value)),
            Ok(secrets::Observed::WillGenerate(_)) => problems.push(format!("secret {name} ({source}) has not been generated yet: start the service once first")),
            Err(e) if e.contains("CREDENTIALS_DIRECTORY is not set") => problems.push(format!(
                "secret {name} ({source}) is a systemd credential and the unit {} is not running, so it cannot be read here: start the service, or pass --unit NAME",
                args.unit
            )),
            Err(e) => problems.push(format!("secret {name} ({source}): {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(Exit::new(exit::SYSTEM, anyhow!("{}", problems.join("\n"))));
    }
    let inherited = crate::run::inherited_env();
    let app_env = env::build(
        &env::Inputs {
            config: &cfg,
            secrets: &values,
            inherited: &inherited,
            user: &account.user,
            home: &cfg.service.data_dir,
        },
        Purpose::Manage,
    );
    drop(values);
    drop(dirs);
    let target = Target::for_account(&account, privileged).or_exit(exit::PRIVILEGES)?;
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
    let mut argv = vec![
        cfg.app.python.display().to_string(),
        "manage.py".to_string(),
    ];
    argv.extend(args.args.iter().cloned());
    Err(Exit::new(
        exit::RUNTIME,
        launcher_sys::exec::exec(&argv, &app_env),
    ))
}
