//! A recording [`Kernel`] for tests: it keeps every call in order in a fixed-capacity
//! array (allocation-free, like the real one), holds a bounding set and an identity of its
//! own under the kernel's rules for them, and can be told to fail the Nth call or the first
//! call of a step with a given errno.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use super::{DropStep, Kernel};

/// One call as the fake saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    CurrentIds,
    CurrentGroups,
    SetEuid(Uid),
    SetEgid(Gid),
    NonDumpable,
    ReadBounding(u32),
    DropBounding(u32),
    ClearAmbient,
    /// The number of groups; the groups themselves are in [`Fake::groups`].
    SetGroups(usize),
    SetResGid(Gid),
    SetResUid(Uid),
    HoldsCapabilities,
    CapsetEmpty,
    NoNewPrivs,
}

impl Call {
    /// The step of the drop this call belongs to (the identity's own calls count as
    /// taking root back, the drop's first step, which is made of them).
    pub fn step(self) -> DropStep {
        match self {
            Call::CurrentIds
            | Call::CurrentGroups
            | Call::SetEuid(_)
            | Call::SetEgid(_)
            | Call::NonDumpable => DropStep::TakeRootBack,
            Call::ReadBounding(_) => DropStep::ReadBounding,
            Call::DropBounding(_) => DropStep::DropBounding,
            Call::ClearAmbient => DropStep::ClearAmbient,
            Call::SetGroups(_) => DropStep::SetGroups,
            Call::SetResGid(_) => DropStep::SetResGid,
            Call::SetResUid(_) => DropStep::SetResUid,
            Call::HoldsCapabilities => DropStep::ReadCapabilities,
            Call::CapsetEmpty => DropStep::Capset,
            Call::NoNewPrivs => DropStep::NoNewPrivs,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fail {
    /// The call with this index (0-based) in the log.
    Nth(usize),
    /// The first call of this step.
    Step(DropStep),
    /// Every call equal to this one.
    Call(Call),
}

/// Room for a full drop on a kernel with 64 capabilities (a read and a drop each) and the
/// calls around the bounding set, or a few hundred identity switches.
const CALLS: usize = 2 * 64 + 256;
const GROUPS: usize = 32;

pub struct Fake {
    calls: [Call; CALLS],
    len: usize,
    /// The fake's bounding set; PR_CAPBSET_READ of a number above `last_cap` is EINVAL.
    bounding: u64,
    last_cap: u32,
    groups: [Gid; GROUPS],
    ngroups: Option<usize>,
    /// What capget reports: whether the process holds any capability.
    holds: bool,
    fail: Option<(Fail, Errno)>,
    /// The process's ids: real and saved uid, effective uid and gid.
    real: Uid,
    euid: Uid,
    egid: Gid,
}

impl Fake {
    /// A root process on a kernel knowing capabilities 0..=`last_cap` whose bounding set
    /// is `bounding`.
    pub fn new(last_cap: u32, bounding: u64) -> Fake {
        Fake {
            calls: [Call::ClearAmbient; CALLS],
            len: 0,
            bounding,
            last_cap,
            groups: [Gid::from_raw(0); GROUPS],
            ngroups: None,
            holds: true,
            fail: None,
            real: Uid::from_raw(0),
            euid: Uid::from_raw(0),
            egid: Gid::from_raw(0),
        }
    }

    /// A process that holds no capability (capget finds empty sets).
    pub fn holding_none(mut self) -> Fake {
        self.holds = false;
        self
    }

    /// A root process that acts as `uid`/`gid` (real and saved uid stay root's).
    pub fn acting_as(mut self, uid: Uid, gid: Gid) -> Fake {
        self.euid = uid;
        self.egid = gid;
        self
    }

    /// Fail the call with index `n` (0-based) with `errno`.
    pub fn fail_at(mut self, n: usize, errno: Errno) -> Fake {
        self.fail = Some((Fail::Nth(n), errno));
        self
    }

    /// Fail the first call of `step` with `errno`.
    pub fn fail_on(mut self, step: DropStep, errno: Errno) -> Fake {
        self.fail = Some((Fail::Step(step), errno));
        self
    }

    /// Fail every call equal to `call` with `errno`.
    pub fn fail_call(mut self, call: Call, errno: Errno) -> Fake {
        self.fail = Some((Fail::Call(call), errno));
        self
    }

    /// The calls made, in order.
    pub fn calls(&self) -> &[Call] {
        &self.calls[..self.len]
    }

    /// What setgroups was given last, if it was called.
    pub fn groups(&self) -> Option<&[Gid]> {
        self.ngroups.map(|n| &self.groups[..n])
    }

    pub fn bounding(&self) -> u64 {
        self.bounding
    }

    /// The effective uid and gid now.
    pub fn effective(&self) -> (Uid, Gid) {
        (self.euid, self.egid)
    }

    /// Record `call`; the configured failure, if this is the call it is for.
    fn record(&mut self, call: Call) -> Result<(), Errno> {
        assert!(
            self.len < CALLS,
            "more than {CALLS} calls: {:?}",
            self.calls()
        );
        let n = self.len;
        self.calls[n] = call;
        self.len += 1;
        match self.fail {
            Some((Fail::Nth(at), errno)) if at == n => Err(errno),
            Some((Fail::Step(step), errno))
                if step == call.step() && !self.calls[..n].iter().any(|c| c.step() == step) =>
            {
                Err(errno)
            }
            Some((Fail::Call(c), errno)) if c == call => Err(errno),
            _ => Ok(()),
        }
    }

    /// CAP_SETUID/CAP_SETGID in the effective set: root's effective uid.
    fn privileged(&self) -> Result<(), Errno> {
        if self.euid.is_root() {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }
}

impl Kernel for Fake {
    fn current_ids(&mut self) -> Result<(Uid, Uid, Gid), Errno> {
        self.record(Call::CurrentIds)?;
        Ok((self.real, self.euid, self.egid))
    }

    fn current_groups(&mut self, out: &mut Vec<Gid>) -> Result<(), Errno> {
        self.record(Call::CurrentGroups)?;
        // Before any setgroups: root's own, root only.
        *out = self
            .groups()
            .map_or_else(|| vec![Gid::from_raw(0)], <[Gid]>::to_vec);
        Ok(())
    }

    fn set_euid(&mut self, uid: Uid) -> Result<(), Errno> {
        self.record(Call::SetEuid(uid))?;
        // Unprivileged, only to the real, effective or saved uid (the saved one is the
        // real one here).
        if !self.euid.is_root() && uid != self.real && uid != self.euid {
            return Err(Errno::EPERM);
        }
        self.euid = uid;
        Ok(())
    }

    fn set_egid(&mut self, gid: Gid) -> Result<(), Errno> {
        self.record(Call::SetEgid(gid))?;
        if gid != self.egid {
            self.privileged()?;
        }
        self.egid = gid;
        Ok(())
    }

    fn set_non_dumpable(&mut self) {
        let _ = self.record(Call::NonDumpable);
    }

    fn read_bounding(&mut self, cap: u32) -> Result<bool, Errno> {
        self.record(Call::ReadBounding(cap))?;
        if cap > self.last_cap {
            return Err(Errno::EINVAL);
        }
        Ok(self.bounding & (1 << cap) != 0)
    }

    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno> {
        self.record(Call::DropBounding(cap))?;
        self.bounding &= !(1 << cap);
        Ok(())
    }

    fn clear_ambient(&mut self) -> Result<(), Errno> {
        self.record(Call::ClearAmbient)
    }

    fn setgroups(&mut self, groups: &[Gid]) -> Result<(), Errno> {
        self.record(Call::SetGroups(groups.len()))?;
        self.privileged()?;
        assert!(groups.len() <= GROUPS, "more than {GROUPS} groups");
        self.groups[..groups.len()].copy_from_slice(groups);
        self.ngroups = Some(groups.len());
        Ok(())
    }

    fn setresgid(&mut self, gid: Gid) -> Result<(), Errno> {
        self.record(Call::SetResGid(gid))?;
        self.egid = gid;
        Ok(())
    }

    fn setresuid(&mut self, uid: Uid) -> Result<(), Errno> {
        self.record(Call::SetResUid(uid))?;
        self.real = uid;
        self.euid = uid;
        Ok(())
    }

    fn holds_capabilities(&mut self) -> Result<bool, Errno> {
        self.record(Call::HoldsCapabilities)?;
        Ok(self.holds)
    }

    fn capset_empty(&mut self) -> Result<(), Errno> {
        self.record(Call::CapsetEmpty)
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        self.record(Call::NoNewPrivs)
    }
}
