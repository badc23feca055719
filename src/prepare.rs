//! Preparation: decide which of migrate, collectstatic and compilemessages have something
//! to do, run those in one Python process as the service user, and keep systemd informed.
//!
//! The driver (prepare.py, embedded) starts Django once and runs the steps in order. It
//! reports its progress as events on a pipe of its own, its fd 3 (the protocol is in
//! launcher_plan::protocol); its stdout and stderr carry the commands' output only, so
//! nothing a command prints can pass for an event. All three are read as they come, each
//! with a fixed memory bound: every output line goes to the log with the step it belongs to
//! (a very long one cut), any output or event counts as progress and keeps systemd's start
//! timeout extended, and a step that is silent for `prepare.stall_timeout_sec` is stopped
//! with a clear error instead of being killed by an opaque timeout.
//!
//! A step's stamp is written only after the driver reported that very step finished, in
//! its turn; an event that does not fit the plan is logged as a protocol violation and
//! changes nothing. A stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT) stops the driver
//! (SIGTERM, a grace period, SIGKILL; always reaped) and the interrupted step gets no
//! stamp. This module never panics on what the driver sends.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

use launcher_config::Config;
use launcher_plan::Step;
use launcher_plan::judge::prepare::{Decision, Planned};
use launcher_plan::layout::{STAMP_FILE_MODE, STATE_DIR, stamp_file_name};
use launcher_plan::protocol::{Effect, Event, LOG_LINE_MAX, LineSplitter, Parser, Progress};
use launcher_plan::stamp::Reason;
use launcher_plan::stamp::Stamp;
use launcher_sys::StopSignal;
use launcher_sys::privs::Target;
use launcher_sys::tree::{DataTree, Owner};

use crate::lock::Locks;
use crate::notify;
use crate::observe::{SourceTree, witness};
use crate::signals::StopSignals;

const DRIVER: &str = include_str!("prepare.py");
/// The driver's descriptor for events (the write end of a pipe only it inherits).
const EVENT_FD: RawFd = 3;
const TAIL_LINES: usize = 20;
/// How much longer than the stall limit systemd's timeout is kept, so the launcher's own
/// stall detection always fires first and explains itself.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(15);
const EXTEND_EVERY: Duration = Duration::from_secs(2);
/// Time a stopped driver gets to exit after SIGTERM before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// What preparation works with.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub tree: &'a DataTree,
    pub owner: Owner,
    /// The preparation environment (see launcher_plan::env).
    pub env: launcher_plan::env::Env,
    /// Translation base directories and where their catalogs are compiled to
    /// (launcher_plan::judge::prepare::catalog_targets).
    pub catalogs: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// Where the driver backs up the SQLite database before migrate, if anywhere.
    pub backup: Option<std::path::PathBuf>,
    /// The directory of versioned static trees (launcher_plan::layout::StaticLayout),
    /// when the static files are collected there.
    pub static_dir: Option<std::path::PathBuf>,
    /// The app source as observed: the catalogs' stamp counts their compiled forms again
    /// after the step, without walking the source.
    pub source: Option<&'a launcher_plan::facts::SourceFacts>,
    /// The identity the driver runs as.
    pub target: Target,
}

/// The driver's list of catalogs to compile (source base directory, target), as one
/// JSON variable for the driver alone; none when there is nothing to compile.
fn catalogs_var(
    catalogs: &[(std::path::PathBuf, std::path::PathBuf)],
) -> Option<(&'static str, String)> {
    if catalogs.is_empty() {
        return None;
    }
    let pairs: Vec<[String; 2]> = catalogs
        .iter()
        .map(|(from, to)| [from.display().to_string(), to.display().to_string()])
        .collect();
    Some((
        "BITPOLL_LAUNCHER_CATALOGS",
        serde_json::to_string(&pairs).ok()?,
    ))
}

