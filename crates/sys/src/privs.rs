//! The privilege drop: supplementary groups, gid, uid, every capability set, no_new_privs.
//!
//! [`drop_with`] holds the order of the privileged calls; the calls themselves go through
//! the [`Kernel`] trait, so the order is unit-tested against a recording fake without
//! root. [`drop_to`] runs it against [`Linux`], the real kernel. [`verify`] then reads the
//! result back through the `caps` crate and nix.
//!
//! [`drop_to`] uses raw system calls only and allocates nothing, so it is safe to call in
//! a forked child before exec (`pre_exec`, see [`drop_in_child`]). It must run while the
//! process has one thread: the launcher's preparation child is forked from a
//! single-threaded runtime, and the final drop happens after that runtime is gone
//! ([`crate::thread_count`] checks).
//!
//! This module must not decide whom to drop to: the caller builds the [`Target`].
//!
//! Before the drop, a root launcher *acts as* the service user for everything it does in
//! the user's data directory: [`identity`] is the one seam for that, through the same
//! [`Kernel`]. The drop takes root back first thing.

use std::io;

use caps::CapSet;
use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use crate::account::Account;

pub mod identity;
pub use identity::{Identity, Ids, SwitchCall, SwitchError, Switched};

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

    /// A number without an account (crate::stand_in): uid and gid `id`, no other group.
    pub fn stand_in(id: u32) -> io::Result<Target> {
        Ok(Target {
            uid: Uid::from_raw(id),
            gid: Gid::from_raw(id),
            groups: vec![Gid::from_raw(id)],
            last_cap: last_cap()?,
            privileged: true,
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
        .take_while(|cap| Linux.read_bounding(*cap).is_ok())
        .last()
        .ok_or_else(|| io::Error::other("cannot determine the highest capability number"))
}

/// One step of the drop, as named in a [`DropError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropStep {
    TakeRootBack,
    ReadBounding,
    DropBounding,
    ClearAmbient,
    SetGroups,
    SetResGid,
    SetResUid,
    ReadCapabilities,
    Capset,
    NoNewPrivs,
}

impl std::fmt::Display for DropStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropStep::TakeRootBack => "take root back from acting as the service user",
            DropStep::ReadBounding => "read bounding set",
            DropStep::DropBounding => "drop bounding capability (the unit must allow CAP_SETPCAP)",
            DropStep::ClearAmbient => "clear ambient capabilities",
            DropStep::SetGroups => "setgroups",
            DropStep::SetResGid => "setresgid",
            DropStep::SetResUid => "setresuid",
            DropStep::ReadCapabilities => "read capabilities",
            DropStep::Capset => "capset",
            DropStep::NoNewPrivs => "set no_new_privs",
        })
    }
}

/// A failed step of the drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("privilege drop failed at {step}: {errno}")]
pub struct DropError {
    pub step: DropStep,
    pub errno: Errno,
}

impl From<DropError> for io::Error {
    fn from(e: DropError) -> io::Error {
        io::Error::from_raw_os_error(e.errno as i32)
    }
}

