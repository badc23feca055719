//! The preparation child's plumbing: a pipe whose write end the child alone inherits,
//! under a fixed descriptor number, and the child's death with the launcher.
//!
//! The pipe is created close-on-exec, so nothing the launcher starts inherits it by
//! accident; the one child meant to write to it gets a copy placed at its number between
//! fork and exec. What the child does with it further (keeping it from its own children)
//! is the child's business.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A pipe with both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Give the child that `cmd` spawns a copy of `fd` as descriptor `as_fd`, kept across
/// exec; every other descriptor keeps its close-on-exec flag. `as_fd` must be above 2
/// (stdin, stdout and stderr are `Command`'s), else the spawn fails with EINVAL.
///
/// `cmd` owns `fd` from now on: drop `cmd` right after spawning, or this process keeps
/// its copy open too (for a pipe's write end: the reader never sees end of file).
pub fn pass_fd_in_child(cmd: &mut Command, fd: OwnedFd, as_fd: RawFd) {
    pass_fds_in_child(cmd, vec![(fd, as_fd)]);
}

/// [`pass_fd_in_child`] for several descriptors at once: each `(fd, as_fd)` is placed at
/// its number, whatever numbers the descriptors have in this process (one may sit where
/// another is to go). The numbers must be above 2 and distinct, else the spawn fails with
/// EINVAL.
pub fn pass_fds_in_child(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    let top = fds.iter().map(|(_, to)| *to).max().unwrap_or(2);
    let valid = fds
        .iter()
        .enumerate()
        .all(|(i, (_, to))| *to > 2 && fds[..i].iter().all(|(_, other)| other != to));
    // Room for the copies, made here: the child must not allocate.
    let mut copies: Vec<RawFd> = vec![-1; fds.len()];
    let place = move || -> io::Result<()> {
        if !valid {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // First a close-on-exec copy of each above every wanted number, so no dup2 below
        // replaces a descriptor still to be placed; the copies go at exec.
        for (copy, (fd, _)) in copies.iter_mut().zip(&fds) {
            *copy = retry(|| {
                // SAFETY: fcntl with integer arguments on a descriptor owned by `fd`.
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top + 1) }
            })?;
        }
        for (copy, (_, to)) in copies.iter().zip(&fds) {
            // The copy dup2 makes is never close-on-exec. Whatever the child had at `to`
            // is closed, in the child only.
            // SAFETY: dup2 with integer arguments; `copy` was opened just above.
            retry(|| unsafe { libc::dup2(*copy, *to) })?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and is async-signal-safe:
    // it calls fcntl and dup2 and reads errno, and allocates nothing (the room for the
    // copies was made before the fork; io::Error from an errno value is stored inline).
    // It runs after Command's own stdio setup, so numbers above 2 cannot be overwritten
    // by it.
    unsafe { cmd.pre_exec(place) };
}

/// A system call returning -1 on error, repeated while it is interrupted.
fn retry(mut call: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        let rc = call();
        if rc != -1 {
            return Ok(rc);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Have the child that `cmd` spawns killed (SIGKILL) when the launcher dies, even by
/// SIGKILL: it must not go on migrating or writing the data directory once the locks that
/// serialise those are gone with the launcher. Register it after the privilege drop
/// (drop_in_child): the kernel clears the setting when the child's ids change.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    let arm = move || -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // The launcher may have died between fork and prctl: then no signal comes.
        // SAFETY: getppid has no arguments and cannot fail.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and is async-signal-safe:
    // prctl and getppid, no allocation (io::Error from an errno value is stored inline).
    unsafe { cmd.pre_exec(arm) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    /// Run `script` with `sh -c`, a pipe's write end passed as `as_fd`; returns its exit
    /// status and what arrived on the pipe.
    fn run(script: &str, as_fd: RawFd) -> (std::process::ExitStatus, String) {
        let (read, write) = pipe().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        pass_fd_in_child(&mut cmd, write, as_fd);
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let mut got = String::new();
        std::fs::File::from(read).read_to_string(&mut got).unwrap();
        (child.wait().unwrap(), got)
    }

    #[test]
    fn the_child_writes_to_the_passed_descriptor_and_the_reader_sees_its_end() {
        let (status, got) = run("echo hello >&3", 3);
        assert!(status.success());
        assert_eq!(got, "hello\n");
    }

    #[test]
    fn a_child_that_is_not_given_the_pipe_does_not_inherit_it() {
        // The write end lives in this process under some number; a child spawned
        // without pass_fd_in_child does not have it (close-on-exec).
        let (read, write) = pipe().unwrap();
        let n = write.as_raw_fd();
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("test -e /proc/self/fd/{n}"))
            .status()
            .unwrap();
        assert!(!status.success(), "fd {n} was inherited");
        drop((read, write));
    }

    #[test]
    fn a_descriptor_already_at_the_wanted_number_loses_close_on_exec() {
        let (read, write) = pipe().unwrap();
        // A number far from what the test harness's threads use.
        let high =
            nix::fcntl::fcntl(write.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(200)).unwrap();
        drop(write);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("echo same > /proc/self/fd/{high}"));
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
        pass_fd_in_child(&mut cmd, owned, high);
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let mut got = String::new();
        std::fs::File::from(read).read_to_string(&mut got).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(got, "same\n");
    }

    #[test]
    fn several_descriptors_reach_their_numbers_even_where_one_sits_on_anothers_number() {
        let (read_a, write_a) = pipe().unwrap();
        let (read_b, write_b) = pipe().unwrap();
        // b sits at 201, where a is to go; a at 200, where b is to go.
        let dup_at = |fd: OwnedFd, n: RawFd| {
            let high =
                nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(n)).unwrap();
            assert_eq!(high, n, "descriptor {n} is taken");
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) }
        };
        let a = dup_at(write_a, 200);
        let b = dup_at(write_b, 201);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("echo to-a > /proc/self/fd/201; echo to-b > /proc/self/fd/200");
        pass_fds_in_child(&mut cmd, vec![(a, 201), (b, 200)]);
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let (mut got_a, mut got_b) = (String::new(), String::new());
        std::fs::File::from(read_a)
            .read_to_string(&mut got_a)
            .unwrap();
        std::fs::File::from(read_b)
            .read_to_string(&mut got_b)
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!((got_a.as_str(), got_b.as_str()), ("to-a\n", "to-b\n"));
    }

    #[test]
    fn the_same_number_twice_is_refused() {
        let (_ra, wa) = pipe().unwrap();
        let (_rb, wb) = pipe().unwrap();
        let mut cmd = Command::new("/bin/true");
        pass_fds_in_child(&mut cmd, vec![(wa, 5), (wb, 5)]);
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn a_standard_stream_number_is_refused() {
        let (read, write) = pipe().unwrap();
        let mut cmd = Command::new("/bin/true");
        pass_fd_in_child(&mut cmd, write, 1);
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        drop(read);
    }
}