/// Why preparation failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot start the preparation process {python}: {source}")]
    Spawn {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", failure_text(.step, .status, .tail))]
    Failed {
        step: Option<Step>,
        status: String,
        tail: Vec<String>,
    },
    #[error("preparation step {step} made no progress (no output) for {secs} s and was stopped; if it legitimately works silently that long, raise prepare.stall_timeout_sec{}", tail_text(.tail))]
    Stalled {
        step: String,
        secs: u64,
        tail: Vec<String>,
    },
    #[error(
        "stopped by signal {} ({signal}) during preparation step {step}; the step's stamp was not written, so it runs again on the next start", .signal.raw()
    )]
    Interrupted { signal: StopSignal, step: String },
    #[error("cannot record that step {step} finished: {source}")]
    Stamp {
        step: Step,
        #[source]
        source: launcher_sys::files::WriteError,
    },
    #[error("preparation I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl PrepareError {
    /// The signal that stopped preparation, when that is why it failed.
    pub fn stop_signal(&self) -> Option<StopSignal> {
        match self {
            PrepareError::Interrupted { signal, .. } => Some(*signal),
            _ => None,
        }
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n    {}", tail.join("\n    "))
    }
}

fn failure_text(step: &Option<Step>, status: &str, tail: &[String]) -> String {
    let what = match step {
        Some(step) => format!("preparation step {step} failed ({status})"),
        None => format!(
            "Django could not start before the first preparation step ({status}); check the settings and the app's environment"
        ),
    };
    format!("{what}{}", tail_text(tail))
}

/// What running the steps produced, for the caller.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every migration Django found on disk after migrate succeeded (`app_label.name`,
    /// sorted); None when migrate did not run or the driver did not list them.
    pub migrations: Option<Vec<String>>,
}

/// Run the planned steps that must run, on `rt`, holding `locks`. The migration lock is
/// released here, and only here: at once when migrate does not run, else as soon as
/// migrate finished. Returns after all finished.
pub fn execute(
    rt: &tokio::runtime::Runtime,
    stop: &mut StopSignals,
    ctx: &Context<'_>,
    planned: &[Planned],
    locks: &mut Locks<'_>,
) -> Result<Outcome, PrepareError> {
    let steps: Vec<Step> = planned
        .iter()
        .filter(|p| p.runs())
        .map(|p| p.step)
        .collect();
    if !steps.contains(&Step::Migrate) {
        rt.block_on(locks.release_migration());
    }
    if steps.is_empty() {
        return Ok(Outcome::default());
    }
    // Stamps of the steps about to run go first: a step interrupted half-way must never
    // be skipped next time on the strength of an older success.
    for step in &steps {
        launcher_sys::files::remove_state(
            ctx.tree.dir(STATE_DIR),
            &ctx.tree.path_of(STATE_DIR),
            &stamp_file_name(*step),
        )
        .map_err(|source| PrepareError::Stamp {
            step: *step,
            source,
        })?;
    }
    // The runtime is single-threaded: the driver is forked from a process with one
    // thread, so the privilege drop between fork and exec is safe.
    rt.block_on(supervise(ctx, planned, &steps, stop, locks))
}