/// The privileged calls of the drop and of the changes of identity, one method each. Every
/// method the drop uses ([`drop_with`]) must be async-signal-safe in an implementation
/// used between fork and exec: no allocation, no locks.
pub trait Kernel {
    /// getresuid/getresgid: the real uid, the effective uid and the effective gid.
    fn current_ids(&mut self) -> Result<(Uid, Uid, Gid), Errno>;
    /// getgroups(2) into `out` (may allocate: not used by the drop).
    fn current_groups(&mut self, out: &mut Vec<Gid>) -> Result<(), Errno>;
    /// setresuid(-1, uid, -1): the effective uid only (root may always take back root
    /// while root is its saved uid).
    fn set_euid(&mut self, uid: Uid) -> Result<(), Errno>;
    /// setresgid(-1, gid, -1): the effective gid only (needs CAP_SETGID).
    fn set_egid(&mut self, gid: Gid) -> Result<(), Errno>;
    /// PR_SET_DUMPABLE 0, which every id change resets; cannot fail on a current kernel.
    fn set_non_dumpable(&mut self);
    /// PR_CAPBSET_READ: whether `cap` is in the bounding set (EINVAL: unknown to the kernel).
    fn read_bounding(&mut self, cap: u32) -> Result<bool, Errno>;
    /// PR_CAPBSET_DROP of `cap` (needs CAP_SETPCAP).
    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno>;
    /// PR_CAP_AMBIENT_CLEAR_ALL (EINVAL: a kernel without ambient capabilities, < 4.3).
    fn clear_ambient(&mut self) -> Result<(), Errno>;
    /// setgroups(2) to exactly `groups` (needs CAP_SETGID).
    fn setgroups(&mut self, groups: &[Gid]) -> Result<(), Errno>;
    /// setresgid(2) with `gid` in all three slots (needs CAP_SETGID).
    fn setresgid(&mut self, gid: Gid) -> Result<(), Errno>;
    /// setresuid(2) with `uid` in all three slots (needs CAP_SETUID).
    fn setresuid(&mut self, uid: Uid) -> Result<(), Errno>;
    /// capget(2): whether any of effective, permitted and inheritable is non-empty.
    fn holds_capabilities(&mut self) -> Result<bool, Errno>;
    /// capset(2) of effective, permitted and inheritable, all empty.
    fn capset_empty(&mut self) -> Result<(), Errno>;
    /// PR_SET_NO_NEW_PRIVS.
    fn set_no_new_privs(&mut self) -> Result<(), Errno>;
}

/// The running kernel. Zero-sized; every method is one raw system call, allocation-free
/// and async-signal-safe.
///
/// Raw calls rather than the `caps` crate: this runs between fork and exec, where nothing
/// may allocate, and `caps` builds a `HashSet` or a `String` on most paths (including
/// errors); it also cannot name capabilities newer than its `Capability` enum, which the
/// bounding loop must still drop. Reading, after the drop, goes through `caps` ([`verify`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

fn prctl(op: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<i32, Errno> {
    // SAFETY: prctl with integer arguments only; no memory is passed to the kernel.
    let rc = unsafe { libc::prctl(op, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    Errno::result(rc)
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// The kernel's `__user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// The kernel's `__user_cap_data_struct`; version 3 takes two of them (bits 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// "Leave unchanged" for setres[ug]id.
const KEEP: u32 = u32::MAX;

impl Kernel for Linux {
    fn current_ids(&mut self) -> Result<(Uid, Uid, Gid), Errno> {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: getresuid writes three uid_t through valid pointers to locals.
        Errno::result(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
        let (mut gr, mut ge, mut gs) = (0, 0, 0);
        // SAFETY: getresgid writes three gid_t through valid pointers to locals.
        Errno::result(unsafe { libc::getresgid(&mut gr, &mut ge, &mut gs) })?;
        Ok((Uid::from_raw(r), Uid::from_raw(e), Gid::from_raw(ge)))
    }

    fn current_groups(&mut self, out: &mut Vec<Gid>) -> Result<(), Errno> {
        *out = nix::unistd::getgroups()?;
        Ok(())
    }

    fn set_euid(&mut self, uid: Uid) -> Result<(), Errno> {
        // SAFETY: plain integer arguments.
        Errno::result(unsafe { libc::setresuid(KEEP, uid.as_raw(), KEEP) }).map(drop)
    }

    fn set_egid(&mut self, gid: Gid) -> Result<(), Errno> {
        // SAFETY: plain integer arguments.
        Errno::result(unsafe { libc::setresgid(KEEP, gid.as_raw(), KEEP) }).map(drop)
    }

    fn set_non_dumpable(&mut self) {
        let _ = prctl(libc::PR_SET_DUMPABLE, 0, 0);
    }

    fn read_bounding(&mut self, cap: u32) -> Result<bool, Errno> {
        prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0).map(|rc| rc == 1)
    }

    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno> {
        prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0).map(drop)
    }

    fn clear_ambient(&mut self) -> Result<(), Errno> {
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        )
        .map(drop)
    }

    fn setgroups(&mut self, groups: &[Gid]) -> Result<(), Errno> {
        // SAFETY: Gid is repr(transparent) over gid_t, so the slice is a valid gid_t array
        // of groups.len() elements for the duration of the call.
        let rc = unsafe {
            libc::setgroups(
                groups.len() as libc::size_t,
                groups.as_ptr() as *const libc::gid_t,
            )
        };
        Errno::result(rc).map(drop)
    }

    fn setresgid(&mut self, gid: Gid) -> Result<(), Errno> {
        let g = gid.as_raw();
        // SAFETY: plain integer arguments.
        Errno::result(unsafe { libc::setresgid(g, g, g) }).map(drop)
    }

    fn setresuid(&mut self, uid: Uid) -> Result<(), Errno> {
        let u = uid.as_raw();
        // SAFETY: plain integer arguments.
        Errno::result(unsafe { libc::setresuid(u, u, u) }).map(drop)
    }

    fn holds_capabilities(&mut self) -> Result<bool, Errno> {
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: header and data live on the stack for the duration of the call and are
        // laid out as the kernel's v3 header and two data structs, which it writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &header as *const CapHeader,
                data.as_mut_ptr(),
            )
        };
        Errno::result(rc)?;
        Ok(data
            .iter()
            .any(|d| d.effective | d.permitted | d.inheritable != 0))
    }

    fn capset_empty(&mut self) -> Result<(), Errno> {
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        // SAFETY: header and data live on the stack for the duration of the call and are
        // laid out as the kernel's v3 header and two data structs, which it only reads.
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
        Errno::result(rc).map(drop)
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map(drop)
    }
}

