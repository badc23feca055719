//! `bitpoll-launcher run`: every phase from config to exec, in order.
//!
//! 1. config       load and validate the whole file
//! 2. preflight    interpreter, app source and server program exist (before any change)
//! 3. account      create or verify the service user and group
//! 4. directories  the data directory tree with exact owner and mode
//! 5. secrets      read files and credentials as root, generate missing keys once
//! 6. prepare      migrate / collectstatic / compilemessages as the service user
//! 7. drop         groups, gid, uid, capabilities, no_new_privs; verified
//! 8. exec         the server, in place, with an environment built from scratch

use std::convert::Infallible;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use tracing::info;

use launcher_config::Config;
use launcher_plan::env::{self, Purpose};
use launcher_plan::layout::TREE;
use launcher_plan::stamp::Decision;
use launcher_sys::account::Account;
use launcher_sys::privs::Target;
use launcher_sys::tree::{self, Owner};

use crate::cli::RunArgs;
use crate::exit::{self, Exit, OrExit};
use crate::{notify, prepare, secrets};

/// Times a phase and logs its end with PHASE and DURATION_MS.
struct Phase {
    name: &'static str,
    started: Instant,
}

impl Phase {
    fn begin(name: &'static str, status: &str) -> Phase {
        notify::status(status);
        Phase {
            name,
            started: Instant::now(),
        }
    }

    fn end(self, message: &str) {
        let ms = self.started.elapsed().as_millis() as u64;
        info!(phase = self.name, duration_ms = ms, "{message}");
    }
}

pub fn run(args: &RunArgs) -> Result<Infallible, Exit> {
    let started = Instant::now();
    // Files the preparation and the app create are not readable by others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));

    let phase = Phase::begin("config", "Reading configuration");
    let cfg = launcher_config::load(&args.config).or_exit(exit::CONFIG)?;
    phase.end(&format!("configuration {} is valid", args.config.display()));

    let phase = Phase::begin("preflight", "Checking the app and server programs");
    preflight(&cfg).or_exit(exit::SYSTEM)?;
    phase.end("interpreter, app source and server program are present");

    let privileged = launcher_sys::is_root();
    let phase = Phase::begin("account", "Checking the service account");
    let account = account(&cfg, privileged).or_exit(exit::SYSTEM)?;
    phase.end(&format!(
        "service account {} (uid {}) in group {} (gid {})",
        account.user, account.uid, account.group, account.gid
    ));

    let phase = Phase::begin("directories", "Preparing the data directory");
    let owner = Owner {
        uid: account.uid,
        gid: account.gid,
        privileged,
    };
    let (tree, changes) =
        tree::ensure(&cfg.service.data_dir, TREE, owner, &account.user).or_exit(exit::SYSTEM)?;
    for change in &changes {
        info!(phase = "directories", path = %change.path.display(), "{}: {}", change.path.display(), change.what);
    }
    for file in sqlite_files(&cfg, &tree) {
        if let Some(change) =
            tree::adopt_root_owned_file(&tree, &file, owner).or_exit(exit::SYSTEM)?
        {
            info!(phase = "directories", path = %change.path.display(), "{}: {} (it was left behind by a tool run as root)", change.path.display(), change.what);
        }
    }
    phase.end(&format!(
        "data directory {} ready ({} change{})",
        tree.path.display(),
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    ));

    let phase = Phase::begin("secrets", "Loading secrets");
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let evidence =
        prepare::database_evidence(&cfg, Some(tree.dir(launcher_plan::layout::STATE_DIR)));
    let loaded = secrets::load(
        &cfg,
        &tree,
        owner,
        credentials_dir.as_deref(),
        evidence.as_deref(),
    )
    .or_exit(exit::SYSTEM)?;
    for s in &loaded {
        info!(phase = "secrets", secret = %s.name, "secret {}: {}", s.name, s.origin);
    }
    phase.end(&format!(
        "{} secret{} loaded",
        loaded.len(),
        if loaded.len() == 1 { "" } else { "s" }
    ));
    let secret_values: Vec<(String, launcher_plan::secret::SecretValue)> =
        loaded.into_iter().map(|s| (s.name, s.value)).collect();

    let inherited = inherited_env();
    let env_inputs = env::Inputs {
        config: &cfg,
        secrets: &secret_values,
        inherited: &inherited,
        user: &account.user,
        home: &cfg.service.data_dir,
    };
    let target = Target::for_account(&account, privileged)
        .context("cannot read the kernel's capability range")
        .or_exit(exit::PRIVILEGES)?;

    let phase = Phase::begin("prepare", "Preparing the app");
    let ctx = prepare::Context {
        cfg: &cfg,
        tree: &tree,
        owner,
        env: env::build(&env_inputs, Purpose::Prepare),
        secret_names: secret_values.iter().map(|(k, _)| k.clone()).collect(),
        target: target.clone(),
    };
    let planned = prepare::plan(&ctx, args.force_prepare).or_exit(exit::SYSTEM)?;
    for p in &planned {
        match &p.decision {
            Decision::Skip { finished } => {
                info!(phase = "prepare", step = %p.step, skipped = true, "step {} skipped: nothing changed since it succeeded at {}", p.step, utc(*finished))
            }
            Decision::Run(reason) => {
                info!(phase = "prepare", step = %p.step, skipped = false, "step {} runs: {reason}", p.step)
            }
        }
    }
    let to_run = planned
        .iter()
        .filter(|p| matches!(p.decision, Decision::Run(_)))
        .count();
    let outcome = prepare::execute(&ctx, &planned).map_err(|e| match e.stop_signal() {
        Some(signal) => Exit::stopped(signal, e),
        None => Exit::new(exit::RUNTIME, e),
    })?;
    // The database is the app's alone, not the web server's that shares the group.
    for file in sqlite_files(&cfg, &tree) {
        if let Some(change) = tree::make_private(&tree, &file, owner).or_exit(exit::SYSTEM)? {
            info!(phase = "prepare", path = %change.path.display(), "{}: {}", change.path.display(), change.what);
        }
    }
    phase.end(&if to_run == 0 {
        "preparation: nothing to do".to_string()
    } else {
        let known = outcome
            .migrations
            .map(|m| format!("; {} migrations on disk", m.len()))
            .unwrap_or_default();
        format!(
            "preparation finished ({to_run} of {} steps ran{known})",
            planned.len()
        )
    });
    drop(ctx);
    launcher_sys::default_stop_signals()
        .context("cannot restore the default action of the stop signals")
        .or_exit(exit::RUNTIME)?;

    let server_env = env::build(&env_inputs, Purpose::Server);
    drop(secret_values);

    let phase = Phase::begin("drop", "Dropping privileges");
    drop_privileges(&target, &cfg.app.source_dir).or_exit(exit::PRIVILEGES)?;
    phase.end(&format!(
        "running as uid {} gid {} with groups {:?}, no capabilities, no_new_privs",
        target.uid,
        target.gid,
        target.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>()
    ));

    let total = started.elapsed().as_millis() as u64;
    notify::status("Starting the server");
    info!(phase = "exec", duration_ms = total, program = %cfg.server.command[0], "launcher done in {total} ms, executing {}", cfg.server.command.join(" "));
    let err = launcher_sys::exec::exec(&cfg.server.command, &server_env);
    Err(Exit::new(exit::RUNTIME, err))
}

