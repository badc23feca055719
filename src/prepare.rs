//! Preparation: decide which of migrate, collectstatic and compilemessages have something
//! to do, run those in one Python process as the service user, and keep systemd informed.
//!
//! The driver (prepare.py, embedded) starts Django once and runs the steps. Steps that do
//! not depend on one another run side by side in lanes (launcher_plan::protocol::lanes:
//! migrate in one, collectstatic and compilemessages in the other), each in a process the
//! driver forks after Django started. Each lane reports its progress as events on a pipe
//! of its own (the protocol is in launcher_plan::protocol), and has its own stdout and
//! stderr, which carry the commands' output only, so nothing a command prints can pass for
//! an event and every line is known to come from its lane. All pipes are read as they come,
//! each with a fixed memory bound: every output line goes to the log with the step it
//! belongs to (a very long one cut), any output or event counts as progress and keeps
//! systemd's start timeout extended, and a preparation that is silent for
//! `prepare.stall_timeout_sec` is stopped with a clear error instead of being killed by an
//! opaque timeout.
//!
//! A step's stamp is written only after its lane reported that very step finished, in its
//! turn; an event that does not fit the plan is logged as a protocol violation and changes
//! nothing. When a lane fails, the driver stops the others, and the error names the step
//! that failed and those stopped with it. A stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT)
//! stops the driver and its lanes at once (SIGTERM to their process group, a grace
//! period, SIGKILL; always reaped) and the interrupted steps get no stamp. This module
//! never panics on what the driver sends.

use std::collections::VecDeque;
use std::os::fd::{OwnedFd, RawFd};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tracing::{debug, info, warn};

use launcher_config::Config;
use launcher_plan::Step;
use launcher_plan::judge::prepare::{Decision, Planned};
use launcher_plan::layout::{STAMP_FILE_MODE, STATE_DIR, stamp_file_name};
use launcher_plan::protocol::{
    self, Effect, Event, LOG_LINE_MAX, LaneEnd, LineSplitter, Parser, Progress,
};
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
    /// The SQLite database migrate creates, built under a temporary name and moved into
    /// place (launcher_plan::judge::prepare::new_database).
    pub new_database: Option<std::path::PathBuf>,
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
    #[error("{}", failure_text(.step, .status, .stopped, .tail))]
    Failed {
        step: Option<Step>,
        status: String,
        /// Steps that ran beside the failed one and were stopped before they finished.
        stopped: Vec<Step>,
        tail: Vec<String>,
    },
    #[error("preparation {} {step} made no progress (no output) for {secs} s and {} stopped; if it legitimately works silently that long, raise prepare.stall_timeout_sec{}", if .step.contains(" and ") { "steps" } else { "step" }, if .step.contains(" and ") { "were" } else { "was" }, tail_text(.tail))]
    Stalled {
        step: String,
        secs: u64,
        tail: Vec<String>,
    },
    #[error(
        "stopped by signal {} ({signal}) during preparation {}", .signal.raw(), interrupted_text(.step, *.several)
    )]
    Interrupted {
        signal: StopSignal,
        /// The steps that were running ("migrate and collectstatic"), or "setup".
        step: String,
        several: bool,
    },
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

fn interrupted_text(step: &str, several: bool) -> String {
    if several {
        format!("steps {step}; their stamps were not written, so they run again on the next start")
    } else {
        format!("step {step}; the step's stamp was not written, so it runs again on the next start")
    }
}

