//! Connecting to a local server's Unix socket as the service user, without blocking.
//!
//! PostgreSQL's peer authentication (the usual setup of a local database, NixOS's
//! `ensureDBOwnership` among them) maps the connecting process's uid to the role. The
//! kernel records a Unix socket client's credentials when it connects (SO_PEERCRED: its
//! effective uid and gid), so root connects with the service user's identity for that one
//! call (through the [`Identity`] seam, which puts root back right after) and the
//! connection is the service user's, as the app's will be.
//!
//! The socket is non-blocking from the start: a connect to a listener whose backlog is full
//! fails at once (EAGAIN) instead of blocking the launcher's runtime, and the caller tries
//! again later, as after any refused attempt. During the call the real and saved uid stay
//! root's: the service user can neither signal nor trace the process.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use crate::privs::{Identity, Ids, Kernel};

/// Connect to the Unix socket at `path`, non-blocking; with `as_user`, with that identity
/// (only when the process may switch; otherwise as the process is).
pub fn connect_unix_as<K: Kernel>(
    ids: &mut Identity<K>,
    path: &Path,
    as_user: Option<Ids>,
) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let connected = match as_user {
        Some(user) if ids.privileged() && *ids.current() != user => {
            let _as_user = ids.act_as(user).map_err(io::Error::other)?;
            connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        }
        _ => connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr),
    };
    connected.map_err(io::Error::from)?;
    Ok(UnixStream::from(fd))
}
