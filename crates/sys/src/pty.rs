//! Running a command on a pseudo-terminal of its own, in a session of its own, relayed to
//! the caller's terminal (like `runuser --pty` or sudo's `use_pty`).
//!
//! `manage` runs the app's code as the service user from an admin's root terminal. Given
//! that terminal directly, the app could push input into it with TIOCSTI (or, with the
//! terminal as its controlling one, signal the admin's shell): the typed-ahead command
//! would run as root once the app exits. On a pty of its own, in a new session, the app
//! only ever reaches its own terminal; the launcher (still root, running no app code)
//! copies bytes between the two and forwards window size changes and stop signals.
//!
//! Only the caller's standard streams that are terminals are replaced by the pty; a pipe
//! or file stays the command's own (`manage -- shell < fix.py > out.txt` on a terminal:
//! the script is read from the file to its end, the output written to the file unchanged),
//! so end of input reaches the command as it would without a pty.
//!
//! The relay ends when the command exits, even if something it left in the background
//! still holds the pty; the caller's terminal mode is restored on every way out (return,
//! error, panic). The pty's master side is non-blocking and input waits in a bounded
//! buffer, so a command that writes while it is sent input cannot deadlock the relay;
//! output goes to the caller's terminal through a description of its own, non-blocking,
//! so a terminal that stops taking it (Ctrl-S, a stalled connection) holds back the
//! command, never the relay's handling of signals.
//! SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to the launcher are passed on to the command;
//! if it has not ended [`STOP_GRACE`] later, it is killed.
//!
//! The child side between fork and exec uses raw, async-signal-safe calls only: every
//! buffer it needs (argv, envp, the directory) is built before the fork.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::privs::{Target, drop_to};

/// How long a command has to end after a stop signal was passed on to it.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Input read from the caller but not yet taken by the pty waits here, up to this much.
const INPUT_BUFFER: usize = 64 * 1024;

/// Output read from the pty but not yet taken by the caller's terminal, up to this much.
const OUTPUT_BUFFER: usize = 64 * 1024;

/// After the command has ended, at most this much more is read from its terminal:
/// something it left in the background may go on writing there.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// What went wrong starting the command (the child reports the step and errno).
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("argument, environment or directory contains a NUL byte")]
    Nul,
    #[error("cannot {op}: {source}")]
    Setup { op: &'static str, source: Errno },
    #[error("the command could not be started on its terminal: {step} failed: {errno}")]
    Child { step: &'static str, errno: Errno },
}

/// Steps of the child, reported through the error pipe as one byte plus errno.
const CHILD_STEPS: [&str; 7] = [
    "setsid",
    "TIOCSCTTY",
    "dup2 of the terminal",
    "the privilege drop",
    "chdir to the app source",
    "the signal reset",
    "execve",
];

fn setup(op: &'static str) -> impl FnOnce(Errno) -> PtyError {
    move |source| PtyError::Setup { op, source }
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer and reads nothing through pointers.
    unsafe { libc::isatty(fd) == 1 }
}

/// Which of stdin, stdout and stderr are terminals.
fn terminals() -> [bool; 3] {
    [is_tty(0), is_tty(1), is_tty(2)]
}

/// True when any of stdin, stdout or stderr is a terminal: the case a pty is for.
pub fn caller_has_terminal() -> bool {
    terminals().contains(&true)
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only used for the standard streams, which stay open for the life of the
    // process.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// The caller's window size, from the first standard stream that is a terminal.
fn window_size() -> Option<libc::winsize> {
    for fd in [0, 1, 2] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid, writable `ws`.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 {
            return Some(ws);
        }
    }
    None
}

/// Puts the caller's terminal back as it was when dropped: on return, error or unwind.
struct RawMode(Option<Termios>);

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // At once: a terminal that takes no output must not hold the way out.
            let _ = termios::tcsetattr(borrow(0), SetArg::TCSANOW, saved);
        }
    }
}

