//! Signals at the edges of the launcher: the stop signals it catches while it prepares,
//! and the clean signal state every program it starts begins with.
//!
//! A program the launcher starts (the server in its place, the preparation driver, check's
//! probe, manage's command) must begin as if started by a service manager: no signal
//! blocked, and every disposition the default. exec resets caught signals by itself, but
//! an ignored signal (SIGPIPE, which Rust's runtime ignores at start, or SIGHUP under
//! `nohup`) and the blocked mask survive it, so they are reset here first.
//!
//! The functions used between fork and exec ([`defaults_for_exec`]) make raw,
//! async-signal-safe calls only and allocate nothing.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};

/// The signals that ask the launcher to stop: SIGTERM (`systemctl stop`), SIGINT
/// (Ctrl-C), SIGHUP (the controlling terminal went away) and SIGQUIT (Ctrl-\). `run`
/// catches them from its start until just before the exec (also as a container's PID 1,
/// which the kernel would otherwise not let them reach), stops what runs (the preparation
/// child, a wait), and ends with the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopSignal {
    Term,
    Int,
    Hup,
    Quit,
}

impl StopSignal {
    pub const ALL: [StopSignal; 4] = [
        StopSignal::Term,
        StopSignal::Int,
        StopSignal::Hup,
        StopSignal::Quit,
    ];

    /// The signal number.
    pub fn raw(self) -> i32 {
        self.nix() as i32
    }

    /// The signal's name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        self.nix().as_str()
    }

    pub fn from_raw(raw: i32) -> Option<StopSignal> {
        StopSignal::ALL.into_iter().find(|s| s.raw() == raw)
    }

    pub(crate) fn nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Int => Signal::SIGINT,
            StopSignal::Hup => Signal::SIGHUP,
            StopSignal::Quit => Signal::SIGQUIT,
        }
    }

    fn set() -> SigSet {
        let mut set = SigSet::empty();
        for s in StopSignal::ALL {
            set.add(s.nix());
        }
        set
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Block the stop signals in the calling thread. Called in every thread the launcher's
/// runtime starts (so the kernel never hands a stop signal to a helper thread, whose
/// receipt could be lost with the runtime), and by `run` in its own thread before the
/// runtime ends: from then on a stop signal stays pending until [`pending_stop_signal`]
/// looks, instead of reaching a handler that no longer has anyone to tell.
pub fn block_stop_signals() -> nix::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&StopSignal::set()), None)
}

/// The first stop signal pending for this thread or process (blocked and not yet
/// delivered), if any. It stays pending.
pub fn pending_stop_signal() -> Option<StopSignal> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes one sigset_t into the valid, writable `set`.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: sigpending succeeded, so `set` is initialised.
    let set = unsafe { set.assume_init() };
    StopSignal::ALL.into_iter().find(|s| {
        // SAFETY: sigismember reads the initialised `set`.
        unsafe { libc::sigismember(&set, s.raw()) == 1 }
    })
}

/// Put the stop signals back to their default action. The preparation's async runtime
/// installed handlers for them that outlive it; between its end and the exec of the
/// server a stop request must still stop the launcher, not be swallowed.
pub fn default_stop_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, signal};
    for sig in StopSignal::ALL {
        // SAFETY: installing SIG_DFL runs no handler code, so no async-signal-safety
        // requirement applies; the previous handler is not used afterwards.
        unsafe { signal(sig.nix(), SigHandler::SigDfl) }?;
    }
    Ok(())
}

/// The highest signal number (SIGRTMAX on Linux).
const LAST_SIGNAL: i32 = 64;

/// The kernel's `struct sigaction` as `rt_sigaction(2)` reads and writes it, with room to
/// spare: its first field is the handler on every 64-bit Linux architecture, and all
/// zeroes is SIG_DFL with no flags and an empty mask.
type KernelSigaction = [libc::c_ulong; 4];

/// The kernel's signal set size, as `rt_sigaction(2)` wants it.
const KERNEL_SIGSET_SIZE: libc::c_ulong = 8;

/// Give a program about to be executed the signal state a service manager gives it: every
/// ignored signal back to its default action, and nothing blocked. Caught signals need no
/// reset (exec resets them); SIGKILL and SIGSTOP cannot change. The raw system call is
/// used, not the C library's `sigaction`, which refuses to touch the two real-time signals
/// it reserves for itself: a caller may still have left those ignored. Async-signal-safe:
/// raw system calls on stack memory, no allocation.
///
/// A signal that was blocked and pending is delivered when the mask is cleared, with its
/// default action: a stop requested in the last moment ends the process before the exec.
pub fn defaults_for_exec() -> Result<(), Errno> {
    for sig in 1..=LAST_SIGNAL {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old: KernelSigaction = [0; 4];
        // SAFETY: rt_sigaction with a null new action writes the current one into `old`,
        // which is larger than the kernel's struct sigaction.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                KERNEL_SIGSET_SIZE,
            )
        };
        if rc != 0 {
            continue;
        }
        if old[0] == libc::SIG_IGN as libc::c_ulong {
            let dfl: KernelSigaction = [0; 4];
            // SAFETY: rt_sigaction reads the all-zero `dfl` (SIG_DFL); no old action.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    KERNEL_SIGSET_SIZE,
                )
            };
            if rc != 0 {
                return Err(Errno::last());
            }
        }
    }
    let empty: libc::c_ulong = 0;
    // SAFETY: rt_sigprocmask reads the empty kernel sigset `empty`; no old mask. The raw
    // call clears the two signals the C library reserves too.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::c_ulong,
            std::ptr::null_mut::<libc::c_ulong>(),
            KERNEL_SIGSET_SIZE,
        )
    };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// End the process by `signal` with its default action, so the service manager sees a
