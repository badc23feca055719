//! Preparation happens once at a time: two locks, each waited for visibly.
//!
//! - The **data directory lock**, an flock on `state/prepare.lock`: launchers sharing one
//!   data directory (two units on one host, a start by hand beside the service) prepare
//!   one after the other, for the whole preparation (stamps, static files, catalogs, an
//!   SQLite database all live there).
//! - The **migration lock**, a session-level PostgreSQL advisory lock on the launcher's
//!   own connection (key: launcher_plan::postgres::migration_lock_key): instances sharing
//!   one database migrate one after the other. It is taken before migrate is decided and
//!   released as soon as migrate finished (or was decided away), so the instances'
//!   collectstatic and compilemessages overlap.
//!
//! Both die with their holder: the kernel drops an flock when the process ends, the server
//! drops the advisory lock with the session, so a killed launcher (kill -9 included)
//! leaves nothing behind. The holder gives signs of life while it prepares (the lock
//! file's mtime, its session's pg_stat_activity.state_change); a waiter keeps systemd's
//! start timeout alive while they come, names the holder in STATUS, and gives up with a
//! clear error when the holder has shown no sign of life for longer than the stall limit
//! (`prepare.stall_timeout_sec`, after which the holder stops a silent step itself).

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use tracing::{debug, info, warn};

use launcher_plan::layout::STATE_DIR;
use launcher_sys::StopSignal;
use launcher_sys::tree::{DataTree, Owner};

use crate::notify;
use crate::postgres::Session;
use crate::signals::StopSignals;

/// The lock file in the state directory.
pub const LOCK_FILE: &str = "prepare.lock";
/// Time to wait on the server for the migration lock per try (a lock released meanwhile
/// is granted at once); STATUS is refreshed between tries.
const PG_PATIENCE: Duration = Duration::from_millis(500);
/// Pause between tries of the data directory lock.
const FILE_PAUSE: Duration = Duration::from_millis(100);
/// How often the holder gives a sign of life and a waiter refreshes STATUS.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// Added to the stall limit before a waiter gives up on a silent holder, and to the start
/// timeout a waiter asks systemd for.
const MARGIN: Duration = Duration::from_secs(15);
/// The most of the lock file read as the holder's name.
const MAX_NAME: usize = 128;

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("stopped by signal {} ({signal}) while waiting for {what}", .signal.raw())]
    Stopped { signal: StopSignal, what: String },
    #[error("{what} is held by {holder}, which has shown no sign of life for {silent} s (more than prepare.stall_timeout_sec + {} s); it looks hung: stop it (the lock goes with it) and start again", MARGIN.as_secs())]
    Stalled {
        what: String,
        holder: String,
        silent: u64,
    },
    #[error("{0}")]
    Failed(String),
}

impl LockError {
    pub fn stop_signal(&self) -> Option<StopSignal> {
        match self {
            LockError::Stopped { signal, .. } => Some(*signal),
            _ => None,
        }
    }
}

/// The data directory lock, held.
pub struct FileLock {
    file: Flock<std::fs::File>,
}

impl FileLock {
    /// A sign of life for launchers waiting for this lock: the file's mtime.
    fn touch(&self) {
        let now = nix::sys::time::TimeSpec::UTIME_NOW;
        if let Err(err) = nix::sys::stat::futimens(self.file.as_fd(), &now, &now) {
            warn!(phase = "prepare", %err, "cannot touch the data directory lock");
        }
    }
}

/// The migration lock, held on `session`.
pub struct MigrationLock<'s> {
    session: &'s Session,
    key: i64,
}

/// The locks of one preparation.
#[derive(Default)]
pub struct Locks<'s> {
    pub file: Option<FileLock>,
    pub migration: Option<MigrationLock<'s>>,
    last_heartbeat: Option<Instant>,
}

impl<'s> Locks<'s> {
    /// A sign of life for whoever waits, at most every [`HEARTBEAT_EVERY`].
    pub async fn heartbeat(&mut self) {
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < HEARTBEAT_EVERY)
        {
            return;
        }
        self.last_heartbeat = Some(Instant::now());
        if let Some(f) = &self.file {
            f.touch();
        }
        if let Some(m) = &self.migration {
            if let Err(err) = m.session.heartbeat().await {
                warn!(phase = "prepare", %err, "cannot give a sign of life on the PostgreSQL session");
            }
        }
    }

    /// Release the migration lock (migrate finished, or is not needed).
    pub async fn release_migration(&mut self) {
        if let Some(m) = self.migration.take() {
            match m.session.unlock(m.key).await {
                Ok(()) => debug!(phase = "prepare", "migration lock released"),
                // The session ends with the launcher, and the lock with it.
                Err(err) => {
                    warn!(phase = "prepare", %err, "cannot release the migration lock; it goes when this launcher's session ends")
                }
            }
        }
    }
}

