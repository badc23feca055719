//! `bitpoll-launcher run`: every phase from config to exec, in order.
//!
//! 1. config       load and validate the whole file
//! 2. preflight    observe the host read-only (crate::observe) and judge it with
//!    launcher_plan::judge: any error stops here, before any change, in the words `check`
//!    prints; with PostgreSQL, wait for the server (crate::postgres), read what the
//!    database holds and judge again with it
//! 3. account      create or verify the service user and group; as root, act as that user
//!    from here on (root is taken back only where needed: launcher_sys::privs)
//! 4. directories  the data directory tree with exact owner and mode
//! 5. secrets      use what was read as root, generate missing keys once
//! 6. prepare      take the data directory lock and, with PostgreSQL, the migration lock
//!    (crate::lock), look again at stamps and database, then migrate / collectstatic /
//!    compilemessages as the service user, as judged
//! 7. drop         groups, gid, uid, capabilities, no_new_privs; verified
//! 8. exec         the server, in place, with an environment built from scratch
//!
//! The stop signals are caught from the first step to the last wait (crate::signals), so
//! a stop ends any phase cleanly, also as a container's PID 1, which also reaps exited
//! children until the server takes the PID over.

use std::convert::Infallible;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use tracing::{info, warn};

use launcher_config::Config;
use launcher_plan::Step;
use launcher_plan::env::{self, Purpose};
use launcher_plan::facts::{Facts, SecretState, View};
use launcher_plan::finding::{Finding, Severity, refusal};
use launcher_plan::judge::{self, prepare::Decision, secrets::Action};
use launcher_plan::layout::{
    self, BACKUPS_DIR, KEYS_FILE, STAMP_FILE_MODE, STATE_DIR, TREE, is_backup_name,
    sqlite_files_in_data_dir,
};
use launcher_plan::postgres::{Server, instance_name, migration_lock_key};
use launcher_plan::secret::SecretValue;
use launcher_sys::account::Account;
use launcher_sys::privs::Target;
use launcher_sys::tree::{self, Owner};

