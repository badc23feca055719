//! Everything the launcher asks of the kernel: accounts, the data directory tree, secret
//! files, reading root's files under the trust rule, the privilege drop, inherited
//! descriptors and exec.
//!
//! This is the only crate of the workspace that may contain `unsafe`; each block carries a
//! `SAFETY:` comment. Functions here do one system-level thing each and report failures as
//! typed errors naming the path, user or call involved. They make no policy decisions
//! beyond the safety rules they enforce (no symlink following inside the data directory,
//! no chown of a tree owned by someone else); what to do is decided by the caller.

pub mod account;
pub mod child;
pub mod exec;
pub mod fds;
pub mod files;
pub mod net;
pub mod privs;
pub mod pty;
pub mod session;
pub mod signals;
pub mod stand_in;
pub mod tree;
pub mod trust;

pub use nix::unistd::{Gid, Uid};
pub use signals::{StopSignal, default_stop_signals, die_of_signal};

/// True when the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fill `buf` from the kernel's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// This machine's host name, for the name the launcher gives itself in PostgreSQL and
/// in lock files ("?" when it cannot be read).
pub fn hostname() -> String {
    // The UTS namespace's name, as uname(2) reports it.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Reap every child of this process that has exited, except `keep` (a child whose
/// status its owner collects itself). Only PID 1 (a container's init) needs this: the
/// kernel makes it the parent of every orphaned process in its PID namespace, and an
/// unreaped one stays a zombie. Children are found in /proc (each /proc/N/stat whose
/// parent is this process and whose state is Z), so no status is taken from a child
/// someone else waits for. Returns the PIDs reaped.
pub fn reap_zombies(keep: &[u32]) -> Vec<i32> {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if keep.contains(&(pid as u32)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<i32>().ok()),
        );
        if state == Some("Z") && ppid == Some(me) {
            if let Ok(status) = waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
            {
                if status.pid().is_some() {
                    reaped.push(pid);
                }
            }
        }
    }
    reaped
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

/// Make this process non-dumpable and give it no room for a core file: no core (which
/// would hold the secrets read as root) and no ptrace or /proc/PID/mem access by the user
/// it acts as or hands the app to, from the start of `run`, `check` and `manage` until
/// exec. Every change of ids resets the dumpable flag to the system's `fs.suid_dumpable`,
/// so the identity seam (privs::Identity) sets it again after each switch; the core size
/// limit stays 0 throughout (only its soft value: the server may raise it again). exec of
/// the server resets the flag as the kernel does for any unprivileged program.
pub fn no_core_dumps() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed to the kernel.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, writable `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    lim.rlim_cur = 0;
    // SAFETY: setrlimit reads the valid `lim`.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
