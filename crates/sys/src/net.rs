//! Connecting to a local server's Unix socket as the service user.
//!
//! PostgreSQL's peer authentication (the usual setup of a local database, NixOS's
//! `ensureDBOwnership` among them) maps the connecting process's uid to the role. The
//! kernel records a Unix socket client's credentials when it connects (SO_PEERCRED: its
//! effective uid and gid), so root connects with the service user's effective ids for
//! that one call and takes its own back at once: the connection is the service user's,
//! as the app's will be, while nothing else of the process changes.
//!
//! During the call the real and saved uid stay root's: the service user can neither
//! signal nor trace the process (changing ids also makes it non-dumpable).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::unistd::{Gid, Uid, getegid, geteuid, setegid, seteuid};

/// Connect to the Unix socket at `path`; with `as_ids`, with those effective ids (only
/// when running as root; otherwise as the process is).
pub fn connect_unix_as(path: &Path, as_ids: Option<(Uid, Gid)>) -> io::Result<UnixStream> {
    let (euid, egid) = (geteuid(), getegid());
    let switch = match as_ids {
        Some((uid, gid)) if euid.is_root() && (uid, gid) != (euid, egid) => Some((uid, gid)),
        _ => None,
    };
    let Some((uid, gid)) = switch else {
        return UnixStream::connect(path);
    };
    // The group first: once the uid is not root's, the gid cannot be changed.
    setegid(gid)?;
    if let Err(e) = seteuid(uid) {
        restore(euid, egid);
        return Err(e.into());
    }
    let stream = UnixStream::connect(path);
    restore(euid, egid);
    stream
}

/// Take back root's effective ids. The saved uid is root's, so this cannot fail; if it
/// ever did, the process would go on with the wrong identity, so it stops instead.
fn restore(euid: Uid, egid: Gid) {
    if seteuid(euid).is_err() || setegid(egid).is_err() {
        eprintln!("bitpoll-launcher: cannot restore the effective ids after a socket connect");
        std::process::abort();
    }
}