/// death by that signal (for SIGTERM: a clean stop) rather than an exit status. Returns
/// only if the signal did not end the process.
///
/// SIGQUIT's default action also dumps core; a core of this process would hold the
/// secrets it loaded, so the process is made non-dumpable first and the kernel writes
/// none.
pub fn die_of_signal(signal: StopSignal) {
    use nix::sys::signal::{SigHandler, raise, signal as set_handler};
    let sig = signal.nix();
    let _ = crate::no_core_dumps();
    // SAFETY: installing SIG_DFL runs no handler code.
    if unsafe { set_handler(sig, SigHandler::SigDfl) }.is_err() {
        return;
    }
    let mut set = SigSet::empty();
    set.add(sig);
    // A pending one (blocked at the end of `run`) is delivered right here.
    let _ = set.thread_unblock();
    let _ = raise(sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn stop_signals_have_the_kernels_numbers_and_names() {
        let want = [
            (StopSignal::Term, libc::SIGTERM, "SIGTERM"),
            (StopSignal::Int, libc::SIGINT, "SIGINT"),
            (StopSignal::Hup, libc::SIGHUP, "SIGHUP"),
            (StopSignal::Quit, libc::SIGQUIT, "SIGQUIT"),
        ];
        for (signal, raw, name) in want {
            assert_eq!(signal.raw(), raw);
            assert_eq!(signal.to_string(), name);
            assert_eq!(StopSignal::from_raw(raw), Some(signal));
        }
        assert_eq!(StopSignal::from_raw(libc::SIGKILL), None);
    }

    /// `SigIgn:` and `SigBlk:` of /proc/self/status as cat (which touches no signal)
    /// reports them after an exec from a child that first ignored and blocked signals,
    /// then ran `reset` (or nothing).
    fn inherited_by_cat(reset: bool) -> (String, String) {
        let mut cmd = Command::new("/bin/cat");
        cmd.arg("/proc/self/status");
        let hook = move || -> std::io::Result<()> {
            // SAFETY: raw, async-signal-safe calls in the forked child: ignore SIGHUP and
            // SIGUSR1, block SIGTERM and SIGUSR2, as a caller under nohup or with a
            // careless mask would hand them over.
            unsafe {
                let mut ign: libc::sigaction = std::mem::zeroed();
                ign.sa_sigaction = libc::SIG_IGN;
                libc::sigaction(libc::SIGHUP, &ign, std::ptr::null_mut());
                libc::sigaction(libc::SIGUSR1, &ign, std::ptr::null_mut());
                // One of the C library's reserved signals, which its sigaction refuses.
                let raw: KernelSigaction = [libc::SIG_IGN as libc::c_ulong, 0, 0, 0];
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    33,
                    &raw as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    KERNEL_SIGSET_SIZE,
                );
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            if reset {
                defaults_for_exec().map_err(std::io::Error::from)?;
            }
            Ok(())
        };
        // SAFETY: the hook is async-signal-safe (see above and defaults_for_exec).
        unsafe { cmd.pre_exec(hook) };
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_string()
        };
        (field("SigIgn:"), field("SigBlk:"))
    }

    #[test]
    fn a_program_started_after_the_reset_inherits_no_ignored_or_blocked_signal() {
        let (ign, blk) = inherited_by_cat(false);
        assert_ne!(ign, "0000000000000000", "the control ignores nothing");
        assert_eq!(
            u64::from_str_radix(&ign, 16).unwrap() & (1 << 32),
            1 << 32,
            "the control ignores signal 33: {ign}"
        );
        assert_ne!(blk, "0000000000000000", "the control blocks nothing");
        let (ign, blk) = inherited_by_cat(true);
        assert_eq!(ign, "0000000000000000");
        assert_eq!(blk, "0000000000000000");
    }

    #[test]
    fn a_blocked_stop_signal_stays_pending_until_asked_for() {
        if std::env::var_os("LAUNCHER_SYS_PENDING_CHILD").is_some() {
            // In the child process: the harness's main thread waits for this one, so
            // block in this thread and send the signal to this thread only.
            block_stop_signals().unwrap();
            println!("pending before: {:?}", pending_stop_signal());
            // SAFETY: pthread_kill with this thread's own handle and a signal number.
            let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGTERM) };
            assert_eq!(rc, 0);
            println!("pending after: {:?}", pending_stop_signal());
            return;
        }
        // A process of its own: the mask and the pending set are process state.
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "signals::tests::a_blocked_stop_signal_stays_pending_until_asked_for",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("LAUNCHER_SYS_PENDING_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("pending before: None"), "{text}");
        assert!(text.contains("pending after: Some(Term)"), "{text}");
    }
}