async fn supervise(
    ctx: &Context<'_>,
    planned: &[Planned],
    steps: &[Step],
    stop_signals: &mut StopSignals,
    locks: &mut Locks<'_>,
) -> Result<Outcome, PrepareError> {
    let python = ctx.cfg.app.python.display().to_string();
    let (event_read, event_write) = launcher_sys::child::pipe()?;
    let mut event_pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(event_read)?;
    // Forced: migrate runs as a command even when Django finds nothing to apply.
    let forced = planned
        .iter()
        .any(|p| p.step == Step::Migrate && p.decision == Decision::Run(Reason::Forced));
    let mut cmd = std::process::Command::new(&ctx.cfg.app.python);
    cmd.arg("-c").arg(DRIVER);
    if forced {
        cmd.arg("--force-migrate");
    }
    cmd.args(steps.iter().map(|s| s.name()))
        .current_dir(&ctx.cfg.app.source_dir)
        .env_clear()
        .envs(ctx.env.iter())
        .envs(catalogs_var(&ctx.catalogs))
        .envs(
            ctx.backup
                .as_ref()
                .map(|b| ("BITPOLL_LAUNCHER_BACKUP", b.display().to_string())),
        )
        .envs(
            ctx.static_dir
                .as_ref()
                .map(|d| ("BITPOLL_LAUNCHER_STATIC", d.display().to_string())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The driver runs the app's code: in a session of its own, so it never holds the
    // terminal of an admin who started the launcher by hand.
    launcher_sys::session::new_session_in_child(&mut cmd);
    launcher_sys::child::pass_fd_in_child(&mut cmd, event_write, EVENT_FD);
    // Nothing the launcher inherited reaches the driver: only stdio and the event pipe.
    launcher_sys::fds::close_in_child(&mut cmd, EVENT_FD..EVENT_FD + 1);
    launcher_sys::privs::drop_in_child(&mut cmd, ctx.target.clone());
    // Killed with the launcher (kill -9 included): the locks die with the launcher, and
    // an orphaned driver would go on migrating beside the next holder.
    launcher_sys::child::die_with_parent(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let spawned = cmd.spawn();
    // The command holds this process's copy of the event pipe's write end: close it, so
    // the pipe reaches its end when the driver is gone.
    drop(cmd);
    let mut child = spawned.map_err(|source| PrepareError::Spawn { python, source })?;
    let pid = child.id();
    info!(phase = "prepare", steps = %names(steps), pid, "preparation started: {}", names(steps));
    let init = std::process::id() == 1;

    let stall = ctx.cfg.prepare.stall_timeout;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (mut out_buf, mut err_buf, mut event_buf) = ([0u8; 8192], [0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open, mut events_open) = (true, true, true);
    let mut last_progress = Instant::now();
    let mut last_extend: Option<Instant> = None;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut events = Events::new(ctx, planned, steps);

    loop {
        // In this order: a stop request and the timer are never starved by a flood of
        // output, and output the driver flushed before an event is logged before the
        // event is acted on (so it is attributed to the step that printed it).
        tokio::select! {
            biased;
            signal = stop_signals.recv() => return interrupted(&mut child, &events, signal).await,
            _ = tick.tick() => {
                if init {
                    // PID 1: orphans of the driver's children are ours to reap.
                    for orphan in launcher_sys::reap_zombies(&pid.into_iter().collect::<Vec<_>>()) {
                        info!(phase = "prepare", pid = orphan, "reaped exited orphan process {orphan} (PID 1 inherits them)");
                    }
                }
                if let Some((_, at)) = exited {
                    // A stream held open by a grandchild of the driver: stop waiting.
                    if at.elapsed() > Duration::from_secs(2) {
                        if std::mem::take(&mut out_open) { events.output_end(Stream::Stdout); }
                        if std::mem::take(&mut err_open) { events.output_end(Stream::Stderr); }
                        if std::mem::take(&mut events_open) { events.protocol_end()?; }
                    }
                } else {
                    let silent = last_progress.elapsed();
                    if silent >= stall {
                        let step = events.current_name();
                        warn!(phase = "prepare", step = %step, silent_sec = silent.as_secs(), "no progress for {} s, stopping the preparation process", silent.as_secs());
                        stop(&mut child).await;
                        return Err(PrepareError::Stalled { step, secs: silent.as_secs(), tail: events.tail.iter().cloned().collect() });
                    }
                    if last_extend.is_none_or(|t| t.elapsed() >= EXTEND_EVERY) {
                        notify::extend_timeout(stall - silent + TIMEOUT_MARGIN);
                        last_extend = Some(Instant::now());
                        // Progress: a sign of life for launchers waiting for the locks.
                        locks.heartbeat().await;
                    }
                }
            },
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => { out_open = false; events.output_end(Stream::Stdout); }
                Ok(n) => { last_progress = Instant::now(); events.output(Stream::Stdout, &out_buf[..n]); }
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => { err_open = false; events.output_end(Stream::Stderr); }
                Ok(n) => { last_progress = Instant::now(); events.output(Stream::Stderr, &err_buf[..n]); }
            },
            r = event_pipe.read(&mut event_buf), if events_open => match r {
                Ok(0) | Err(_) => { events_open = false; events.protocol_end()?; }
                Ok(n) => { last_progress = Instant::now(); events.protocol(&event_buf[..n])?; }
            },
            status = child.wait(), if exited.is_none() => {
                exited = Some((status?, Instant::now()));
            },
        }
        if locks.migration.is_some() && events.progress.finished().contains(&Step::Migrate) {
            // The database is migrated: other instances may go on while this one
            // collects static files and compiles catalogs.
            locks.release_migration().await;
            info!(
                phase = "prepare",
                step = "migrate",
                "migration lock released: other instances may decide on migrate now"
            );
        }
        if let (Some((status, _)), false, false, false) = (exited, out_open, err_open, events_open)
        {
            return events.finish(status);
        }
    }
}

async fn interrupted(
    child: &mut tokio::process::Child,
    events: &Events<'_, '_>,
    signal: StopSignal,
) -> Result<Outcome, PrepareError> {
    let step = events.current_name();
    warn!(phase = "prepare", step = %step, signal = %signal, "{signal} received during preparation, stopping the preparation process");
    notify::status(&format!("Stopping: interrupted during {step}"));
    stop(child).await;
    Err(PrepareError::Interrupted { signal, step })
}

/// SIGTERM the driver and what it started (its own process group), give it a moment,
/// then SIGKILL; the driver is always reaped.
async fn stop(child: &mut tokio::process::Child) {
    let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    if let Some(group) = group {
        if let Err(err) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM) {
            warn!(phase = "prepare", pid = group.as_raw(), %err, "cannot send SIGTERM to the preparation process");
        }
    }
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        if let Err(err) = child.start_kill() {
            warn!(phase = "prepare", %err, "cannot kill the preparation process");
        }
        let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    }
}

fn names(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The driver's output streams.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Turns the driver's output into log records and its events into stamps.
struct Events<'c, 'a> {
    ctx: &'c Context<'a>,
    planned: &'c [Planned],
    progress: Progress,
    parser: Parser,
    stdout: LineSplitter,
    stderr: LineSplitter,
    tail: VecDeque<String>,
}

impl<'c, 'a> Events<'c, 'a> {
    fn new(ctx: &'c Context<'a>, planned: &'c [Planned], steps: &[Step]) -> Events<'c, 'a> {
        Events {
            ctx,
            planned,
            progress: Progress::new(steps),
            parser: Parser::new(),
            stdout: LineSplitter::new(LOG_LINE_MAX),
            stderr: LineSplitter::new(LOG_LINE_MAX),
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    /// The step output belongs to: the one that began last, or Django's start.
    fn current_name(&self) -> String {
        self.progress
            .latest()
            .map_or_else(|| "setup".to_string(), |s| s.name().to_string())
    }

    fn splitter(&mut self, stream: Stream) -> &mut LineSplitter {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        let mut lines = Vec::new();
        self.splitter(stream)
            .feed(bytes, |line| lines.push(line.to_text()));
        for line in lines {
            self.log_output(stream, line);
        }
    }

    /// The stream ended: log its unterminated last line.
    fn output_end(&mut self, stream: Stream) {
        let mut lines = Vec::new();
        self.splitter(stream)
            .finish(|line| lines.push(line.to_text()));
        for line in lines {
            self.log_output(stream, line);
        }
    }

    fn log_output(&mut self, stream: Stream, text: String) {
        if text.is_empty() {
            return;
        }
        let step = self.current_name();
        info!(phase = "prepare", step = %step, stream = stream.name(), "{text}");
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    fn protocol(&mut self, bytes: &[u8]) -> Result<(), PrepareError> {
        for event in self.parser.feed(bytes) {
            self.apply(event)?;
        }
        Ok(())
    }

    /// The event pipe ended: an unterminated last line is reported, not acted on.
    fn protocol_end(&mut self) -> Result<(), PrepareError> {
        for event in self.parser.finish() {
            self.apply(event)?;
        }
        Ok(())
    }

    fn apply(&mut self, event: Event) -> Result<(), PrepareError> {
        match self.progress.apply(event) {
            Effect::SetupDone { ms } => {
                info!(
                    phase = "prepare",
                    step = "setup",
                    duration_ms = ms,
                    "Django started in {ms} ms"
                );
            }
            Effect::Began { step, number, of } => {
                notify::status(&format!("Preparing: {step} ({number}/{of})"));
                info!(phase = "prepare", step = %step, "step {step} started");
            }
            Effect::Finished { step, ms } => {
                self.write_stamp(step)?;
                info!(phase = "prepare", step = %step, duration_ms = ms, "step {step} finished in {ms} ms");
            }
            Effect::Migrations { count } => {
                debug!(
                    phase = "prepare",
                    step = "migrate",
                    migrations = count,
                    "Django knows {count} migrations on disk"
                );
            }
            Effect::Violation(what) => {
                let step = self.current_name();
                warn!(phase = "prepare", step = %step, "protocol violation by the preparation process, ignored: {what}");
            }
        }
        Ok(())
    }

    fn write_stamp(&self, step: Step) -> Result<(), PrepareError> {
        // Progress finishes only steps of the running list, which is made from `planned`.
        let Some(planned) = self.planned.iter().find(|p| p.step == step) else {
            warn!(phase = "prepare", step = %step, "step {step} finished but was not planned; no stamp written");
            return Ok(());
        };
        // The witness is taken after the step: it describes the output this run produced.
        // Only the catalogs' witness needs a fresh look at the source tree.
        let source = match step {
            Step::Compilemessages => self.ctx.source.map(SourceTree::recounted),
            _ => None,
        };
        let stamp = Stamp {
            step,
            fingerprint: planned.fingerprint.clone(),
            witness: witness(
                self.ctx.cfg,
                Some(self.ctx.tree.dir("")),
                step,
                source.as_ref(),
            ),
            finished: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            // What migrate applied, so the next start can ask the database whether it
            // still holds it (the driver lists it before step-done migrate).
            migrations: match step {
                Step::Migrate => self.progress.migrations().map(<[String]>::to_vec),
                _ => None,
            },
        };
        let owner = self
            .ctx
            .owner
            .privileged
            .then_some((self.ctx.owner.uid, self.ctx.owner.gid));
        launcher_sys::files::write_atomic(
            self.ctx.tree.dir(STATE_DIR),
            &self.ctx.tree.path_of(STATE_DIR),
            &stamp_file_name(step),
            stamp.render().as_bytes(),
            STAMP_FILE_MODE,
            owner,
            true,
        )
        .map_err(|source| PrepareError::Stamp { step, source })
    }

    fn finish(self, status: ExitStatus) -> Result<Outcome, PrepareError> {
        if status.success() && self.progress.all_finished() {
            return Ok(Outcome {
                migrations: self.progress.into_migrations(),
            });
        }
        // Once a step began: the first that did not finish, or the last one if all
        // finished and the driver failed on exit.
        let step = self
            .progress
            .latest()
            .map(|latest| self.progress.unfinished().unwrap_or(latest));
        let status = if status.success() {
            "exit status 0, but it did not report every step finished".to_string()
        } else {
            describe(status)
        };
        Err(PrepareError::Failed {
            step,
            status,
            tail: self.tail.into_iter().collect(),
        })
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}
