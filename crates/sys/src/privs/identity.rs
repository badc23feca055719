//! The one seam for changes of the effective identity while the launcher stays root.
//!
//! A root launcher *acts as* the service user for everything it does in the user's data
//! directory and to the user's processes: effective uid, gid and supplementary groups the
//! user's, real and saved uid root's. File access and signals are then checked against the
//! user's rights (so neither CAP_DAC_OVERRIDE, CAP_FOWNER nor CAP_KILL is needed, and
//! root's rights or root's groups never open a file in a tree the user controls), and the
//! kernel clears the effective capabilities meanwhile. Root comes back only for the few
//! steps that need it (creating the data directory in root's parent, giving a root-owned
//! entry to the user) and for the final drop.
//!
//! Every such change goes through an [`Identity`] and its [`Kernel`], as a [`Switched`]
//! guard that puts the previous identity back when it goes out of scope, on an early
//! return and on unwind alike. A switch is atomic: when a later call of it fails (the
//! uid after the gid was set), the calls made are undone before the error returns, so a
//! failed switch never leaves a mix of identities. The process is made non-dumpable again
//! after each switch (the kernel resets the flag on every id change). A failed switch is
//! an error naming the call; restoring the previous identity cannot fail while the saved
//! uid is root's, and if it ever did the process aborts rather than go on as someone else.

use std::ops::{Deref, DerefMut};

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use super::{Kernel, Linux};

/// An effective identity: uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// The call of a switch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchCall {
    ReadIds,
    ReadGroups,
    SetEuid,
    SetEgid,
    SetGroups,
}

impl std::fmt::Display for SwitchCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchCall::ReadIds => "getresuid/getresgid",
            SwitchCall::ReadGroups => "getgroups",
            SwitchCall::SetEuid => "setresuid",
            SwitchCall::SetEgid => "setresgid",
            SwitchCall::SetGroups => "setgroups",
        })
    }
}

/// A change of identity that did not happen (nothing of it is left in effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} (uid {uid}, gid {gid}): {call} failed: {errno}", if uid.is_root() { "take root back" } else { "act as the service user" })]
pub struct SwitchError {
    pub uid: Uid,
    pub gid: Gid,
    pub call: SwitchCall,
    pub errno: Errno,
}

/// The process's effective identity, changed only through here.
pub struct Identity<K: Kernel = Linux> {
    k: K,
    /// The identity the process started with (root's, for a root launcher), restored by
    /// [`Identity::root`].
    own: Ids,
    current: Ids,
    /// The real uid is root's: only then may the effective identity change.
    may_switch: bool,
}

impl Identity<Linux> {
    /// The running process.
    pub fn of_process() -> Result<Identity<Linux>, SwitchError> {
        Identity::new(Linux)
    }
}

impl<K: Kernel> Identity<K> {
    /// The identity `k` reports now.
    pub fn new(mut k: K) -> Result<Identity<K>, SwitchError> {
        let fail = |call| {
            move |errno| SwitchError {
                uid: Uid::from_raw(u32::MAX),
                gid: Gid::from_raw(u32::MAX),
                call,
                errno,
            }
        };
        let (real, uid, gid) = k.current_ids().map_err(fail(SwitchCall::ReadIds))?;
        let mut groups = Vec::new();
        k.current_groups(&mut groups)
            .map_err(fail(SwitchCall::ReadGroups))?;
        let own = Ids { uid, gid, groups };
        Ok(Identity {
            current: own.clone(),
            own,
            k,
            may_switch: real.is_root(),
        })
    }

    /// The effective identity now.
    pub fn current(&self) -> &Ids {
        &self.current
    }

    /// The process is root and acts as another user.
    pub fn acting(&self) -> bool {
        self.may_switch && !self.current.uid.is_root()
    }

    /// The process may switch (its real uid is root's).
    pub fn privileged(&self) -> bool {
        self.may_switch
    }

    /// Act as `to` until the guard goes; then the identity before comes back.
    pub fn act_as(&mut self, to: Ids) -> Result<Switched<'_, K>, SwitchError> {
        let back = self.current.clone();
        self.apply(&to)?;
        Ok(Switched { id: self, back })
    }

    /// The process's own identity (root's) until the guard goes; then the identity before
    /// comes back. Nothing changes when it is in effect already.
    pub fn root(&mut self) -> Result<Switched<'_, K>, SwitchError> {
        let own = self.own.clone();
        self.act_as(own)
    }

    /// `f` with the process's own identity, then the identity before again.
    pub fn with_root<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, SwitchError> {
        let _root = self.root()?;
        Ok(f())
    }

    /// The kernel, for the final drop (which takes root back by itself); no guard can be
    /// alive then, so the identity is the process's own.
    pub fn into_kernel(self) -> K {
        self.k
    }

    /// The kernel, to look at what was recorded (the fake).
    pub fn kernel(&self) -> &K {
        &self.k
    }

    /// Make `to` the effective identity, or leave the identity as it was.
    fn apply(&mut self, to: &Ids) -> Result<(), SwitchError> {
        if *to == self.current {
            return Ok(());
        }
        let from = self.current.clone();
        if let Err((call, errno)) = self.calls(&from, to) {
            // Undo what was done: from root's effective uid, which the saved uid allows.
            if self.calls(to, &from).is_err() {
                restore_failed(&from);
            }
            return Err(SwitchError {
                uid: to.uid,
                gid: to.gid,
                call,
                errno,
            });
        }
        self.current = to.clone();
        self.k.set_non_dumpable();
        Ok(())
    }

    /// The calls from `from` to `to`: root's effective uid first (only root may change
    /// the gid and the groups), then the groups and the gid, the target's uid last.
    fn calls(&mut self, from: &Ids, to: &Ids) -> Result<(), (SwitchCall, Errno)> {
        let root = Uid::from_raw(0);
        if from.uid != root {
            self.k
                .set_euid(root)
                .map_err(|e| (SwitchCall::SetEuid, e))?;
        }
        if from.groups != to.groups {
            self.k
                .setgroups(&to.groups)
                .map_err(|e| (SwitchCall::SetGroups, e))?;
        }
        if from.gid != to.gid || from.uid != root {
            self.k
                .set_egid(to.gid)
                .map_err(|e| (SwitchCall::SetEgid, e))?;
        }
        if to.uid != root {
            self.k
                .set_euid(to.uid)
                .map_err(|e| (SwitchCall::SetEuid, e))?;
        }
        Ok(())
    }
}

/// The previous identity could not be put back: going on would act with the wrong one.
fn restore_failed(ids: &Ids) -> ! {
    eprintln!(
        "bitpoll-launcher: cannot return to uid {} gid {}; stopping",
        ids.uid, ids.gid
    );
    std::process::abort()
}

/// An identity in effect until dropped; then the one before comes back.
pub struct Switched<'a, K: Kernel = Linux> {
    id: &'a mut Identity<K>,
    back: Ids,
}

impl<K: Kernel> Deref for Switched<'_, K> {
    type Target = Identity<K>;
    fn deref(&self) -> &Identity<K> {
        self.id
    }
}

impl<K: Kernel> DerefMut for Switched<'_, K> {
    fn deref_mut(&mut self) -> &mut Identity<K> {
        self.id
    }
}

impl<K: Kernel> Drop for Switched<'_, K> {
    fn drop(&mut self) {
        let back = std::mem::replace(
            &mut self.back,
            Ids {
                uid: Uid::from_raw(0),
                gid: Gid::from_raw(0),
                groups: Vec::new(),
            },
        );
        if self.id.apply(&back).is_err() {
            restore_failed(&back);
        }
    }
}
