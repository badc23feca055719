//! Descriptors inherited from whoever started the launcher must not reach the server or
//! the preparation child: a root-only file the caller left open on fd 9 would otherwise be
//! readable by the app. Everything above stderr is closed at the next exec, except one
//! contiguous range the caller names (the LISTEN_FDS sockets for the server, a protocol
//! pipe for the preparation child).
//!
//! Descriptors are marked close-on-exec rather than closed on the spot: the effect at exec
//! is the same, but until then the launcher keeps its own (the journald socket that reports
//! a failed exec, and in a forked child the close-on-exec pipe through which
//! `std::process::Command` reports a failed `pre_exec` or exec: closing that one would make
//! `spawn` report success for a program that never started).
//!
//! Everything here is async-signal-safe (raw system calls, no allocation), for use between
//! fork and exec. This module decides nothing about which descriptors to keep.

use std::ops::Range;

use nix::errno::Errno;

/// The first descriptor above stdin, stdout and stderr.
const FIRST: i32 = 3;

/// Mark every descriptor >= 3 outside `keep` close-on-exec, so the next exec closes it;
/// descriptors in `keep` are left as they are. Async-signal-safe.
///
/// Uses close_range(2) with CLOSE_RANGE_CLOEXEC (Linux 5.11); on an older kernel (ENOSYS
/// before 5.9, EINVAL for the flag in 5.9 and 5.10) it walks every number below the
/// RLIMIT_NOFILE soft limit, skipping those not open.
pub fn close_at_exec(keep: Range<i32>) -> Result<(), Errno> {
    close_at_exec_by(keep, mark_range)
}

/// Arrange for every descriptor >= 3 outside `keep` to be closed when `cmd` execs.
/// Register it after any `pre_exec` hook that places descriptors in `keep`.
pub fn close_in_child(cmd: &mut std::process::Command, keep: Range<i32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls close_at_exec, which is async-signal-safe (raw
    // system calls, no allocation, no locks), as required between fork and exec; `keep` is
    // two integers copied into it.
    unsafe {
        cmd.pre_exec(move || close_at_exec(keep.clone()).map_err(std::io::Error::from));
    }
}

/// Mark [first, last] close-on-exec (inclusive, as close_range takes it).
type Mark = fn(libc::c_uint, libc::c_uint) -> Result<(), Errno>;

fn close_at_exec_by(keep: Range<i32>, mark: Mark) -> Result<(), Errno> {
    let lo = keep.start.max(FIRST);
    let hi = keep.end.max(lo);
    if lo > FIRST {
        mark(FIRST as libc::c_uint, (lo - 1) as libc::c_uint)?;
    }
    mark(hi as libc::c_uint, libc::c_uint::MAX)
}

fn mark_range(first: libc::c_uint, last: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: close_range with integer arguments only; with CLOSE_RANGE_CLOEXEC it closes
    // nothing, so no descriptor owned elsewhere in this process becomes invalid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            last,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        Err(Errno::ENOSYS | Errno::EINVAL) => mark_each(first, last),
        Err(e) => Err(e),
    }
}