/// The launcher's own environment (UTF-8 entries only), the input of env::build.
pub(crate) fn inherited_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The SQLite database and its side files, when the database lives directly in the data
/// directory (names relative to it).
fn sqlite_files(cfg: &Config, tree: &tree::DataTree) -> Vec<String> {
    match &cfg.database {
        launcher_config::Database::Sqlite { path }
            if path.parent() == Some(tree.path.as_path()) =>
        {
            prepare::sqlite_files(path)
                .iter()
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Seconds since the epoch as "YYYY-MM-DD HH:MM:SS UTC".
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn preflight(cfg: &Config) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if !executable(&cfg.app.python) {
        problems.push(format!(
            "app.python: {} is not an executable file",
            cfg.app.python.display()
        ));
    }
    if !cfg.app.source_dir.join("manage.py").is_file() {
        problems.push(format!("app.source_dir: {} has no manage.py; point it at the directory holding the app's manage.py", cfg.app.source_dir.display()));
    }
    let server = Path::new(&cfg.server.command[0]);
    if !executable(server) {
        problems.push(format!(
            "server.command: {} is not an executable file",
            server.display()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", problems.join("; ")))
    }
}

fn account(cfg: &Config, privileged: bool) -> anyhow::Result<Account> {
    let svc = &cfg.service;
    if !privileged {
        let account = launcher_sys::account::verify_current(&svc.user, &svc.group)?;
        info!(
            phase = "account",
            "not running as root: using the current user {} as is; creating accounts and changing owners is skipped",
            account.user
        );
        return Ok(account);
    }
    let (account, created) =
        launcher_sys::account::ensure(&svc.user, &svc.group, &svc.data_dir, svc.create_user)?;
    if created.group {
        info!(phase = "account", group = %account.group, "created system group {} (gid {})", account.group, account.gid);
    }
    if created.user {
        info!(phase = "account", user = %account.user, "created system user {} (uid {}, home {}, no login shell)", account.user, account.uid, account.home.display());
    }
    Ok(account)
}

/// Drop for good and verify. The process must be single-threaded here: the preparation
/// runtime is gone, and setresuid must apply to the only thread there is.
fn drop_privileges(target: &Target, cwd: &Path) -> anyhow::Result<()> {
    let threads = launcher_sys::thread_count().context("cannot count threads")?;
    if threads != 1 {
        anyhow::bail!(
            "{threads} threads are running at the privilege drop; refusing to drop privileges in a multi-threaded process"
        );
    }
    launcher_sys::privs::drop_to(target)?;
    launcher_sys::privs::verify(target)?;
    std::env::set_current_dir(cwd).with_context(|| {
        format!("the service user cannot enter the app source {}; make it readable (a+rX) for the service user", cwd.display())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_epoch_seconds() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_795_635_566), "2026-11-25 19:39:26 UTC");
    }
}
