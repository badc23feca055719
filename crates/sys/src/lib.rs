//! Everything the launcher asks of the kernel: accounts, the data directory tree, secret
//! files, the privilege drop, inherited descriptors and exec.
//!
//! This is the only crate of the workspace that may contain `unsafe`; each block carries a
//! `SAFETY:` comment. Functions here do one system-level thing each and report failures as
//! typed errors naming the path, user or call involved. They make no policy decisions
//! beyond the safety rules they enforce (no symlink following inside the data directory,
//! no chown of a tree owned by someone else); what to do is decided by the caller.

pub mod account;
pub mod exec;
pub mod fds;
pub mod files;
pub mod privs;
pub mod tree;

pub use nix::unistd::{Gid, Uid};

/// True when the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fill `buf` from the kernel's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Number of threads of this process, from /proc/self/status.
pub fn thread_count() -> std::io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no Threads: line in /proc/self/status"))
}

/// Put SIGTERM and SIGINT back to their default action (terminate). The preparation's
/// async runtime installed handlers for them that outlive it; between its end and the
/// exec of the server a stop request must still stop the launcher, not be swallowed.
pub fn default_stop_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: installing SIG_DFL runs no handler code, so no async-signal-safety
        // requirement applies; the previous handler is not used afterwards.
        unsafe { signal(sig, SigHandler::SigDfl) }?;
    }
    Ok(())
}

/// End the process by `signal` with its default action, so the service manager sees a
/// death by that signal (for SIGTERM: a clean stop) rather than an exit status. Returns
/// only if the signal did not end the process.
pub fn die_of_signal(signal: i32) {
    use nix::sys::signal::{SigHandler, SigSet, Signal, raise, signal as set_handler};
    let Ok(sig) = Signal::try_from(signal) else {
        return;
    };
    // SAFETY: installing SIG_DFL runs no handler code.
    if unsafe { set_handler(sig, SigHandler::SigDfl) }.is_err() {
        return;
    }
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    let _ = raise(sig);
}

#[cfg(test)]
mod tests;
