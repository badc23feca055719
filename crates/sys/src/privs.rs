//! The privilege drop: supplementary groups, gid, uid, every capability set, no_new_privs.
//!
//! Order matters and is fixed here:
//! 1. drop the capability bounding set (needs CAP_SETPCAP, so while still root);
//! 2. clear the ambient set;
//! 3. setgroups() to the user's groups (needs CAP_SETGID);
//! 4. setresgid() (needs CAP_SETGID), then setresuid() (needs CAP_SETUID; with all three
//!    uids non-zero and no SECBIT_KEEP_CAPS the kernel clears permitted and effective);
//! 5. capset() all of effective, permitted, inheritable to empty (explicit, not trusted
//!    to the kernel rule above);
//! 6. PR_SET_NO_NEW_PRIVS, so no setuid binary or file capability can raise them again.
//!
//! [`drop_to`] uses raw system calls only and allocates nothing, so it is safe to call in
//! a forked child before exec (`pre_exec`). It must run while the process has one thread:
//! the launcher's preparation child is forked from a single-threaded runtime, and the
//! final drop happens after that runtime is gone ([`crate::thread_count`] checks).

use std::io;

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use crate::account::Account;

/// Everything the drop needs, computed before fork so the child allocates nothing.
#[derive(Debug, Clone)]
pub struct Target {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    /// Highest capability number the kernel knows (/proc/sys/kernel/cap_last_cap).
    pub last_cap: u32,
    /// True when the launcher is root and changes identity; false when it already runs as
    /// the service user and only sheds what it can.
    pub privileged: bool,
}

impl Target {
    pub fn for_account(account: &Account, privileged: bool) -> io::Result<Target> {
        Ok(Target {
            uid: account.uid,
            gid: account.gid,
            groups: account.groups.clone(),
            last_cap: last_cap()?,
            privileged,
        })
    }
}

/// The highest capability number the kernel knows. From /proc/sys when it is visible;
/// under ProcSubset=pid it is not, and the kernel is asked instead: PR_CAPBSET_READ fails
/// with EINVAL for a capability it does not know.
fn last_cap() -> io::Result<u32> {
    if let Some(n) = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Ok(n);
    }
    (0..64u32)
        .take_while(|cap| prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(*cap)) >= 0)
        .last()
        .ok_or_else(|| io::Error::other("cannot determine the highest capability number"))
}

/// A failed step of the drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("privilege drop failed at {step}: {errno}")]
pub struct DropError {
    pub step: &'static str,
    pub errno: Errno,
}

impl From<DropError> for io::Error {
    fn from(e: DropError) -> io::Error {
        io::Error::from_raw_os_error(e.errno as i32)
    }
}

fn check(step: &'static str, rc: libc::c_long) -> Result<libc::c_long, DropError> {
    if rc < 0 {
        Err(DropError {
            step,
            errno: Errno::last(),
        })
    } else {
        Ok(rc)
    }
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> libc::c_long {
    // SAFETY: prctl with integer arguments only; no memory is passed to the kernel.
    unsafe {
        libc::prctl(
            op,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) as libc::c_long
    }
}

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset_empty() -> libc::c_long {
    let header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are valid for the duration of the call and laid out as the
    // kernel's v3 __user_cap_header_struct and two __user_cap_data_structs.
    unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) }
}

/// The effective, permitted and inheritable sets as 64-bit masks.
pub fn capget() -> Result<(u64, u64, u64), DropError> {
    let header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: as in capset_empty; data is writable and has room for the two v3 structs.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const CapHeader,
            data.as_mut_ptr(),
        )
    };
    check("capget", rc)?;
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok((
        join(|d| d.effective),
        join(|d| d.permitted),
        join(|d| d.inheritable),
    ))
}

