//! Sessions and controlling terminals: no program that runs the app's code may hold the
//! terminal of the admin who started the launcher.
//!
//! A process whose controlling terminal is the admin's can open `/dev/tty` (it resolves to
//! that terminal whatever its own descriptors are), read the admin's keys, and, where the
//! kernel allows TIOCSTI (`dev.tty.legacy_tiocsti = 1`), push characters into the
//! terminal's input that the admin's root shell reads as a command once the launcher is
//! gone. The kernel refuses TIOCSTI to a process for any terminal that is not its
//! controlling one, so a process without a controlling terminal can do neither.
//!
//! Children are started in a session of their own ([`new_session_in_child`]: setsid
//! between fork and exec, which always succeeds in a fresh child). A program exec'd in
//! the launcher's place (the server, manage's command without a terminal) leaves the
//! terminal first ([`leave_controlling_terminal`]), since the process keeps its PID.

use std::os::unix::process::CommandExt;

use nix::errno::Errno;

/// How the launcher came to be without a controlling terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// It had none (a service, a container without `-t`, a redirected cron job).
    NoTerminal,
    /// It started a new session, which has no controlling terminal.
    NewSession,
    /// It was a process group leader (a shell's job) and gave its terminal up.
    Released,
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Left::NoTerminal => "it had none",
            Left::NewSession => "a session of its own",
            Left::Released => "the terminal given up",
        })
    }
}

/// Why the launcher could not leave its controlling terminal.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot open /dev/tty to leave the controlling terminal: {0}")]
    Open(Errno),
    #[error("cannot give up the controlling terminal (TIOCNOTTY): {0}")]
    NoTty(Errno),
    #[error("the controlling terminal is still reachable after giving it up")]
    StillAttached,
}

/// Open the controlling terminal without making anything the controlling terminal:
/// `Ok(None)` when the process has none (ENXIO).
fn open_controlling_terminal() -> Result<Option<std::os::fd::OwnedFd>, Errno> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    match open(
        "/dev/tty",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when this process has a controlling terminal.
pub fn has_controlling_terminal() -> bool {
    matches!(open_controlling_terminal(), Ok(Some(_)))
}

/// Make sure this process has no controlling terminal, keeping its PID, so that the
/// program it execs next cannot reach the terminal it was started from.
///
/// A new session (setsid) when the process may start one; otherwise (it leads a process
/// group, as a shell's job does, or already leads its session) it gives the terminal up
/// with TIOCNOTTY. A session leader doing so makes the kernel send SIGHUP and SIGCONT to
/// the terminal's foreground group, which is this process's own: that SIGHUP is discarded
/// (it announces exactly the hang-up this call makes). Verified afterwards: `/dev/tty`
/// no longer opens. The process stays in its process group, so a Ctrl-C on the terminal
/// still reaches the program it execs, and its standard streams stay what they are.
pub fn leave_controlling_terminal() -> Result<Left, SessionError> {
    // SAFETY: setsid takes no arguments and changes only this process's session.
    if unsafe { libc::setsid() } >= 0 {
        return Ok(Left::NewSession);
    }
    let Some(tty) = open_controlling_terminal().map_err(SessionError::Open)? else {
        return Ok(Left::NoTerminal);
    };
    // SAFETY: getsid and getpid take integers only.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    let ignore_hup = || {
        // SAFETY: a zeroed sigaction with SIG_IGN, on the stack for the duration of the
        // call; setting SIG_IGN also discards a SIGHUP already pending.
        unsafe {
            let mut ign: libc::sigaction = std::mem::zeroed();
            ign.sa_sigaction = libc::SIG_IGN;
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, &ign, &mut old);
            old
        }
    };
    let saved = leader.then(ignore_hup);
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCNOTTY takes no argument; `tty` is an open terminal descriptor.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCNOTTY) };
    let errno = Errno::last();
    if let Some(old) = saved {
        // A SIGHUP that stayed pending because it is blocked is discarded by setting
        // SIG_IGN once more; then the previous action comes back.
        ignore_hup();
        // SAFETY: restores the action saved above, which is valid sigaction memory.
        unsafe { libc::sigaction(libc::SIGHUP, &old, std::ptr::null_mut()) };
    }
    if rc != 0 {
        return Err(SessionError::NoTty(errno));
    }
    drop(tty);
    match open_controlling_terminal() {
        Ok(None) => Ok(Left::Released),
        Ok(Some(_)) => Err(SessionError::StillAttached),
        Err(e) => Err(SessionError::Open(e)),
    }
}

/// Have the child that `cmd` spawns start a session of its own, without a controlling
/// terminal, and with the signal state of [`crate::signals::defaults_for_exec`]. Register
/// it first: the hooks after it (the privilege drop) then run in the new session.
pub fn new_session_in_child(cmd: &mut std::process::Command) {
    let hook = || -> std::io::Result<()> {
        // SAFETY: setsid takes no arguments; a forked child never leads a process group,
        // so it succeeds.
        if unsafe { libc::setsid() } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        crate::signals::defaults_for_exec().map_err(std::io::Error::from)
    };
    // SAFETY: the closure runs in the forked child before exec and is async-signal-safe:
    // setsid and defaults_for_exec's raw sigaction/sigprocmask calls, no allocation
    // (io::Error from an errno value is stored inline).
    unsafe { cmd.pre_exec(hook) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_started_in_a_new_session_leads_it_and_has_no_terminal() {
        let mut cmd = Command::new("/bin/sh");
        // $$ is the shell's PID; `ps` is not needed: /proc/self/stat holds the session.
        cmd.arg("-c").arg(
            "read -r stat < /proc/self/stat; set -- ${stat##*) }; \
             echo \"pid=$$ sid=$4\"; \
             if (exec 3</dev/tty) 2>/dev/null; then echo tty; else echo notty; fi",
        );
        new_session_in_child(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let pid_sid = text.lines().next().unwrap();
        let (pid, sid) = pid_sid
            .strip_prefix("pid=")
            .and_then(|r| r.split_once(" sid="))
            .unwrap();
        assert_eq!(pid, sid, "{text}");
        assert!(text.contains("notty"), "{text}");
    }
}