fn failure_text(step: &Option<Step>, status: &str, stopped: &[Step], tail: &[String]) -> String {
    let what = match step {
        Some(step) => format!("preparation step {step} failed ({status})"),
        None => format!(
            "Django could not start before the first preparation step ({status}); check the settings and the app's environment"
        ),
    };
    let stopped = if stopped.is_empty() {
        String::new()
    } else {
        format!(
            "; {} ran beside it and {} stopped before {} finished (no stamp: {} again on the next start)",
            names(stopped),
            if stopped.len() == 1 { "was" } else { "were" },
            if stopped.len() == 1 { "it" } else { "they" },
            if stopped.len() == 1 {
                "it runs"
            } else {
                "they run"
            },
        )
    };
    format!("{what}{stopped}{}", tail_text(tail))
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
    let lanes = protocol::lanes(steps);
    // Lane 0 reports on the driver's fd 3 (events) and its stdout and stderr; lane k on
    // protocol::lane_fds(k). The launcher keeps the read ends.
    let mut sources: Vec<Source> = Vec::with_capacity(3 * lanes.len());
    let mut passed: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(3 * lanes.len());
    let mut events_sources = Vec::with_capacity(lanes.len());
    for lane in 0..lanes.len() {
        let fds = if lane == 0 {
            [EVENT_FD, 1, 2]
        } else {
            protocol::lane_fds(lane)
        };
        for (kind, fd) in [Kind::Events, Kind::Stdout, Kind::Stderr]
            .into_iter()
            .zip(fds)
        {
            if lane == 0 && kind != Kind::Events {
                continue; // the Command's own pipes, below
            }
            let (read, write) = launcher_sys::child::pipe()?;
            let source = Source::new(
                lane,
                kind,
                Reader::Pipe(tokio::net::unix::pipe::Receiver::from_owned_fd(read)?),
            );
            if kind == Kind::Events {
                events_sources.push(source);
            } else {
                sources.push(source);
            }
            passed.push((write, fd));
        }
    }
    let last_fd = passed.iter().map(|(_, fd)| *fd).max().unwrap_or(EVENT_FD);
    // Forced: migrate runs as a command even when Django finds nothing to apply.
    let forced = planned
        .iter()
        .any(|p| p.step == Step::Migrate && p.decision == Decision::Run(Reason::Forced));
    let mut cmd = std::process::Command::new(&ctx.cfg.app.python);
    cmd.arg("-c").arg(DRIVER);
    if forced {
        cmd.arg("--force-migrate");
    }
    cmd.args(
        lanes
            .iter()
            .map(|lane| lane.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")),
    )
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
    .envs(
        ctx.new_database
            .as_ref()
            .map(|d| ("BITPOLL_LAUNCHER_NEW_DATABASE", d.display().to_string())),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // The driver runs the app's code: in a session of its own, so it never holds the
    // terminal of an admin who started the launcher by hand. Its lanes share its process
    // group, so one signal to the group stops them all.
    launcher_sys::session::new_session_in_child(&mut cmd);
    launcher_sys::child::pass_fds_in_child(&mut cmd, passed);
    // Nothing the launcher inherited reaches the driver: only stdio and the lanes' pipes.
    launcher_sys::fds::close_in_child(&mut cmd, EVENT_FD..last_fd + 1);
    launcher_sys::privs::drop_in_child(&mut cmd, ctx.target.clone());
    // Killed with the launcher (kill -9 included): the locks die with the launcher, and
    // an orphaned driver would go on migrating beside the next holder. Its lanes die with
    // it in turn.
    launcher_sys::child::die_with_parent(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let spawned = cmd.spawn();
    // The command holds this process's copies of the pipes' write ends: close them, so
    // each pipe reaches its end when the processes writing to it are gone.
    drop(cmd);
    let mut child = spawned.map_err(|source| PrepareError::Spawn { python, source })?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    // Output before events, lane by lane: output a lane flushed before an event is logged
    // before the event is acted on (so it is attributed to the step that printed it), and
    // lane 0's setup-done, sent before the lanes exist, is read before any lane's event.
    sources.insert(0, Source::new(0, Kind::Stdout, Reader::Stdout(stdout)));
    sources.insert(1, Source::new(0, Kind::Stderr, Reader::Stderr(stderr)));
    sources.extend(events_sources);
    let side_by_side = if lanes.len() > 1 {
        format!(
            " ({} side by side)",
            lanes
                .iter()
                .map(|l| names(l))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    } else {
        String::new()
    };
    info!(phase = "prepare", steps = %names(steps), pid, "preparation started: {}{side_by_side}", names(steps));
    let init = std::process::id() == 1;

    let stall = ctx.cfg.prepare.stall_timeout;
    let mut last_progress = Instant::now();
    let mut last_extend: Option<Instant> = None;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut events = Events::new(ctx, planned, &lanes);

    loop {
        // In this order: a stop request and the timer are never starved by a flood of
        // output.
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
                        for source in sources.iter_mut().filter(|s| s.open) {
                            source.open = false;
                            events.end(source.lane, source.kind)?;
                        }
                    }
                } else {
                    let silent = last_progress.elapsed();
                    if silent >= stall {
                        let step = events.running_names();
                        warn!(phase = "prepare", step = %step, silent_sec = silent.as_secs(), "no progress for {} s, stopping the preparation process", silent.as_secs());
                        stop(&mut child).await;
                        return Err(PrepareError::Stalled { step, secs: silent.as_secs(), tail: events.tail_of_running() });
                    }
                    if last_extend.is_none_or(|t| t.elapsed() >= EXTEND_EVERY) {
                        notify::extend_timeout(stall - silent + TIMEOUT_MARGIN);
                        last_extend = Some(Instant::now());
                        // Progress: a sign of life for launchers waiting for the locks.
                        locks.heartbeat().await;
                    }
                }
            },
            (i, r) = read_any(&mut sources), if sources.iter().any(|s| s.open) => {
                let source = &mut sources[i];
                match r {
                    Ok(0) | Err(_) => {
                        source.open = false;
                        events.end(source.lane, source.kind)?;
                    }
                    Ok(n) => {
                        last_progress = Instant::now();
                        events.feed(source.lane, source.kind, &source.buf[..n])?;
                    }
                }
            },
            status = child.wait(), if exited.is_none() => {
                exited = Some((status?, Instant::now()));
            },
        }
        if locks.migration.is_some() && events.progress.is_finished(Step::Migrate) {
            // The database is migrated: other instances may go on while this one
            // collects static files and compiles catalogs.
            locks.release_migration().await;
            info!(
                phase = "prepare",
                step = "migrate",
                "migration lock released: other instances may decide on migrate now"
            );
        }
        // The driver reaps its lanes before it exits (and a lane dies with the driver), so
        // with its exit nothing of the preparation is left.
        if let Some((status, _)) = exited {
            if sources.iter().all(|s| !s.open) {
                return events.finish(status);
            }
        }
    }
}