/// The fallback: F_SETFD on every number in [first, last] below the RLIMIT_NOFILE soft
/// limit (no descriptor can be open at or above it unless the limit was lowered after it
/// was opened). EBADF: not open, nothing to do.
fn mark_each(first: libc::c_uint, last: libc::c_uint) -> Result<(), Errno> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid, writable, stack-allocated struct.
    Errno::result(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let end = lim.rlim_cur.min(i32::MAX as libc::rlim_t) as libc::c_uint;
    let mut fd = first;
    while fd <= last && fd < end {
        // SAFETY: fcntl F_GETFD/F_SETFD on a descriptor number: integer arguments only, and
        // setting FD_CLOEXEC closes nothing.
        let flags = unsafe { libc::fcntl(fd as libc::c_int, libc::F_GETFD) };
        match Errno::result(flags) {
            Ok(f) if f & libc::FD_CLOEXEC == 0 => {
                // SAFETY: as above.
                let rc =
                    unsafe { libc::fcntl(fd as libc::c_int, libc::F_SETFD, f | libc::FD_CLOEXEC) };
                match Errno::result(rc) {
                    Ok(_) | Err(Errno::EBADF) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(_) | Err(Errno::EBADF) => {}
            Err(e) => return Err(e),
        }
        fd += 1;
    }
    Ok(())
}

/// What a descriptor passed as a listening socket (LISTEN_FDS) really is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// Not open.
    Closed,
    /// Open, but not a socket (a file, a pipe, a terminal).
    NotASocket,
    /// A socket: its family (AF_*), whether it is a stream socket, and whether it listens.
    Socket {
        family: i32,
        stream: bool,
        listening: bool,
    },
}

/// Look at descriptor `fd` (read-only: fstat and getsockopt).
pub fn passed(fd: i32) -> Passed {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one stat into the valid, writable `st`.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Passed::Closed;
    }
    // SAFETY: fstat succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Passed::NotASocket;
    }
    let opt = |name: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the valid, writable `v`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    Passed::Socket {
        family: opt(libc::SO_DOMAIN).unwrap_or(-1),
        stream: opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM),
        listening: opt(libc::SO_ACCEPTCONN) == Some(1),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// A descriptor open in this process without close-on-exec, as a careless caller
    /// would leave it: a plain dup(2) of an open file.
    fn leaked() -> OwnedFd {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = nix::unistd::dup(&file).unwrap();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0, "dup leaves close-on-exec off");
        fd
    }

    /// Put a descriptor of /dev/null, without close-on-exec, on each number of `at` in the
    /// child before exec.
    fn place(cmd: &mut Command, at: Range<i32>) {
        // SAFETY: open and dup2 are async-signal-safe; the path is a static C string.
        unsafe {
            cmd.pre_exec(move || {
                for fd in at.clone() {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                    if null < 0 || libc::dup2(null, fd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if null != fd {
                        libc::close(null);
                    }
                }
                Ok(())
            });
        }
    }

    /// The descriptors open in the program `cmd` runs (cat), sorted.
    fn open_after_exec(mut cmd: Command) -> Vec<i32> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // cat echoing a line proves the exec happened: the listing is cat's, not the
        // forked launcher's (spawn may return earlier when a pre_exec hook replaced the
        // descriptor std reports exec failures through).
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"x\n").unwrap();
        let mut echo = [0u8; 2];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut echo)
            .unwrap();
        assert_eq!(&echo, b"x\n");
        let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        fds.sort_unstable();
        fds
    }

    fn cat() -> Command {
        Command::new("/bin/cat")
    }

    #[test]
    fn a_descriptor_leaked_without_close_on_exec_reaches_a_child_unless_closed() {
        let leak = leaked();
        let before = open_after_exec(cat());
        assert!(
            before.contains(&leak.as_raw_fd()),
            "without close_in_child fd {} is inherited: {before:?}",
            leak.as_raw_fd()
        );

        let mut cmd = cat();
        close_in_child(&mut cmd, 0..0);
        assert_eq!(open_after_exec(cmd), [0, 1, 2]);
    }

    #[test]
    fn the_kept_range_survives_and_nothing_else_above_stderr() {
        let _leak = leaked();
        let mut cmd = cat();
        place(&mut cmd, 3..5);
        close_in_child(&mut cmd, 3..5);
        assert_eq!(open_after_exec(cmd), [0, 1, 2, 3, 4]);

        let mut cmd = cat();
        place(&mut cmd, 40..42);
        close_in_child(&mut cmd, 40..42);
        assert_eq!(
            open_after_exec(cmd),
            [0, 1, 2, 40, 41],
            "a range away from 3 keeps descriptors below it closed too"
        );
    }

    #[test]
    fn the_fallback_without_close_range_closes_the_same_descriptors() {
        let _leak = leaked();
        let mut cmd = cat();
        place(&mut cmd, 3..4);
        // SAFETY: close_at_exec_by with mark_each makes raw system calls only.
        unsafe {
            cmd.pre_exec(|| close_at_exec_by(3..4, mark_each).map_err(std::io::Error::from));
        }
        assert_eq!(open_after_exec(cmd), [0, 1, 2, 3]);
    }

    #[test]
    fn a_failed_exec_is_still_reported_by_spawn() {
        let mut cmd = Command::new("/nonexistent/program");
        close_in_child(&mut cmd, 0..0);
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }
}