/// Switch the caller's terminal on stdin to raw mode (keys go to the command's terminal
/// as typed; its own line discipline interprets them).
fn raw_mode(saved: Option<&Termios>) -> RawMode {
    let Some(saved) = saved else {
        return RawMode(None);
    };
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    if termios::tcsetattr(borrow(0), SetArg::TCSANOW, &raw).is_err() {
        return RawMode(None);
    }
    RawMode(Some(saved.clone()))
}

/// Restores the signal mask of the calling thread when dropped.
struct Mask(SigSet);

impl Drop for Mask {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Run `argv` with exactly `env` in `cwd`, as `target`, on a new pty in a new session;
/// the caller's standard streams that are terminals are relayed through it, the others
/// are the command's own. Returns the exit status as a shell reports it (the code, or
/// 128 + the signal).
pub fn run(
    argv: &[String],
    env: &[(&str, &str)],
    cwd: &Path,
    target: &Target,
) -> Result<i32, PtyError> {
    use std::os::unix::ffi::OsStrExt;
    let (cargs, cenv) = crate::exec::c_strings(argv, env).ok_or(PtyError::Nul)?;
    let ccwd = CString::new(cwd.as_os_str().as_bytes()).map_err(|_| PtyError::Nul)?;
    let mut argp: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.0.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let ttys = terminals();
    // The command's terminal starts with the caller's settings (erase key, flow control).
    let caller_mode = if ttys[0] {
        termios::tcgetattr(borrow(0)).ok()
    } else {
        None
    };
    let pty = nix::pty::openpty(window_size().as_ref(), caller_mode.as_ref())
        .map_err(setup("open a pty"))?;
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;

    // The command's end, window changes and stop signals arrive through a signalfd, so
    // they are handled in the relay loop. SIGCHLD must not be ignored, or the kernel
    // reaps the command before its status is read.
    // SAFETY: installing SIG_DFL runs no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) }
        .map_err(setup("reset SIGCHLD"))?;
    let mut handled = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGWINCH,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        handled.add(s);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), Some(&mut old_mask))
        .map_err(setup("block signals"))?;
    let _mask = Mask(old_mask);
    let signals = SignalFd::with_flags(&handled, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(setup("create a signalfd"))?;

    let (slave, master) = (pty.slave.as_raw_fd(), pty.master.as_raw_fd());
    let err_fd = err_write.as_raw_fd();
    // SAFETY: the launcher is single-threaded here (manage starts no threads), and the
    // child below calls only async-signal-safe functions on memory prepared before the
    // fork until it execs or _exits.
    match unsafe { nix::unistd::fork() }.map_err(setup("fork"))? {
        ForkResult::Child => child(ChildSpec {
            slave,
            master,
            err_fd,
            ttys,
            argp: &argp,
            envp: &envp,
            cwd: &ccwd,
            target,
        }),
        ForkResult::Parent { child } => {
            drop(err_write);
            drop(pty.slave);
            if let Some(e) = started(child, &err_read) {
                return Err(e);
            }
            let master = pty.master;
            nix::fcntl::fcntl(
                master.as_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(setup("make the pty non-blocking"))?;
            let _raw = raw_mode(caller_mode.as_ref());
            Relay::new(child, master, ttys).run(&signals)
        }
    }
}

struct ChildSpec<'a> {
    slave: RawFd,
    master: RawFd,
    err_fd: RawFd,
    ttys: [bool; 3],
    argp: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    cwd: &'a CString,
    target: &'a Target,
}