/// Drop to `t` for good. Async-signal-safe (no allocation, no locks).
pub fn drop_to(t: &Target) -> Result<(), DropError> {
    if t.privileged {
        for cap in 0..=t.last_cap {
            if check(
                "read bounding set",
                prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong),
            )? == 1
            {
                check(
                    "drop bounding capability (the unit must allow CAP_SETPCAP)",
                    prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong),
                )?;
            }
        }
    }
    // SAFETY: prctl with integer arguments only. EINVAL means a kernel without ambient
    // capabilities (< 4.3): nothing to clear then.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 && Errno::last() != Errno::EINVAL {
        return Err(DropError {
            step: "clear ambient capabilities",
            errno: Errno::last(),
        });
    }
    if t.privileged {
        let groups: &[Gid] = &t.groups;
        // SAFETY: Gid is repr(transparent) over gid_t, so the slice is a valid gid_t array
        // of groups.len() elements for the duration of the call.
        let rc = unsafe {
            libc::setgroups(
                groups.len() as libc::size_t,
                groups.as_ptr() as *const libc::gid_t,
            )
        };
        check("setgroups", rc as libc::c_long)?;
        let g = t.gid.as_raw();
        // SAFETY: plain integer arguments.
        check("setresgid", unsafe { libc::setresgid(g, g, g) }
            as libc::c_long)?;
        let u = t.uid.as_raw();
        // SAFETY: plain integer arguments.
        check("setresuid", unsafe { libc::setresuid(u, u, u) }
            as libc::c_long)?;
    }
    // Started unprivileged with no capability at all (the unprivileged unit, whose
    // system call filter also denies capset, a @privileged call): nothing to drop.
    if t.privileged || capget()? != (0, 0, 0) {
        check("capset", capset_empty())?;
    }
    check("set no_new_privs", prctl(libc::PR_SET_NO_NEW_PRIVS, 1))?;
    Ok(())
}

/// What [`verify`] found wrong, if anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privileges were not dropped for good: {0}")]
pub struct NotDropped(pub String);

/// Check, after [`drop_to`], that the process cannot regain privilege: ids are the
/// target's in all three slots, setuid(0) and setgid(0) fail, every capability set is empty
/// and no_new_privs is set. The bounding set is only checked when the launcher was root
/// (an unprivileged process cannot change it; systemd's CapabilityBoundingSet= does).
pub fn verify(t: &Target) -> Result<(), NotDropped> {
    let fail = |what: String| Err(NotDropped(what));
    let r = nix::unistd::getresuid().map_err(|e| NotDropped(format!("getresuid: {e}")))?;
    if [r.real, r.effective, r.saved] != [t.uid; 3] {
        return fail(format!(
            "uids are {}/{}/{}, want {}",
            r.real, r.effective, r.saved, t.uid
        ));
    }
    let g = nix::unistd::getresgid().map_err(|e| NotDropped(format!("getresgid: {e}")))?;
    if [g.real, g.effective, g.saved] != [t.gid; 3] {
        return fail(format!(
            "gids are {}/{}/{}, want {}",
            g.real, g.effective, g.saved, t.gid
        ));
    }
    if t.privileged {
        let mut have =
            nix::unistd::getgroups().map_err(|e| NotDropped(format!("getgroups: {e}")))?;
        let mut want = t.groups.clone();
        have.sort_by_key(|g| g.as_raw());
        want.sort_by_key(|g| g.as_raw());
        if have != want {
            return fail(format!("supplementary groups are {have:?}, want {want:?}"));
        }
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return fail("setuid(0) succeeded".into());
        }
        if nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
            return fail("setgid(0) succeeded".into());
        }
    }
    let (eff, perm, inh) = capget().map_err(|e| NotDropped(e.to_string()))?;
    if eff | perm | inh != 0 {
        return fail(format!(
            "capabilities remain: effective {eff:#x}, permitted {perm:#x}, inheritable {inh:#x}"
        ));
    }
    for cap in 0..=t.last_cap {
        // SAFETY: prctl with integer arguments only.
        let ambient = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if ambient == 1 {
            return fail(format!("ambient capability {cap} is set"));
        }
        if t.privileged && prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong) == 1 {
            return fail(format!("capability {cap} is still in the bounding set"));
        }
    }
    if prctl(libc::PR_GET_NO_NEW_PRIVS, 0) != 1 {
        return fail("no_new_privs is not set".into());
    }
    Ok(())
}

/// Arrange for a child command to drop to `t` between fork and exec.
pub fn drop_in_child(cmd: &mut std::process::Command, t: Target) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls drop_to, which is async-signal-safe (raw system calls,
    // no allocation, no locks), as required between fork and exec.
    unsafe {
        cmd.pre_exec(move || drop_to(&t).map_err(io::Error::from));
    }
}