use crate::cli::RunArgs;
use crate::exit::{self, Exit, OrExit};
use crate::lock::{self, Locks};
use crate::observe::{self, Options};
use crate::postgres::{self, Login, WaitError};
use crate::signals::StopSignals;
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
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(layout::UMASK));
    // One single-threaded runtime for every wait of the start (PostgreSQL, the locks, the
    // preparation process); gone before the privilege drop. The stop signals are caught
    // from here on (see crate::signals); a helper thread of the runtime never takes one,
    // so none is lost when the runtime ends.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(|| {
            let _ = launcher_sys::signals::block_stop_signals();
        })
        .build()
        .context("cannot start the launcher's runtime")
        .or_exit(exit::RUNTIME)?;
    let mut stop = {
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

    let phase = Phase::begin("config", "Reading configuration");
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
    phase.end(&format!("configuration {} is valid", args.config.display()));

    let phase = Phase::begin("preflight", "Checking the deployment");
    let mut facts = observe::observe(
        &cfg,
        &Options {
            view: View::Service,
            unit: "bitpoll",
            postgres: observe::Postgres::Later,
        },
    );
    let identity: Vec<Finding> = judge::account::launcher_identity(&cfg, &facts)
        .into_iter()
        .collect();
    // Everything but what the database holds first: a refusal needs no server.
    let mut judged = judge::deployment(&cfg, &facts);
    let mut findings = identity.clone();
    findings.extend(judged.findings.iter().cloned());
    if let Some(text) = refusal(&findings) {
        return Err(Exit::new(exit::SYSTEM, anyhow!("{text}")));
    }
    stopped(&rt, &mut stop, "checking the deployment")?;
    let session = match Server::of(&cfg) {
        None => None,
        Some(server) => {
            let phase = Phase::begin(
                "database",
                &format!("Connecting to PostgreSQL at {}", server.address()),
            );
            let login = Login {
                password: observe::db_password(&facts),
                peer: launcher_sys::is_root()
                    .then(|| observe::peer_ids(&facts.account))
                    .flatten(),
                name: instance_name(&launcher_sys::hostname(), std::process::id()),
            };
            let session = rt
                .block_on(postgres::wait(&server, &login, &mut stop))
                .map_err(|e| match e {
                    WaitError::Stopped { signal, .. } => Exit::stopped(signal, e),
                    WaitError::Refused { .. } => Exit::new(exit::SYSTEM, e),
                    WaitError::TimedOut { .. } => Exit::new(exit::RUNTIME, e),
                })?;
            let pg = rt.block_on(session.observe());
            phase.end(&format!("connected to PostgreSQL ({server})"));
            facts.database.postgresql = Some(pg);
            Some(session)
        }
    };
    // Again with what PostgreSQL holds (a Fernet key is never generated over data).
    if session.is_some() {
        judged = judge::deployment(&cfg, &facts);
        findings = identity;
        findings.extend(judged.findings.iter().cloned());
        if let Some(text) = refusal(&findings) {
            return Err(Exit::new(exit::SYSTEM, anyhow!("{text}")));
        }
    }
    // What run itself will create or repair is logged when it does; warnings now.
    for f in findings.iter().filter(|f| f.severity == Severity::Warning) {
        warn!(phase = "preflight", subject = %f.subject, "{f}");
    }
    phase.end("the deployment is usable");

    let privileged = launcher_sys::is_root();
    let phase = Phase::begin("account", "Checking the service account");
    let account = account(&cfg, privileged).or_exit(exit::SYSTEM)?;
    phase.end(&format!(
        "service account {} (uid {}) in group {} (gid {})",
        account.user, account.uid, account.group, account.gid
    ));
    if privileged {
        // From here on root acts as the service user in the user's data directory and
        // towards the preparation child; it takes root back only where it must (see
        // launcher_sys::privs).
        launcher_sys::privs::act_as(account.uid, account.gid)
            .context("cannot act as the service user")
            .or_exit(exit::PRIVILEGES)?;
    }

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
    for file in sqlite_files_in_data_dir(&cfg) {
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
    let secret_values = secrets(&mut facts, &judged.secrets, &tree, owner).or_exit(exit::SYSTEM)?;
    phase.end(&format!(
        "{} secret{} loaded",
        secret_values.len(),
        if secret_values.len() == 1 { "" } else { "s" }
    ));
    stopped(&rt, &mut stop, "loading secrets")?;

    let inherited = facts.inherited.clone();
    let catalogs = judge::prepare::catalog_targets(&cfg, &facts);
    let locale_paths: Vec<std::path::PathBuf> = catalogs.iter().map(|(_, to)| to.clone()).collect();
    let env_inputs = env::Inputs {
        config: &cfg,
        secrets: &secret_values,
        inherited: &inherited,
        user: &account.user,
        home: &cfg.service.data_dir,
        locale_paths: &locale_paths,
    };
    let target = Target::for_account(&account, privileged)
        .context("cannot read the kernel's capability range")
        .or_exit(exit::PRIVILEGES)?;

    let phase = Phase::begin("prepare", "Preparing the app");
    let prepare_env = env::build(&env_inputs, Purpose::Prepare);
    let name = instance_name(&launcher_sys::hostname(), std::process::id());
    let stall = cfg.prepare.stall_timeout;
    // One preparation at a time per data directory, one migration at a time per
    // database; then decide on what is there now (see crate::lock).
    let mut locks = Locks::default();
    locks.file = Some(
        rt.block_on(lock::data_dir(&tree, owner, &name, stall, &mut stop))
            .map_err(lock_exit)?,
    );
    if let (Some(session), true) = (&session, cfg.prepare.migrate) {
        let key = migration_lock_key(&session.server.database, &cfg.app.settings_module);
        locks.migration = Some(
            rt.block_on(lock::migration(
                session,
                key,
                stall,
                &mut stop,
                locks.file.as_ref(),
            ))
            .map_err(lock_exit)?,
        );
    }
    observe::refresh_preparation(&cfg, &tree, &mut facts);
    if let Some(session) = &session {
        facts.database.postgresql = Some(rt.block_on(session.observe()));
    }
    let planned = judge::prepare::judge(
        &cfg,
        &facts,
        &judge::prepare::Inputs {
            env: &prepare_env,
            force: args.force_prepare,
        },
    );
    for p in &planned {
        let f = p.finding();
        match &p.decision {
            Decision::Refuse(_) => return Err(Exit::new(exit::SYSTEM, anyhow!("{f}"))),
            Decision::Skip { .. } | Decision::NoWork(_) => {
                info!(phase = "prepare", step = %p.step, skipped = true, "step {} {}", p.step, f.message)
            }
            Decision::Run(reason) => {
                info!(phase = "prepare", step = %p.step, skipped = false, "step {} runs: {reason}", p.step)
            }
        }
    }
    if !planned.iter().any(|p| p.step == Step::Migrate && p.runs()) {
        rt.block_on(locks.release_migration());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let backup = judge::prepare::backup(&cfg, &facts, &planned, now);
    if let Some(f) = backup.finding() {
        match f.severity {
            Severity::Warning => warn!(phase = "prepare", "{f}"),
            _ => info!(phase = "prepare", "{}", f.message),
        }
    }
    let backup = match backup {
        judge::prepare::Backup::Take(path) => Some(path),
        _ => None,
    };
    let to_run = planned.iter().filter(|p| p.runs()).count();
    let ctx = prepare::Context {
        cfg: &cfg,
        tree: &tree,
        owner,
        env: prepare_env,
        catalogs,
        backup: backup.clone(),
        new_database: judge::prepare::new_database(&cfg, &facts, &planned),
        static_dir: match launcher_plan::layout::static_layout(&cfg) {
            launcher_plan::layout::StaticLayout::Versioned { dir } => Some(dir),
            launcher_plan::layout::StaticLayout::Fixed(_) => None,
        },
        source: facts.source.as_ref().ok(),
        target: target.clone(),
    };
    let outcome =
        prepare::execute(&rt, &mut stop, &ctx, &planned, &mut locks).map_err(|e| {
            match e.stop_signal() {
                Some(signal) => Exit::stopped(signal, e),
                None => match backup.as_ref().filter(|b| b.exists()) {
                    Some(b) => Exit::new(
                        exit::RUNTIME,
                        anyhow::Error::new(e).context(restore_hint(&cfg, b)),
                    ),
                    None => Exit::new(exit::RUNTIME, e),
                },
            }
        })?;
    rt.block_on(locks.release_migration());
    drop(locks);
    if backup.is_some() {
        prune_backups(&cfg, &tree);
    }
    // The database is the app's alone, not the web server's that shares the group.
    for file in sqlite_files_in_data_dir(&cfg) {
        if let Some(change) = tree::make_private(&tree, &file, owner).or_exit(exit::SYSTEM)? {
            info!(phase = "prepare", path = %change.path.display(), "{}: {}", change.path.display(), change.what);
        }
    }
    record_keys(&facts, &secret_values, &tree, owner).or_exit(exit::SYSTEM)?;
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
    // The session (the app opens its own) and the runtime end here. From now on a stop
    // signal stays pending (blocked) instead of reaching the runtime's handler; one
    // received before counts now, one received after counts right before the exec.
    drop(session);
    launcher_sys::signals::block_stop_signals()
        .context("cannot block the stop signals")
        .or_exit(exit::RUNTIME)?;
    stopped(&rt, &mut stop, "the end of preparation")?;
    drop(stop);
    drop(rt);
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

    let server_env = env::build(&env_inputs, Purpose::Server);
    drop(secret_values);
    crate::ready::write_hook(&cfg, &tree, owner).or_exit(exit::SYSTEM)?;
    let server_argv = layout::server_argv(&cfg);

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
    drop_privileges(&target, &cfg.app.source_dir).or_exit(exit::PRIVILEGES)?;
    phase.end(&format!(
        "running as uid {} gid {} with groups {:?}, no capabilities, no_new_privs",
        target.uid,
        target.gid,
        target.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>()
    ));

    let total = started.elapsed().as_millis() as u64;
    let sockets = listen_fds(&server_env);
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
        launcher_sys::exec::ExecError::Stopped { signal } => Err(Exit::stopped(
            signal,
            launcher_sys::exec::ExecError::Stopped { signal },
        )),
        err => Err(Exit::new(exit::RUNTIME, err)),
    }
}

/// How many sockets systemd passed for this process (socket activation), which the
/// server inherits (launcher_sys::exec).
fn listen_fds(env: &[(String, String)]) -> usize {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match (get("LISTEN_PID"), get("LISTEN_FDS")) {
        (Some(pid), Some(n)) if pid.parse::<u32>().ok() == Some(std::process::id()) => {
            n.parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// A stop signal received since the last look ends the start here.
fn stopped(rt: &tokio::runtime::Runtime, stop: &mut StopSignals, during: &str) -> Result<(), Exit> {
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

fn lock_exit(e: lock::LockError) -> Exit {
    match e.stop_signal() {
        Some(signal) => Exit::stopped(signal, e),
        None => Exit::new(exit::RUNTIME, e),
    }
}

/// The secrets' values: those read as root during observation, and those generated now.
fn secrets(
    facts: &mut Facts,
    verdicts: &[judge::secrets::Verdict],
    tree: &tree::DataTree,
    owner: Owner,
) -> anyhow::Result<Vec<(String, SecretValue)>> {
    let mut values = Vec::with_capacity(verdicts.len());
    let mut problems = Vec::new();
    for (fact, verdict) in facts.secrets.iter_mut().zip(verdicts) {
        let state = std::mem::replace(
            &mut fact.state,
            SecretState::Failed {
                failure: launcher_plan::facts::SecretFailure::Io,
                message: "taken".into(),
            },
        );
        match (verdict.action, state) {
            (Action::Use, SecretState::Read { value, origin }) => {
                info!(phase = "secrets", secret = %fact.name, "secret {}: {origin}", fact.name);
                values.push((fact.name.clone(), value));
            }
            (Action::Generate(kind), _) => match secrets::generate(&fact.name, kind, tree, owner) {
                Ok((value, origin)) => {
                    info!(phase = "secrets", secret = %fact.name, "secret {}: {origin}", fact.name);
                    values.push((fact.name.clone(), value));
                }
                Err(e) => problems.push(format!("secret {} ({}): {e}", fact.name, fact.source)),
            },
            _ => problems.push(verdict.finding.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(anyhow!("{}", problems.join("\n")))
    }
}

/// How to put the database back as it was before the migrate that failed.
fn restore_hint(cfg: &Config, backup: &Path) -> String {
    let db = match &cfg.database {
        launcher_config::Database::Sqlite { path } => path.display().to_string(),
        launcher_config::Database::Postgresql { .. } => "the database".into(),
    };
    format!(
        "the database as it was before this migrate is saved in {}; to go back: systemctl stop the service, then `install -m 0600 -o {} -g {} {} {db}`",
        backup.display(),
        cfg.service.user,
        cfg.service.group,
        backup.display()
    )
}

/// Keep the newest prepare.backups backups; a failure to prune is logged, not fatal.
fn prune_backups(cfg: &Config, tree: &tree::DataTree) {
    match launcher_sys::files::prune(
        tree.dir(BACKUPS_DIR),
        &tree.path_of(BACKUPS_DIR),
        is_backup_name,
        cfg.prepare.backups as usize,
    ) {
        Ok(removed) => {
            for name in removed {
                info!(
                    phase = "prepare",
                    "removed the old backup {name} (prepare.backups = {})", cfg.prepare.backups
                );
            }
        }
        Err(e) => warn!(phase = "prepare", "cannot remove old backups: {e}"),
    }
}

/// Record the fingerprints of the keys this start ran with (launcher_plan::keys), once
/// the app was prepared with them; unchanged keys leave the record as it is.
fn record_keys(
    facts: &Facts,
    values: &[(String, SecretValue)],
    tree: &tree::DataTree,
    owner: Owner,
) -> anyhow::Result<()> {
    use launcher_plan::keys::{FIELD_KEY, Record, SECRET_KEY};
    let get = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.expose())
    };
    let previous = facts.key_record.as_deref().and_then(Record::parse);
    let salt = match &previous {
        Some(p) => p.salt.clone(),
        None => {
            let mut raw = [0u8; 16];
            launcher_sys::random_bytes(&mut raw).context("cannot read random bytes")?;
            raw.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let record = Record::of(salt, get(FIELD_KEY), get(SECRET_KEY), now);
    if previous.is_some_and(|p| p.field == record.field && p.secret == record.secret) {
        return Ok(());
    }
    launcher_sys::files::write_atomic(
        tree.dir(STATE_DIR),
        &tree.path_of(STATE_DIR),
        KEYS_FILE,
        record.render().as_bytes(),
        STAMP_FILE_MODE,
        owner.privileged.then_some((owner.uid, owner.gid)),
        true,
    )
    .context("cannot record the keys' fingerprints")?;
    info!(
        phase = "prepare",
        "recorded the fingerprints of FIELD_ENCRYPTION_KEY and SECRET_KEY"
    );
    Ok(())
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