/// What a pipe of the driver carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stdout,
    Stderr,
    Events,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stdout => "stdout",
            Kind::Stderr => "stderr",
            Kind::Events => "events",
        }
    }
}

/// The read end of one of the driver's pipes.
enum Reader {
    Stdout(tokio::process::ChildStdout),
    Stderr(tokio::process::ChildStderr),
    Pipe(tokio::net::unix::pipe::Receiver),
}

/// One pipe of one lane, with its read buffer.
struct Source {
    lane: usize,
    kind: Kind,
    reader: Reader,
    open: bool,
    buf: Box<[u8; 8192]>,
}

impl Source {
    fn new(lane: usize, kind: Kind, reader: Reader) -> Source {
        Source {
            lane,
            kind,
            reader,
            open: true,
            buf: Box::new([0; 8192]),
        }
    }
}

/// Read from the first open source that has data (in the order of `sources`): its index
/// and what the read returned (the bytes are in its buffer).
async fn read_any(sources: &mut [Source]) -> (usize, std::io::Result<usize>) {
    std::future::poll_fn(|cx| {
        for (i, s) in sources.iter_mut().enumerate().filter(|(_, s)| s.open) {
            let mut buf = ReadBuf::new(&mut s.buf[..]);
            let polled = match &mut s.reader {
                Reader::Stdout(r) => Pin::new(r).poll_read(cx, &mut buf),
                Reader::Stderr(r) => Pin::new(r).poll_read(cx, &mut buf),
                Reader::Pipe(r) => Pin::new(r).poll_read(cx, &mut buf),
            };
            if let Poll::Ready(r) = polled {
                let n = buf.filled().len();
                return Poll::Ready((i, r.map(|()| n)));
            }
        }
        Poll::Pending
    })
    .await
}

