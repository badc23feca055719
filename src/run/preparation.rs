//! The prepare phase: one preparation at a time per data directory and one migration at a
//! time per database (crate::lock), a decision on what is there once the locks are held
//! (another launcher may have prepared meanwhile), the steps that must run as the service
//! user (crate::prepare), and what follows them: old backups pruned, the database made
//! private, the keys recorded.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use tracing::{info, warn};

use launcher_config::Config;
use launcher_plan::facts::Facts;
use launcher_plan::finding::Severity;
use launcher_plan::judge::prepare::{Backup, Decision};
use launcher_plan::judge::{self, Start};
use launcher_plan::layout::{
    self, BACKUPS_DIR, KEYS_FILE, SECRETS_DIR, STAMP_FILE_MODE, STATE_DIR, is_backup_name,
    sqlite_files_in_data_dir,
};
use launcher_plan::postgres::{instance_name, migration_lock_key};
use launcher_plan::rule::Rule;
use launcher_plan::secret::SecretValue;
use launcher_sys::privs::{Switched, Target};
use launcher_sys::tree::Owner;

use super::account::Account;
use super::secrets::Secrets;
use super::tree::DataTree;
use super::{Phase, Waits, lock_exit};
use crate::exit::{self, Exit, OrExit};
use crate::lock::{self, Locks};
use crate::postgres::Session;
use crate::{observe, prepare};

/// What the phase works on.
pub(super) struct Inputs<'a> {
    /// Looked at again once the locks are held.
    pub facts: &'a mut Facts,
    /// The launcher's PostgreSQL session; it ends with this phase (the app opens its own).
    pub session: Option<Session>,
    pub start: &'a Start,
    pub tree: &'a DataTree,
    pub account: &'a Account,
    pub secrets: &'a Secrets,
    /// --force-prepare: migrate runs whatever its stamp says.
    pub force: bool,
}