/// How long ago `t` was.
fn since(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// Wait for and take the data directory lock.
pub async fn data_dir(
    tree: &DataTree,
    owner: Owner,
    name: &str,
    stall: Duration,
    stop: &mut StopSignals,
) -> Result<FileLock, LockError> {
    let state = tree.path_of(STATE_DIR);
    let what = format!("the data directory {}", tree.path.display());
    let chown = owner.privileged.then_some((owner.uid, owner.gid));
    let mut file =
        launcher_sys::files::open_lock_file(tree.dir(STATE_DIR), &state, LOCK_FILE, chown)
            .map_err(|e| LockError::Failed(format!("cannot use the data directory lock: {e}")))?;
    let mut waiting = Waiting::new(what.clone(), stall);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut held) => {
                waiting.acquired();
                // Its name, for whoever waits next.
                let write = held
                    .set_len(0)
                    .and_then(|()| held.rewind())
                    .and_then(|()| held.write_all(format!("{name}\n").as_bytes()));
                if let Err(err) = write {
                    warn!(phase = "prepare", %err, "cannot write this launcher's name into the data directory lock");
                }
                return Ok(FileLock { file: held });
            }
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                file = f;
                let holder = file_holder(&mut file);
                waiting.held(holder, stop, FILE_PAUSE).await?;
            }
            Err((_, e)) => {
                return Err(LockError::Failed(format!(
                    "cannot lock {}/{LOCK_FILE}: {e}",
                    state.display()
                )));
            }
        }
    }
}

/// The holder's name and the age of its last sign of life, from the lock file.
fn file_holder(file: &mut std::fs::File) -> (String, Option<Duration>) {
    let mut buf = Vec::with_capacity(MAX_NAME);
    let _ = file.rewind();
    let _ = Read::by_ref(file)
        .take(MAX_NAME as u64)
        .read_to_end(&mut buf);
    let name: String = String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let name = if name.is_empty() {
        "another launcher".to_string()
    } else {
        name
    };
    let silent = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .map(since);
    (name, silent)
}

/// Wait for and take the migration lock on `session`. `held` is the data directory lock
/// this launcher holds meanwhile: it keeps giving signs of life while this waits, so a
/// launcher waiting for it does not take this one for hung.
pub async fn migration<'s>(
    session: &'s Session,
    key: i64,
    stall: Duration,
    stop: &mut StopSignals,
    held: Option<&FileLock>,
) -> Result<MigrationLock<'s>, LockError> {
    let what = "the migration lock".to_string();
    let mut waiting = Waiting::new(
        format!("another instance's migration ({})", session.server.database),
        stall,
    );
    loop {
        let taken = tokio::select! {
            biased;
            signal = stop.recv() => return Err(LockError::Stopped { signal, what }),
            r = session.try_lock(key, PG_PATIENCE) => r.map_err(LockError::Failed)?,
        };
        if taken {
            waiting.acquired();
            return Ok(MigrationLock { session, key });
        }
        if let Some(f) = held {
            f.touch();
        }
        let holder = match session.holder(key).await.map_err(LockError::Failed)? {
            Some(h) => (h.label, h.silent),
            // Released between the two queries: try again at once.
            None => continue,
        };
        waiting.held(holder, stop, Duration::ZERO).await?;
    }
}

/// The bookkeeping of one wait: STATUS, the log, the start timeout, the stall limit.
struct Waiting {
    what: String,
    stall: Duration,
    started: Instant,
    holder: Option<String>,
    last_status: Option<Instant>,
}

impl Waiting {
    fn new(what: String, stall: Duration) -> Waiting {
        Waiting {
            what,
            stall,
            started: Instant::now(),
            holder: None,
            last_status: None,
        }
    }

    /// The lock is held by `holder` (name, time since its last sign of life): report,
    /// keep the start timeout alive, give up on a hung holder, then pause for `pause`.
    async fn held(
        &mut self,
        (holder, silent): (String, Option<Duration>),
        stop: &mut StopSignals,
        pause: Duration,
    ) -> Result<(), LockError> {
        if let Some(silent) = silent {
            if silent > self.stall + MARGIN {
                return Err(LockError::Stalled {
                    what: self.what.clone(),
                    holder,
                    silent: silent.as_secs(),
                });
            }
        }
        if self.holder.as_deref() != Some(holder.as_str()) {
            info!(phase = "prepare", holder = %holder, "waiting for {} held by {holder}", self.what);
            self.holder = Some(holder.clone());
            self.last_status = None;
        }
        if self
            .last_status
            .is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY)
        {
            self.last_status = Some(Instant::now());
            notify::status(&format!(
                "Waiting for {}: held by {holder} (waited {} s)",
                self.what,
                self.started.elapsed().as_secs()
            ));
            // As long as the holder lives and prepares, so may this start.
            notify::extend_timeout(self.stall + MARGIN);
        }
        if !pause.is_zero() {
            tokio::select! {
                biased;
                signal = stop.recv() => return Err(LockError::Stopped { signal, what: self.what.clone() }),
                () = tokio::time::sleep(pause) => {}
            }
        }
        Ok(())
    }

    fn acquired(&self) {
        if let Some(holder) = &self.holder {
            let ms = self.started.elapsed().as_millis() as u64;
            info!(phase = "prepare", duration_ms = ms, holder = %holder, "waited {:.1} s for {} held by {holder}", ms as f64 / 1000.0, self.what);
        }
    }
}
