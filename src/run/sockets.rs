//! The sockets systemd passed (socket activation: LISTEN_PID, LISTEN_FDS) are looked at
//! before anything else: the server gets each descriptor as the service user, so only a
//! listening Unix or TCP stream socket may reach it (either, whatever the server's --bind
//! names: the passed sockets replace it). Anything else (a root-only file left on fd 3 by
//! whoever started the launcher, a number of descriptors that were never passed) stops
//! the start here, with status 2, before any preparation.

use anyhow::anyhow;

use launcher_sys::fds::{Passed, passed};

use crate::exit::{self, Exit};

/// systemd's first passed descriptor.
const FIRST: i32 = 3;
/// More than any server listens on.
const MAX_PASSED: usize = 64;

/// The number of sockets passed for this process (0 when none are, or they are for
/// another PID), or the refusal.
pub(super) fn verify() -> Result<usize, Exit> {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(pid), Some(count)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return Ok(0);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(0);
    }
    let fix = "start the service through its socket unit (`bitpoll-launcher unit --socket-unit`), or do not set LISTEN_PID and LISTEN_FDS";
    let refuse = |what: String| Err(Exit::new(exit::CONFIG, anyhow!("{what}; fix: {fix}")));
    let n = match count.trim().parse::<usize>() {
        Ok(n) if n <= MAX_PASSED => n,
        _ => {
            return refuse(format!(
                "LISTEN_FDS={count:?} is not a number of passed sockets (at most {MAX_PASSED})"
            ));
        }
    };
    for fd in FIRST..FIRST + n as i32 {
        let what = match passed(fd) {
            Passed::Closed => "not open".to_string(),
            Passed::NotASocket => "not a socket".to_string(),
            Passed::Socket { stream: false, .. } => "not a stream socket".to_string(),
            Passed::Socket {
                listening: false, ..
            } => "a socket that does not listen".to_string(),
            // The passed sockets replace the server's --bind (the socket unit's
            // ListenStream= may be a path while the configuration binds host:port).
            Passed::Socket {
                family: nix::libc::AF_UNIX | nix::libc::AF_INET | nix::libc::AF_INET6,
                ..
            } => continue,
            Passed::Socket { family, .. } => {
                format!("a socket of address family {family}, neither Unix nor TCP")
            }
        };
        return refuse(format!(
            "descriptor {fd} was passed as a listening socket (LISTEN_FDS={n}), but it is {what}: the server would get it as the service user"
        ));
    }
    Ok(n)
}