/// Drop to `t` for good through `k`, stopping at the first failed call.
///
/// The order is fixed here, each step while the process still holds what it needs:
/// 0. root back as the effective uid and gid, if the process acts as the service user:
///    the steps below need CAP_SETPCAP, CAP_SETGID and CAP_SETUID in the effective set;
/// 1. bounding set: every capability up to `t.last_cap` that is in it is dropped
///    (PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set, which setresuid clears, so
///    this comes first);
/// 2. ambient set cleared: needs no privilege, and done explicitly so that the
///    unprivileged path, which never changes uid, loses it too; EINVAL (a kernel without
///    ambient capabilities, < 4.3) means there is nothing to clear;
/// 3. setgroups() to exactly the target's groups: needs CAP_SETGID, so before setresuid;
/// 4. setresgid(): needs CAP_SETGID too, so before setresuid;
/// 5. setresuid(): the last change of identity; with all three uids non-zero and no
///    SECBIT_KEEP_CAPS the kernel clears permitted and effective;
/// 6. capset() of effective, permitted, inheritable to empty: explicit, not trusted to the
///    rule above (which does not apply to the unprivileged path or under KEEP_CAPS); on the
///    unprivileged path only when capget() finds any, since a process holding none has
///    nothing to clear (the unprivileged unit's system call filter denies capset, a
///    @privileged call);
/// 7. PR_SET_NO_NEW_PRIVS last, as the seal: no later exec of a setuid binary or of a
///    file with capabilities can raise them again.
///
/// Steps 0, 1, 3, 4 and 5 only happen when `t.privileged`: a launcher already running as
/// the service user cannot change its bounding set or identity and sheds what it can.
pub fn drop_with<K: Kernel>(k: &mut K, t: &Target) -> Result<(), DropError> {
    let at = |step| move |errno| DropError { step, errno };
    if t.privileged {
        let (real, effective, _) = k.current_ids().map_err(at(DropStep::TakeRootBack))?;
        if real.is_root() && !effective.is_root() {
            // Acting as the user (a child forked while the launcher acted as it).
            let root = Uid::from_raw(0);
            k.set_euid(root).map_err(at(DropStep::TakeRootBack))?;
            k.set_egid(Gid::from_raw(0))
                .map_err(at(DropStep::TakeRootBack))?;
        }
        for cap in 0..=t.last_cap {
            if k.read_bounding(cap).map_err(at(DropStep::ReadBounding))? {
                k.drop_bounding(cap).map_err(at(DropStep::DropBounding))?;
            }
        }
    }
    match k.clear_ambient() {
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(errno) => return Err(at(DropStep::ClearAmbient)(errno)),
    }
    if t.privileged {
        k.setgroups(&t.groups).map_err(at(DropStep::SetGroups))?;
        k.setresgid(t.gid).map_err(at(DropStep::SetResGid))?;
        k.setresuid(t.uid).map_err(at(DropStep::SetResUid))?;
    }
    if t.privileged
        || k.holds_capabilities()
            .map_err(at(DropStep::ReadCapabilities))?
    {
        k.capset_empty().map_err(at(DropStep::Capset))?;
    }
    k.set_no_new_privs().map_err(at(DropStep::NoNewPrivs))?;
    Ok(())
}

