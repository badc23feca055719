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
//! The child side between fork and exec uses raw, async-signal-safe calls only: every
//! buffer it needs (argv, envp, the directory) is built before the fork.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::privs::{Target, drop_to};

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
const CHILD_STEPS: [&str; 6] = [
    "setsid",
    "TIOCSCTTY",
    "dup2 of the terminal",
    "the privilege drop",
    "chdir to the app source",
    "execve",
];

fn setup(op: &'static str) -> impl FnOnce(Errno) -> PtyError {
    move |source| PtyError::Setup { op, source }
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer and reads nothing through pointers.
    unsafe { libc::isatty(fd) == 1 }
}

/// True when any of stdin, stdout or stderr is a terminal: the case a pty is for.
pub fn caller_has_terminal() -> bool {
    (0..=2).any(is_tty)
}

/// The caller's window size, when stdin or stdout is a terminal.
fn window_size() -> Option<libc::winsize> {
    for fd in [0, 1] {
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

/// Puts the caller's terminal back as it was, also on an early return.
struct RawMode(Option<Termios>);

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: fd 0 stays open for the life of the process.
            let stdin = unsafe { BorrowedFd::borrow_raw(0) };
            let _ = termios::tcsetattr(stdin, SetArg::TCSADRAIN, saved);
        }
    }
}

fn raw_mode() -> RawMode {
    if !is_tty(0) {
        return RawMode(None);
    }
    // SAFETY: fd 0 stays open for the life of the process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let Ok(saved) = termios::tcgetattr(stdin) else {
        return RawMode(None);
    };
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    if termios::tcsetattr(stdin, SetArg::TCSADRAIN, &raw).is_err() {
        return RawMode(None);
    }
    RawMode(Some(saved))
}

/// Run `argv` with exactly `env` in `cwd`, as `target`, on a new pty in a new session.
/// Returns the exit status as a shell reports it (the code, or 128 + the signal).
pub fn run(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    target: &Target,
) -> Result<i32, PtyError> {
    use std::os::unix::ffi::OsStrExt;
    let (cargs, cenv) = crate::exec::c_strings(argv, env).ok_or(PtyError::Nul)?;
    let ccwd = CString::new(cwd.as_os_str().as_bytes()).map_err(|_| PtyError::Nul)?;
    let mut argp: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let pty = nix::pty::openpty(window_size().as_ref(), None).map_err(setup("open a pty"))?;
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;

    // Stop signals and window changes arrive through a signalfd, so they are forwarded
    // in the relay loop; the child gets the old mask back before exec.
    let mut forwarded = SigSet::empty();
    for s in [
        Signal::SIGWINCH,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        forwarded.add(s);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask))
        .map_err(setup("block signals"))?;
    let signals = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(setup("create a signalfd"))?;

    let (slave, master) = (pty.slave.as_raw_fd(), pty.master.as_raw_fd());
    let err_fd = err_write.as_raw_fd();
    // SAFETY: the launcher is single-threaded here (manage starts no threads), and the
    // child below calls only async-signal-safe functions on memory prepared before the
    // fork until it execs or _exits.
    match unsafe { nix::unistd::fork() }.map_err(setup("fork"))? {
        ForkResult::Child => {
            child(ChildSpec {
                slave,
                master,
                err_fd,
                argp: &argp,
                envp: &envp,
                cwd: &ccwd,
                target,
                old_mask: &old_mask,
            });
        }
        ForkResult::Parent { child } => {
            drop(err_write);
            drop(pty.slave);
            let result = parent(child, pty.master, err_read, &signals);
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            result
        }
    }
}

struct ChildSpec<'a> {
    slave: RawFd,
    master: RawFd,
    err_fd: RawFd,
    argp: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    cwd: &'a CString,
    target: &'a Target,
    old_mask: &'a SigSet,
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
            if libc::dup2(c.slave, fd) < 0 {
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
    // Nothing the launcher inherited reaches the command; the error pipe is close-on-exec.
    if crate::fds::close_at_exec(0..0).is_err() {
        fail(5);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(c.old_mask), None);
    // SAFETY: argp and envp are NULL-terminated arrays of valid C strings (see above).
    unsafe {
        libc::execve(c.argp[0], c.argp.as_ptr(), c.envp.as_ptr());
    }
    fail(5)
}

/// Relay between the caller and the pty until the child is gone; return its status.
fn parent(
    child: Pid,
    master: OwnedFd,
    err_read: OwnedFd,
    signals: &SignalFd,
) -> Result<i32, PtyError> {
    // Did the child reach exec? The pipe closes on exec, or carries step + errno.
    let mut msg = [0u8; 5];
    let n = nix::unistd::read(&err_read, &mut msg).unwrap_or(0);
    if n == 5 {
        let _ = waitpid(child, None);
        let step = CHILD_STEPS.get(usize::from(msg[0])).copied().unwrap_or("?");
        let errno = Errno::from_raw(i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]));
        return Err(PtyError::Child { step, errno });
    }
    let _raw = raw_mode();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(setup("poll")(e)),
            Ok(_) => {}
        }
        let ready = |i: usize| {
            fds[i].revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (master_ready, signal_ready, stdin_ready) =
            (ready(0), ready(1), stdin_open && ready(2));
        drop(fds);
        if master_ready {
            match nix::unistd::read(&master, &mut buf) {
                // EIO: the pty's other side is closed, the command is gone.
                Ok(0) | Err(Errno::EIO) => break,
                Ok(n) => write_all(1, &buf[..n]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(setup("read the pty")(e)),
            }
        }
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Some(ws) = window_size() {
                        // SAFETY: TIOCSWINSZ reads one winsize from the valid `ws`.
                        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                    }
                } else if let Ok(s) = Signal::try_from(sig) {
                    let _ = nix::sys::signal::kill(child, s);
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => write_all(master.as_raw_fd(), &buf[..n]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(e) => return Err(setup("wait for the command")(e)),
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: fd stays open; data is a valid slice.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(fd, data) {
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
