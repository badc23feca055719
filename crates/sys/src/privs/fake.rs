//! A recording [`Kernel`] for tests: it keeps every call in order in a fixed-capacity
//! array (allocation-free, like the real one), holds a bounding set of its own, and can be
//! told to fail the Nth call or the first call of a step with a given errno.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use super::{DropStep, Kernel};

/// One call as the fake saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    ReadBounding(u32),
    DropBounding(u32),
    ClearAmbient,
    /// The number of groups; the groups themselves are in [`Fake::groups`].
    SetGroups(usize),
    SetResGid(Gid),
    SetResUid(Uid),
    CapsetEmpty,
    NoNewPrivs,
}

impl Call {
    pub fn step(self) -> DropStep {
        match self {
            Call::ReadBounding(_) => DropStep::ReadBounding,
            Call::DropBounding(_) => DropStep::DropBounding,
            Call::ClearAmbient => DropStep::ClearAmbient,
            Call::SetGroups(_) => DropStep::SetGroups,
            Call::SetResGid(_) => DropStep::SetResGid,
            Call::SetResUid(_) => DropStep::SetResUid,
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
}

/// Room for a full drop on a kernel with 64 capabilities (a read and a drop each) and the
/// six calls after the bounding set.
const CALLS: usize = 2 * 64 + 6;
const GROUPS: usize = 32;

pub struct Fake {
    calls: [Call; CALLS],
    len: usize,
    /// The fake's bounding set; PR_CAPBSET_READ of a number above `last_cap` is EINVAL.
    bounding: u64,
    last_cap: u32,
    groups: [Gid; GROUPS],
    ngroups: Option<usize>,
    fail: Option<(Fail, Errno)>,
}

impl Fake {
    /// A kernel knowing capabilities 0..=`last_cap` whose bounding set is `bounding`.
    pub fn new(last_cap: u32, bounding: u64) -> Fake {
        Fake {
            calls: [Call::ClearAmbient; CALLS],
            len: 0,
            bounding,
            last_cap,
            groups: [Gid::from_raw(0); GROUPS],
            ngroups: None,
            fail: None,
        }
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

    /// The calls made, in order.
    pub fn calls(&self) -> &[Call] {
        &self.calls[..self.len]
    }

    /// What setgroups was given, if it was called.
    pub fn groups(&self) -> Option<&[Gid]> {
        self.ngroups.map(|n| &self.groups[..n])
    }

    pub fn bounding(&self) -> u64 {
        self.bounding
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
            _ => Ok(()),
        }
    }
}

impl Kernel for Fake {
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
        assert!(groups.len() <= GROUPS, "more than {GROUPS} groups");
        self.groups[..groups.len()].copy_from_slice(groups);
        self.ngroups = Some(groups.len());
        Ok(())
    }

    fn setresgid(&mut self, gid: Gid) -> Result<(), Errno> {
        self.record(Call::SetResGid(gid))
    }

    fn setresuid(&mut self, uid: Uid) -> Result<(), Errno> {
        self.record(Call::SetResUid(uid))
    }

    fn capset_empty(&mut self) -> Result<(), Errno> {
        self.record(Call::CapsetEmpty)
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        self.record(Call::NoNewPrivs)
    }
}
