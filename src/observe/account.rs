//! The service account as the account database has it, and the programs the launcher
//! needs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use launcher_config::Config;
use launcher_plan::facts::{AccountFacts, GroupEntry, UserEntry};
use launcher_sys::privs::Ids;

/// The owner of `path` itself (a link is not followed), as the caller sees it.
pub(super) fn owner_of(path: &Path) -> Option<u32> {
    std::fs::symlink_metadata(path).ok().map(|m| m.uid())
}

pub(super) fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(super) fn account(cfg: &Config) -> AccountFacts {
    let user = nix::unistd::User::from_name(&cfg.service.user)
        .ok()
        .flatten();
    let group = nix::unistd::Group::from_name(&cfg.service.group)
        .ok()
        .flatten();
    let supplementary = match (&user, &group) {
        (Some(u), Some(g)) => std::ffi::CString::new(u.name.clone())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, g.gid).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|gid| {
                let name = nix::unistd::Group::from_gid(gid)
                    .ok()
                    .flatten()
                    .map_or_else(|| gid.to_string(), |g| g.name);
                (gid.as_raw(), name)
            })
            .collect(),
        _ => Vec::new(),
    };
    AccountFacts {
        user: user.map(|u| UserEntry {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        }),
        group: group.map(|g| GroupEntry {
            name: g.name,
            gid: g.gid.as_raw(),
            members: g.mem,
        }),
        supplementary,
        etc_read_only: launcher_sys::account::etc_is_read_only(),
        uid_min: uid_min(),
    }
}

/// UID_MIN of /etc/login.defs (the first uid of regular accounts), 1000 when not set.
fn uid_min() -> u32 {
    std::fs::read_to_string("/etc/login.defs")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some("UID_MIN"))
                    .then(|| f.next().and_then(|v| v.parse().ok()))
                    .flatten()
            })
        })
        .unwrap_or(1000)
}

/// The identity the launcher acts as in the service user's files: its uid, its group
/// and every group the account database gives it (never root's). None when the account
/// does not exist (yet).
pub fn user_ids(account: &AccountFacts) -> Option<Ids> {
    let user = account.user.as_ref()?;
    let gid = account.group.as_ref().map_or(user.gid, |g| g.gid);
    let mut groups: Vec<launcher_sys::Gid> = account
        .supplementary
        .iter()
        .map(|(g, _)| launcher_sys::Gid::from_raw(*g))
        .collect();
    if groups.is_empty() {
        groups.push(gid.into());
    }
    Some(Ids {
        uid: user.uid.into(),
        gid: gid.into(),
        groups,
    })
}
