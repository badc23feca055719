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

/// Clear close-on-exec on the sockets systemd passed (LISTEN_FDS), when they are meant for
/// this PID (LISTEN_PID), so the server inherits them.
fn pass_listen_fds(env: &[(String, String)]) -> Result<(), ExecError> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(pid), Some(n)) = (get("LISTEN_PID"), get("LISTEN_FDS")) else {
        return Ok(());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(());
    }
    let n: i32 = n.parse().unwrap_or(0);
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(n) {
        // SAFETY: systemd passed these descriptors (LISTEN_PID is ours); they stay open for
        // the lifetime of the borrow, which ends before exec.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|source| ExecError::PassFd { fd, source })?;
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