/// True when CAP_CHOWN is in this process's permitted set: root may then give a file to
/// another user, also while it acts as that user (through [`Identity::with_root`]).
pub fn may_chown() -> bool {
    caps::has_cap(None, CapSet::Permitted, caps::Capability::CAP_CHOWN).unwrap_or(false)
}

/// Drop to `t` for good, on the running kernel, in a forked child before exec.
/// Async-signal-safe (no allocation, no locks): see [`drop_with`] for the order and
/// [`Linux`] for the calls. A process that goes on running uses [`drop_for_good`].
pub fn drop_to(t: &Target) -> Result<(), DropError> {
    drop_with(&mut Linux, t)
}

/// Why [`drop_for_good`] did not drop.
#[derive(Debug, thiserror::Error)]
pub enum DropForGoodError {
    #[error(
        "{0} threads are running at the privilege drop; refusing to drop privileges in a multi-threaded process"
    )]
    Threads(usize),
    #[error("cannot count this process's threads: {0}")]
    CountThreads(io::Error),
    #[error(transparent)]
    Drop(#[from] DropError),
    #[error(transparent)]
    Verify(#[from] NotDropped),
}

/// Drop this process to `t` for good and verify it. Only while it has one thread:
/// setresuid applies to every thread through the C library, but a thread that holds root
/// in its own right (in a system call, in another runtime) must not exist then.
pub fn drop_for_good(identity: Identity, t: &Target) -> Result<(), DropForGoodError> {
    let threads = crate::thread_count().map_err(DropForGoodError::CountThreads)?;
    if threads != 1 {
        return Err(DropForGoodError::Threads(threads));
    }
    let mut k = identity.into_kernel();
    drop_with(&mut k, t)?;
    verify(t)?;
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
/// Allocates (it reads the sets through the `caps` crate): not for use after fork.
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
    let read = |set: CapSet| {
        caps::read(None, set).map_err(|e| NotDropped(format!("reading the {set:?} set: {e}")))
    };
    let mut sets = vec![
        ("effective", read(CapSet::Effective)?),
        ("permitted", read(CapSet::Permitted)?),
        ("inheritable", read(CapSet::Inheritable)?),
    ];
    // A kernel without ambient capabilities (< 4.3) has none to keep.
    if caps::runtime::ambient_set_supported().is_ok() {
        sets.push(("ambient", read(CapSet::Ambient)?));
    }
    if t.privileged {
        sets.push(("bounding", read(CapSet::Bounding)?));
    }
    for (name, set) in sets {
        if !set.is_empty() {
            return fail(format!("{name} capabilities remain: {}", cap_names(&set)));
        }
    }
    // `caps` names capabilities only up to its newest one; a newer kernel's extra bounding
    // capabilities are read by number. (Its extra effective, permitted, inheritable and
    // ambient bits cannot be read through `caps`; drop_with clears them with the rest: a
    // capset of all 64 bits, PR_CAP_AMBIENT_CLEAR_ALL.)
    let named = caps::all().iter().map(|c| u32::from(c.index())).max();
    if t.privileged {
        for cap in named.map_or(0, |n| n + 1)..=t.last_cap {
            if Linux.read_bounding(cap) == Ok(true) {
                return fail(format!("capability {cap} is still in the bounding set"));
            }
        }
    }
    if nix::sys::prctl::get_no_new_privs() != Ok(true) {
        return fail("no_new_privs is not set".into());
    }
    Ok(())
}

/// Capability names in kernel order, for messages.
fn cap_names(set: &caps::CapsHashSet) -> String {
    let mut caps: Vec<_> = set.iter().collect();
    caps.sort_by_key(|c| c.index());
    caps.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Arrange for a child command to drop to `t` between fork and exec.
pub fn drop_in_child(cmd: &mut std::process::Command, t: Target) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls drop_to, which is async-signal-safe (raw system calls,
    // no allocation, no locks), as required between fork and exec; `t` was built before
    // fork and is only read.
    unsafe {
        cmd.pre_exec(move || drop_to(&t).map_err(io::Error::from));
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