/// The child between fork and exec. Never returns.
fn child(c: ChildSpec<'_>) -> ! {
    let fail = |step: u8| -> ! {
        let errno = Errno::last() as i32;
        let mut msg = [0u8; 5];
        msg[0] = step;
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write and _exit are async-signal-safe; msg is valid for 5 bytes.
        unsafe {
            libc::write(c.err_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: each call below is async-signal-safe and takes integers or pointers to
    // memory prepared before the fork (argp and envp are NULL-terminated arrays of
    // pointers into CStrings the parent keeps alive; the child never returns).
    unsafe {
        libc::close(c.master);
        if libc::setsid() < 0 {
            fail(0);
        }
        if libc::ioctl(c.slave, libc::TIOCSCTTY, 0) < 0 {
            fail(1);
        }
        for fd in 0..=2 {
            // A stream that is not a terminal (pipe, file) stays the caller's.
            if c.ttys[fd as usize] && libc::dup2(c.slave, fd) < 0 {
                fail(2);
            }
        }
        if c.slave > 2 {
            libc::close(c.slave);
        }
    }
    if drop_to(c.target).is_err() {
        fail(3);
    }
    // SAFETY: chdir reads the NUL-terminated path prepared before the fork.
    if unsafe { libc::chdir(c.cwd.as_ptr()) } < 0 {
        fail(4);
    }
    // Nothing blocked or ignored reaches the command (the parent blocks its relay's
    // signals; Rust ignores SIGPIPE).
    if crate::signals::defaults_for_exec().is_err() {
        fail(5);
    }
    // Nothing the launcher inherited reaches the command; the error pipe is close-on-exec.
    if crate::fds::close_at_exec(0..0).is_err() {
        fail(6);
    }
    // SAFETY: argp and envp are NULL-terminated arrays of valid C strings (see above).
    unsafe {
        libc::execve(c.argp[0], c.argp.as_ptr(), c.envp.as_ptr());
    }
    fail(6)
}

/// Did the child reach exec? The pipe closes on exec, or carries step + errno.
fn started(child: Pid, err_read: &OwnedFd) -> Option<PtyError> {
    let mut msg = [0u8; 5];
    let n = loop {
        match nix::unistd::read(err_read, &mut msg) {
            Err(Errno::EINTR) => continue,
            other => break other.unwrap_or(0),
        }
    };
    if n != 5 {
        return None;
    }
    let _ = waitpid(child, None);
    let step = CHILD_STEPS.get(usize::from(msg[0])).copied().unwrap_or("?");
    let errno = Errno::from_raw(i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]));
    Some(PtyError::Child { step, errno })
}

/// Shell-style status: the code, or 128 + the signal.
fn shell_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The bytes between the caller's terminal and the command's.
struct Relay {
    child: Pid,
    master: OwnedFd,
    master_open: bool,
    /// The caller's terminal the command's output goes to.
    output: Output,
    /// Reading the caller's stdin (a terminal) into `input`.
    stdin_open: bool,
    input: Vec<u8>,
    /// The first stop signal passed on, and when the command is killed if still there.
    stopping: Option<(Signal, Instant)>,
}

impl Relay {
    fn new(child: Pid, master: OwnedFd, ttys: [bool; 3]) -> Relay {
        Relay {
            child,
            master,
            master_open: true,
            output: Output::open([1, 2, 0].into_iter().find(|&fd| ttys[fd as usize])),
            stdin_open: ttys[0],
            input: Vec::with_capacity(INPUT_BUFFER),
            stopping: None,
        }
    }

    fn run(mut self, signals: &SignalFd) -> Result<i32, PtyError> {
        let mut buf = vec![0u8; 16 * 1024];
        // Once the command has ended: its status, and whether what it wrote has been read.
        let mut ended: Option<i32> = None;
        let mut drained = false;
        let mut drain_left = DRAIN_LIMIT;
        loop {
            if let Some(status) = ended {
                // After a stop signal nothing waits for a terminal that takes no output.
                if self.stopping.is_some() {
                    self.output.flush();
                    return Ok(status);
                }
                // The rest of what the command wrote, bounded: something it left behind
                // may go on writing to its terminal.
                if !drained {
                    let room = self.output.room().min(drain_left).min(buf.len());
                    if room > 0 {
                        match nix::unistd::read(&self.master, &mut buf[..room]) {
                            Ok(n) if n > 0 => {
                                drain_left -= n;
                                self.output.push(&buf[..n]);
                            }
                            _ => drained = true,
                        }
                    }
                    drained |= drain_left == 0;
                }
                if drained && self.output.is_empty() {
                    return Ok(status);
                }
            }

            let timeout = match self.stopping {
                Some((_, kill_at)) => {
                    let left = kill_at.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::ZERO)
                }
                None if ended.is_some() && !drained && !self.output.is_full() => PollTimeout::ZERO,
                None => PollTimeout::NONE,
            };
            let running = ended.is_none();
            let read_input = running
                && self.stdin_open
                && self.stopping.is_none()
                && self.input.len() < INPUT_BUFFER;
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            // A closed side is left out: poll would report its hang-up again and again.
            // So is the pty while the caller's terminal takes no more output: the command
            // then waits, as it would on a terminal of its own.
            let mut master_events = PollFlags::empty();
            if running && self.master_open {
                if !self.output.is_full() {
                    master_events |= PollFlags::POLLIN;
                }
                if !self.input.is_empty() {
                    master_events |= PollFlags::POLLOUT;
                }
            }
            let master_at = (!master_events.is_empty()).then(|| {
                fds.push(PollFd::new(self.master.as_fd(), master_events));
                fds.len() - 1
            });
            let stdin_at = read_input.then(|| {
                fds.push(PollFd::new(borrow(0), PollFlags::POLLIN));
                fds.len() - 1
            });
            let output_at = self.output.waiting().map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLOUT));
                fds.len() - 1
            });
            match poll(&mut fds, timeout) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(setup("poll")(e)),
                Ok(_) => {}
            }
            let revents = |at: Option<usize>| {
                at.and_then(|i| fds[i].revents())
                    .unwrap_or(PollFlags::empty())
            };
            let (sig_ev, master_ev, stdin_ev, output_ev) = (
                revents(Some(0)),
                revents(master_at),
                revents(stdin_at),
                revents(output_at),
            );
            drop(fds);

            if let Some((signal, kill_at)) = self.stopping {
                if Instant::now() >= kill_at {
                    // Past the grace period: the command and what it started on its
                    // terminal go now; SIGCHLD follows.
                    let _ = nix::sys::signal::killpg(self.child, Signal::SIGKILL);
                    let _ = nix::sys::signal::kill(self.child, Signal::SIGKILL);
                    self.stopping = Some((signal, Instant::now() + Duration::from_secs(3600)));
                }
            }
            if sig_ev.contains(PollFlags::POLLIN) {
                if let Some(status) = self.signals(signals)? {
                    ended = Some(status);
                }
            }
            if !output_ev.is_empty() {
                self.output.flush();
            }
            let readable = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
            if master_ev.intersects(readable) && !self.output.is_full() {
                self.relay_output(&mut buf)?;
            }
            if master_ev.contains(PollFlags::POLLOUT) {
                self.feed_input()?;
            }
            if stdin_ev.intersects(readable) {
                self.read_keys(&mut buf);
            }
        }
    }

    /// Handle what the signalfd holds; `Some(status)` once the command has ended.
    fn signals(&mut self, signals: &SignalFd) -> Result<Option<i32>, PtyError> {
        let mut ended = None;
        while let Ok(Some(info)) = signals.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(status) => ended = ended.or(shell_status(status)),
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(setup("wait for the command")(e)),
                },
                Signal::SIGWINCH => {
                    if let Some(ws) = window_size() {
                        // SAFETY: TIOCSWINSZ reads one winsize from the valid `ws`.
                        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                    }
                }
                stop => {
                    // To the command's process group and to whatever runs in the
                    // foreground of its terminal, as a hang-up of a real terminal would.
                    let _ = nix::sys::signal::killpg(self.child, stop);
                    if let Ok(fg) = nix::unistd::tcgetpgrp(self.master.as_fd()) {
                        if fg != self.child {
                            let _ = nix::sys::signal::killpg(fg, stop);
                        }
                    }
                    if self.stopping.is_none() {
                        self.stopping = Some((stop, Instant::now() + STOP_GRACE));
                    }
                }
            }
        }
        Ok(ended)
    }

    /// Read what the command wrote into the output buffer.
    fn relay_output(&mut self, buf: &mut [u8]) -> Result<(), PtyError> {
        let room = self.output.room().min(buf.len());
        match nix::unistd::read(&self.master, &mut buf[..room]) {
            // EIO: no process holds the command's terminal any more.
            Ok(0) | Err(Errno::EIO) => self.master_open = false,
            Ok(n) => self.output.push(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(setup("read the pty")(e)),
        }
        Ok(())
    }

    /// Hand buffered input to the command's terminal, as much as it takes now.
    fn feed_input(&mut self) -> Result<(), PtyError> {
        match nix::unistd::write(&self.master, &self.input) {
            Ok(n) => {
                self.input.drain(..n);
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            // The command's side is gone; what was typed has no reader.
            Err(Errno::EIO) => self.input.clear(),
            Err(e) => return Err(setup("write to the pty")(e)),
        }
        Ok(())
    }

    /// Read the caller's keys into the input buffer; at its end, pass end-of-file on.
    fn read_keys(&mut self, buf: &mut [u8]) {
        let room = INPUT_BUFFER.saturating_sub(self.input.len()).min(buf.len());
        match nix::unistd::read(borrow(0), &mut buf[..room]) {
            Ok(0) | Err(Errno::EIO) => {
                self.stdin_open = false;
                // The command's terminal's end-of-file character (Ctrl-D by default).
                let eof = termios::tcgetattr(self.master.as_fd())
                    .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
                    .unwrap_or(4);
                self.input.push(eof);
            }
            Ok(n) => self.input.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.stdin_open = false,
        }
    }
}

/// The caller's terminal as the relay writes to it: a description of its own, opened
/// non-blocking, with a bounded buffer in front. A terminal that stops taking output
/// (Ctrl-S, a stalled connection) then holds back the command, never the relay, which
/// goes on handling stop signals. The caller's own descriptor, shared with its shell,
/// stays as it was; only if the terminal cannot be opened again is it written to,
/// blocking.
struct Output {
    to: Option<Writer>,
    pending: Vec<u8>,
}

enum Writer {
    Own(OwnedFd),
    Shared(RawFd),
}

impl Output {
    fn open(fd: Option<RawFd>) -> Output {
        use std::os::unix::fs::OpenOptionsExt;
        let to = fd.map(|fd| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(format!("/proc/self/fd/{fd}"))
                .ok()
                .filter(|file| is_tty(file.as_raw_fd()))
                .map_or(Writer::Shared(fd), |file| Writer::Own(file.into()))
        });
        Output {
            to,
            pending: Vec::with_capacity(OUTPUT_BUFFER),
        }
    }

    fn room(&self) -> usize {
        OUTPUT_BUFFER.saturating_sub(self.pending.len())
    }

    fn is_full(&self) -> bool {
        self.room() == 0
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The descriptor to wait on for room, while output waits.
    fn waiting(&self) -> Option<BorrowedFd<'_>> {
        match &self.to {
            Some(Writer::Own(fd)) if !self.pending.is_empty() => Some(fd.as_fd()),
            _ => None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        match &self.to {
            Some(Writer::Own(_)) => {
                self.pending.extend_from_slice(data);
                self.flush();
            }
            Some(Writer::Shared(fd)) => write_all(*fd, data),
            None => {}
        }
    }

    /// Write as much as the terminal takes now.
    fn flush(&mut self) {
        while !self.pending.is_empty() {
            let Some(Writer::Own(fd)) = &self.to else {
                return;
            };
            match nix::unistd::write(fd, &self.pending) {
                Ok(0) | Err(Errno::EAGAIN) => return,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                // The terminal is gone (hung up): nothing more can be shown.
                Err(_) => {
                    self.pending.clear();
                    self.to = None;
                }
            }
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(borrow(fd), data) {
            Ok(0) => return,
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

impl From<PtyError> for io::Error {
    fn from(e: PtyError) -> io::Error {
        io::Error::other(e.to_string())
    }
}