/// Needs the launcher to act as the service user (`_acting`): the lock file, the stamps,
/// the backups and the preparation process are the user's.
pub(super) fn prepare(
    waits: &mut Waits,
    _acting: &mut Switched<'_>,
    cfg: &Config,
    i: Inputs<'_>,
) -> Result<(), Exit> {
    let Inputs {
        facts,
        session,
        start,
        tree,
        account,
        secrets,
        force,
    } = i;
    let owner = account.owner();
    let phase = Phase::begin("prepare", "Preparing the app");
    let name = instance_name(&launcher_sys::hostname(), std::process::id());
    let stall = cfg.prepare.stall_timeout;
    let mut locks = Locks::default();
    locks.file = Some(
        waits
            .block_on(|stop| lock::data_dir(tree, owner, &name, stall, stop))
            .map_err(lock_exit)?,
    );
    remove_leftovers(tree);
    if let (Some(session), true) = (&session, cfg.prepare.migrate) {
        let key = migration_lock_key(&session.server.database, &cfg.app.settings_module);
        let file = locks.file.as_ref();
        let held = waits
            .block_on(|stop| lock::migration(session, key, stall, stop, file))
            .map_err(lock_exit)?;
        locks.migration = Some(held);
    }
    observe::refresh_preparation(cfg, tree, facts);
    if let Some(session) = &session {
        facts.database.postgresql = Some(waits.block_on(|_| session.observe()));
    }
    let plan = judge::preparation(cfg, facts, force, crate::now());
    for p in &plan.planned {
        let f = p.finding();
        match &p.decision {
            Decision::Refuse(_) => return Err(Exit::new(exit::SYSTEM, anyhow!("{f}")).rule(f.rule)),
            Decision::Skip { .. } | Decision::NoWork(_) => {
                info!(phase = "prepare", step = %p.step, skipped = true, "step {} {}", p.step, f.message)
            }
            Decision::Run(reason) => {
                info!(phase = "prepare", step = %p.step, skipped = false, "step {} runs: {reason}", p.step)
            }
        }
    }
    if let Some(f) = plan.backup.finding() {
        match f.severity {
            Severity::Warning => warn!(phase = "prepare", "{f}"),
            _ => info!(phase = "prepare", "{}", f.message),
        }
    }
    let backup = match &plan.backup {
        Backup::Take(path) => Some(path.clone()),
        _ => None,
    };
    let to_run = plan.planned.iter().filter(|p| p.runs()).count();
    let locale_paths = start.locale_paths();
    let env = launcher_plan::env::build(
        &launcher_plan::env::Inputs {
            config: cfg,
            secrets: secrets.values(),
            inherited: &facts.inherited,
            user: &account.account.user,
            home: &cfg.service.data_dir,
            locale_paths: &locale_paths,
        },
        launcher_plan::env::Purpose::Prepare,
    );
    let ctx = prepare::Context {
        cfg,
        tree,
        owner,
        env,
        catalogs: start.catalogs.clone(),
        backup: backup.clone(),
        new_database: plan.new_database.clone(),
        static_dir: match layout::static_layout(cfg) {
            layout::StaticLayout::Versioned { dir } => Some(dir),
            layout::StaticLayout::Fixed(_) => None,
        },
        source: facts.source.as_ref().ok(),
        target: target(account)?,
    };
    let outcome =
        waits.with(|rt, stop| prepare::execute(rt, stop, &ctx, &plan.planned, &mut locks));
    // The backups beyond prepare.backups go, whether this migrate succeeded or not (a
    // crash loop must not fill the disk); the one just taken always stays.
    if let Some(b) = backup.as_ref().filter(|b| b.exists()) {
        prune_backups(cfg, tree, b);
    }
    let outcome = outcome.map_err(|e| match e.stop_signal() {
        Some(signal) => Exit::stopped(signal, e),
        None => match backup.as_ref().filter(|b| b.exists()) {
            Some(b) => Exit::new(
                exit::RUNTIME,
                anyhow::Error::new(e).context(restore_hint(cfg, b)),
            )
            .rule(Rule::PrepareFailed),
            None => Exit::new(exit::RUNTIME, e).rule(Rule::PrepareFailed),
        },
    })?;
    drop(locks);
    drop(session);
    // The database is the app's alone, not the web server's that shares the group.
    for file in sqlite_files_in_data_dir(cfg) {
        if let Some(change) =
            launcher_sys::tree::make_private(tree, &file, owner).or_exit(exit::SYSTEM)?
        {
            info!(phase = "prepare", path = %change.path.display(), "{}: {}", change.path.display(), change.what);
        }
    }
    record_keys(facts, secrets.values(), tree, owner).or_exit(exit::SYSTEM)?;
    phase.end(&if to_run == 0 {
        "preparation: nothing to do".to_string()
    } else {
        let known = outcome
            .migrations
            .map(|m| format!("; {} migrations on disk", m.len()))
            .unwrap_or_default();
        format!(
            "preparation finished ({to_run} of {} steps ran{known})",
            plan.planned.len()
        )
    });
    Ok(())
}

/// What a start that was killed left half-written (a secret, a stamp, a backup) is never
/// used; with the data directory's lock held, nobody else is writing such a file, so it
/// goes now (acting as the user, regular files with the launcher's names only).
fn remove_leftovers(tree: &DataTree) {
    for dir in [SECRETS_DIR, STATE_DIR, BACKUPS_DIR] {
        match launcher_sys::files::remove_leftovers(tree.dir(dir), &tree.path_of(dir), |n| {
            layout::temporary_pid(dir, n)
        }) {
            Ok(removed) => {
                for name in removed {
                    info!(
                        phase = "prepare",
                        "removed {}/{name}, left half-written by a start that was stopped",
                        tree.path_of(dir).display()
                    );
                }
            }
            Err(e) => warn!(
                phase = "prepare",
                "cannot remove what a stopped start left: {e}"
            ),
        }
    }
}

/// The identity the preparation process and the server run as.
pub(super) fn target(account: &Account) -> Result<Target, Exit> {
    Target::for_account(&account.account, account.privileged)
        .context("cannot read the kernel's capability range")
        .or_exit(exit::PRIVILEGES)
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

/// Keep the newest prepare.backups backups, by when they were written, and always `just`
/// (the one this start took); a failure to prune is logged, not fatal.
fn prune_backups(cfg: &Config, tree: &DataTree, just: &Path) {
    let just = just.file_name().and_then(|n| n.to_str());
    match launcher_sys::files::prune(
        tree.dir(BACKUPS_DIR),
        &tree.path_of(BACKUPS_DIR),
        is_backup_name,
        cfg.prepare.backups as usize,
        just,
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
    tree: &DataTree,
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
    let record = Record::of(salt, get(FIELD_KEY), get(SECRET_KEY), crate::now());
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