async fn interrupted(
    child: &mut tokio::process::Child,
    events: &Events<'_, '_>,
    signal: StopSignal,
) -> Result<Outcome, PrepareError> {
    let step = events.running_names();
    let several = events.progress.running().len() > 1;
    warn!(phase = "prepare", step = %step, signal = %signal, "{signal} received during preparation, stopping the preparation process");
    notify::status(&format!("Stopping: interrupted during {step}"));
    stop(child).await;
    Err(PrepareError::Interrupted {
        signal,
        step,
        several,
    })
}

/// SIGTERM the driver and what it started (its own process group: its lanes too, which it
/// reaps before it exits), give it a moment, then SIGKILL; the driver is always reaped.
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

/// One lane's streams: its output cut into lines, its events parsed, its last lines.
struct LaneStreams {
    stdout: LineSplitter,
    stderr: LineSplitter,
    parser: Parser,
    tail: VecDeque<String>,
}

/// Turns the driver's output into log records and its events into stamps.
struct Events<'c, 'a> {
    ctx: &'c Context<'a>,
    planned: &'c [Planned],
    progress: Progress,
    lanes: Vec<LaneStreams>,
}

impl<'c, 'a> Events<'c, 'a> {
    fn new(ctx: &'c Context<'a>, planned: &'c [Planned], lanes: &[Vec<Step>]) -> Events<'c, 'a> {
        Events {
            ctx,
            planned,
            progress: Progress::with_lanes(lanes),
            lanes: lanes
                .iter()
                .map(|_| LaneStreams {
                    stdout: LineSplitter::new(LOG_LINE_MAX),
                    stderr: LineSplitter::new(LOG_LINE_MAX),
                    parser: Parser::new(),
                    tail: VecDeque::with_capacity(TAIL_LINES),
                })
                .collect(),
        }
    }

    /// The step output of `lane` belongs to: the one that began last there, or Django's
    /// start.
    fn current_name(&self, lane: usize) -> String {
        self.progress
            .latest(lane)
            .map_or_else(|| "setup".to_string(), |s| s.name().to_string())
    }

    /// The steps running now ("migrate and collectstatic"), or Django's start.
    fn running_names(&self) -> String {
        let running = self.progress.running();
        match running.as_slice() {
            [] => self.current_name(0),
            [one] => one.name().to_string(),
            [first @ .., last] => format!("{} and {last}", names(first)),
        }
    }

    /// The last output lines of the lanes still running (all lanes if none runs).
    fn tail_of_running(&self) -> Vec<String> {
        let running = self.progress.running();
        let mut tail = Vec::new();
        for (lane, streams) in self.lanes.iter().enumerate() {
            let runs = self
                .progress
                .latest(lane)
                .is_some_and(|s| running.contains(&s));
            if runs || running.is_empty() {
                tail.extend(streams.tail.iter().cloned());
            }
        }
        tail
    }

    /// Bytes from lane `lane`'s pipe of kind `kind`.
    fn feed(&mut self, lane: usize, kind: Kind, bytes: &[u8]) -> Result<(), PrepareError> {
        let mut lines = Vec::new();
        let streams = &mut self.lanes[lane];
        match kind {
            Kind::Stdout => streams.stdout.feed(bytes, |l| lines.push(l.to_text())),
            Kind::Stderr => streams.stderr.feed(bytes, |l| lines.push(l.to_text())),
            Kind::Events => {
                for event in streams.parser.feed(bytes) {
                    self.apply(lane, event)?;
                }
                return Ok(());
            }
        }
        for line in lines {
            self.log_output(lane, kind, line);
        }
        Ok(())
    }

