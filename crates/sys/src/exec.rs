//! Replace the launcher with the server: same PID, new program, environment from scratch.

use std::ffi::CString;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("argument or environment contains a NUL byte")]
    Nul,
    #[error("cannot pass socket fd {fd} to the server: {source}")]
    PassFd { fd: i32, source: Errno },
    #[error("cannot execute {program}: {source}")]
    Exec { program: String, source: Errno },
}

/// First file descriptor passed by systemd socket activation.
const SD_LISTEN_FDS_START: i32 = 3;

/// Most sockets systemd may pass; more is not a socket unit of ours.
const MAX_LISTEN_FDS: i32 = 64;

/// The descriptors systemd passed by socket activation (`LISTEN_FDS`), when they are meant
/// for this PID (`LISTEN_PID`); empty otherwise.
fn listen_fds(get: impl Fn(&str) -> Option<String>) -> std::ops::Range<i32> {
    let (Some(pid), Some(n)) = (get("LISTEN_PID"), get("LISTEN_FDS")) else {
        return 0..0;
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return 0..0;
    }
    let n: i32 = n.parse().unwrap_or(0).clamp(0, MAX_LISTEN_FDS);
    SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n
}

fn set_cloexec(fd: i32, on: bool) -> Result<(), ExecError> {
    // SAFETY: the descriptor is one systemd passed (LISTEN_PID is ours) and stays open for
    // the lifetime of the borrow, which ends with this call. fcntl on a descriptor that was
    // closed meanwhile fails with EBADF, which is reported.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(|source| ExecError::PassFd { fd, source })
}

/// Keep the sockets systemd passed (socket activation) from every process the launcher
/// starts before the server: systemd hands them over without close-on-exec, and the
/// preparation child (the app's code, running migrations) has no business with the
/// listening socket. [`exec`] clears the flag again for the server. Call it first thing,
/// with this process's environment. Returns how many sockets were passed.
pub fn hold_listen_fds() -> Result<usize, ExecError> {
    let fds = listen_fds(|k| std::env::var(k).ok());
    let n = fds.len();
    for fd in fds {
        set_cloexec(fd, true)?;
    }
    Ok(n)
}

/// Clear close-on-exec on the sockets systemd passed (LISTEN_FDS), when they are meant for
/// this PID (LISTEN_PID), so the server inherits them.
fn pass_listen_fds(env: &[(String, String)]) -> Result<(), ExecError> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for fd in listen_fds(get) {
        set_cloexec(fd, false)?;
    }
    Ok(())
}

/// exec `argv` with exactly `env`. Returns only on failure.
pub fn exec(argv: &[String], env: &[(String, String)]) -> ExecError {
    match exec_inner(argv, env) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn exec_inner(
    argv: &[String],
    env: &[(String, String)],
) -> Result<std::convert::Infallible, ExecError> {
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| ExecError::Nul)?;
    let cenv: Vec<CString> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| ExecError::Nul)?;
    pass_listen_fds(env)?;
    nix::unistd::execve(&cargs[0], &cargs, &cenv).map_err(|source| ExecError::Exec {
        program: argv[0].clone(),
        source,
    })
}
