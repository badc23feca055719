//! Replace the launcher with the server: same PID, new program, environment from scratch,
//! no descriptor above stderr except the sockets systemd passed for this PID, and the
//! signal state a service manager gives a program (nothing blocked or ignored). A stop
//! signal that arrived while it was blocked ends the launcher here instead.

use std::ffi::CString;
use std::ops::Range;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("argument or environment contains a NUL byte")]
    Nul,
    #[error("cannot pass socket fd {fd} to the server: {source}")]
    PassFd { fd: i32, source: Errno },
    #[error("cannot close inherited descriptors before starting the server: {0}")]
    CloseFds(Errno),
    #[error("cannot reset the signal state before starting the server: {0}")]
    Signals(Errno),
    #[error("stopped by signal {number} ({signal}) before the server started", number = signal.raw())]
    Stopped { signal: crate::StopSignal },
    #[error("cannot execute {program}: {source}")]
    Exec { program: String, source: Errno },
}

/// First file descriptor passed by systemd socket activation.
const SD_LISTEN_FDS_START: i32 = 3;

/// Clear close-on-exec on the sockets systemd passed (LISTEN_FDS), when they are meant for
/// this PID (LISTEN_PID), so the server inherits them. Returns their range, empty when
/// there are none for this PID.
fn pass_listen_fds(env: &[(&str, &str)]) -> Result<Range<i32>, ExecError> {
    let none = SD_LISTEN_FDS_START..SD_LISTEN_FDS_START;
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let (Some(pid), Some(n)) = (get("LISTEN_PID"), get("LISTEN_FDS")) else {
        return Ok(none);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(none);
    }
    let n: i32 = n.parse().unwrap_or(0).max(0);
    let fds = SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(n);
    for fd in fds.clone() {
        // SAFETY: systemd passed these descriptors (LISTEN_PID is ours); they stay open for
        // the lifetime of the borrow, which ends before exec.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|source| ExecError::PassFd { fd, source })?;
    }
    Ok(fds)
}

/// exec `argv` with exactly `env`, passing on the LISTEN_FDS sockets when LISTEN_PID is
/// ours and no other descriptor above stderr (they are marked close-on-exec, so the
/// launcher keeps them should the exec fail). A stop signal pending (the caller blocked
/// them) returns [`ExecError::Stopped`] instead; then every signal is unblocked and every
/// ignored one set to its default, so one arriving after that look ends the process before
/// the program runs. Returns only on failure.
pub fn exec(argv: &[String], env: &[(&str, &str)]) -> ExecError {
    match exec_inner(argv, env) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// The environment as C strings for execve, zeroized when dropped (the exec failed, or
/// it was never made): the values include secrets.
pub(crate) struct CEnv(pub(crate) Vec<CString>);

impl Drop for CEnv {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for c in self.0.drain(..) {
            c.into_bytes_with_nul().zeroize();
        }
    }
}

/// argv and the environment as C strings for execve; None when one holds a NUL byte.
pub(crate) fn c_strings(argv: &[String], env: &[(&str, &str)]) -> Option<(Vec<CString>, CEnv)> {
    let cargs = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).ok())
        .collect::<Option<Vec<_>>>()?;
    let mut cenv = CEnv(Vec::with_capacity(env.len()));
    for (k, v) in env {
        let mut entry = zeroize::Zeroizing::new(Vec::with_capacity(k.len() + v.len() + 1));
        entry.extend_from_slice(k.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(v.as_bytes());
        cenv.0.push(CString::new(entry.to_vec()).ok()?);
    }
    Some((cargs, cenv))
}

fn exec_inner(
    argv: &[String],
    env: &[(&str, &str)],
) -> Result<std::convert::Infallible, ExecError> {
    let (cargs, cenv) = c_strings(argv, env).ok_or(ExecError::Nul)?;
    let keep = pass_listen_fds(env)?;
    crate::fds::close_at_exec(keep).map_err(ExecError::CloseFds)?;
    if let Some(signal) = crate::signals::pending_stop_signal() {
        return Err(ExecError::Stopped { signal });
    }
    crate::signals::defaults_for_exec().map_err(ExecError::Signals)?;
    nix::unistd::execve(&cargs[0], &cargs, &cenv.0).map_err(|source| ExecError::Exec {
        program: argv[0].clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};

    const CHILD: &str = "LAUNCHER_SYS_EXEC_CHILD";

    /// In the re-executed test binary: leave a descriptor open without close-on-exec,
    /// put a "socket" on fd 3, and exec cat as the server with LISTEN_PID naming us.
    fn become_server() -> ! {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let leaked = nix::unistd::dup(&file).unwrap();
        // SAFETY: dup2 onto 3 in this throwaway process, which execs right after.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 3) }, 3);
        println!("leaked {}", leaked.as_raw_fd());
        std::mem::forget(leaked);
        let pid = std::process::id().to_string();
        let env = [("LISTEN_PID", pid.as_str()), ("LISTEN_FDS", "1")];
        let err = super::exec(&["/bin/cat".to_string()], &env);
        panic!("{err}");
    }

    #[test]
    fn the_server_keeps_the_listen_fds_and_no_other_descriptor_above_stderr() {
        if std::env::var_os(CHILD).is_some() {
            become_server();
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "exec::tests::the_server_keeps_the_listen_fds_and_no_other_descriptor_above_stderr",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let leaked: i32 = lines
            .by_ref()
            .find_map(|l| {
                // The harness prints the test's name on the same line first.
                let l = l.unwrap();
                l.rsplit_once("leaked ").map(|(_, n)| n.parse().unwrap())
            })
            .expect("the child reports the descriptor it leaked");
        // cat echoing proves the exec happened: the listing below is the server's.
        stdin.write_all(b"echo\n").unwrap();
        assert!(lines.by_ref().any(|l| l.unwrap() == "echo"));
        let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        fds.sort_unstable();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        assert!(leaked > 3, "{leaked}");
        assert_eq!(fds, [0, 1, 2, 3], "fd {leaked} was left open by the caller");
    }
}