    /// Lane `lane`'s pipe of kind `kind` ended: an unterminated last output line is
    /// logged; an unterminated last event is reported, not acted on.
    fn end(&mut self, lane: usize, kind: Kind) -> Result<(), PrepareError> {
        let mut lines = Vec::new();
        let streams = &mut self.lanes[lane];
        match kind {
            Kind::Stdout => streams.stdout.finish(|l| lines.push(l.to_text())),
            Kind::Stderr => streams.stderr.finish(|l| lines.push(l.to_text())),
            Kind::Events => {
                for event in streams.parser.finish() {
                    self.apply(lane, event)?;
                }
                return Ok(());
            }
        }
        for line in lines {
            self.log_output(lane, kind, line);
        }
        Ok(())
    }

    fn log_output(&mut self, lane: usize, kind: Kind, text: String) {
        if text.is_empty() {
            return;
        }
        let step = self.current_name(lane);
        info!(phase = "prepare", step = %step, stream = kind.name(), "{text}");
        let tail = &mut self.lanes[lane].tail;
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    }

    /// STATUS= for the steps running now, each with its number in the run order.
    fn status(&self) {
        let running = self.progress.running();
        if running.is_empty() {
            return;
        }
        let order: Vec<Step> = self
            .planned
            .iter()
            .filter(|p| p.runs())
            .map(|p| p.step)
            .collect();
        let text: Vec<String> = running
            .iter()
            .map(|s| {
                let n = order.iter().position(|o| o == s).map_or(0, |i| i + 1);
                format!("{s} ({n}/{})", order.len())
            })
            .collect();
        notify::status(&format!("Preparing: {}", text.join(", ")));
    }

    fn apply(&mut self, lane: usize, event: Event) -> Result<(), PrepareError> {
        match self.progress.apply_from(lane, event) {
            Effect::SetupDone { ms } => {
                info!(
                    phase = "prepare",
                    step = "setup",
                    duration_ms = ms,
                    "Django started in {ms} ms"
                );
            }
            Effect::Began { step, .. } => {
                self.status();
                info!(phase = "prepare", step = %step, "step {step} started");
            }
            Effect::Finished { step, ms } => {
                self.write_stamp(step)?;
                info!(phase = "prepare", step = %step, duration_ms = ms, "step {step} finished in {ms} ms");
                self.status();
            }
            Effect::Migrations { count } => {
                debug!(
                    phase = "prepare",
                    step = "migrate",
                    migrations = count,
                    "Django knows {count} migrations on disk"
                );
            }
            Effect::LaneEnded { lane, end } => {
                debug!(
                    phase = "prepare",
                    lane, "the process of lane {lane} ended: {end}"
                );
            }
            Effect::Violation(what) => {
                let step = self.current_name(lane);
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
        let p = &self.progress;
        let lanes = p.lane_count();
        // The lane that failed: by the driver's report, else (one lane, or a driver that
        // could not report) the first with a step that began and did not finish.
        let reported = (0..lanes).find(|&l| {
            p.lane_end(l)
                .is_some_and(|e| e != LaneEnd::Exit(0) && e != LaneEnd::Stopped)
        });
        let running = |l: usize| p.latest(l).is_some() && p.latest(l) == p.unfinished(l);
        let lane = reported
            .or_else(|| (0..lanes).find(|&l| running(l)))
            .unwrap_or(0);
        // Once a step began in it: the first that did not finish, or the last one if all
        // finished and the lane failed on exit.
        let step = p
            .latest(lane)
            .map(|latest| p.unfinished(lane).unwrap_or(latest));
        let status = match reported.and_then(|l| p.lane_end(l)) {
            Some(end) => end.to_string(),
            None if status.success() => {
                "exit status 0, but it did not report every step finished".to_string()
            }
            None => describe(status),
        };
        // The steps of the other lanes that were running when the failure stopped them.
        let stopped: Vec<Step> = (0..lanes)
            .filter(|&l| l != lane)
            .filter_map(|l| p.latest(l).filter(|s| !p.is_finished(*s)))
            .collect();
        Err(PrepareError::Failed {
            step,
            status,
            stopped,
            tail: self.lanes[lane].tail.iter().cloned().collect(),
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
