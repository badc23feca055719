//! A stand-in identity for the app before its account exists: `check` on a fresh host
//! probes the app as a uid/gid number no account, group or process holds (as systemd's
//! DynamicUser= runs a service as a number without an account), with a data directory of
//! its own that is thrown away afterwards.
//!
//! The number comes from systemd's range for dynamic users, skipping every number the
//! account database knows (users and groups, through NSS, so systemd's own dynamic users
//! too), systemd has locked for a dynamic user (/run/systemd/dynamic-uid/), or a process
//! runs with (real, effective, saved or file-system id). When the throw-away directory
//! goes, every process still running as the stand-in goes first (the app may have left
//! one behind), then the directory, without following a link the app made in it.

use std::collections::BTreeSet;
use std::io;
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// systemd's range for DynamicUser= (61184–65519, "dynamic service users").
pub const RANGE: RangeInclusive<u32> = 61184..=65519;

/// Where systemd locks the numbers it gave to dynamic users.
const DYNAMIC_UID_DIR: &str = "/run/systemd/dynamic-uid";

/// The first number of `range` that `taken` does not claim.
pub fn first_free(range: RangeInclusive<u32>, mut taken: impl FnMut(u32) -> bool) -> Option<u32> {
    range.into_iter().find(|id| !taken(*id))
}

/// A free number for the stand-in (the same for uid and gid), checked against the account
/// database, systemd's dynamic users and every process.
pub fn pick() -> io::Result<u32> {
    let running = ids_of_processes()?;
    first_free(RANGE, |id| {
        running.contains(&id)
            || Path::new(DYNAMIC_UID_DIR).join(id.to_string()).exists()
            || !matches!(User::from_uid(Uid::from_raw(id)), Ok(None))
            || !matches!(Group::from_gid(Gid::from_raw(id)), Ok(None))
    })
    .ok_or_else(|| {
        io::Error::other(format!(
            "no uid/gid of {}-{} is free (the account database, systemd's dynamic users or a process hold every one)",
            RANGE.start(),
            RANGE.end()
        ))
    })
}

/// Every uid and gid some process runs with (its Uid: and Gid: lines in /proc).
fn ids_of_processes() -> io::Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // A process may end while it is read: then it holds nothing.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        ids.extend(ids_in_status(&status));
    }
    Ok(ids)
}

/// The ids of the Uid: and Gid: lines of a /proc/PID/status text.
fn ids_in_status(status: &str) -> Vec<u32> {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("Uid:").or_else(|| l.strip_prefix("Gid:")))
        .flat_map(|rest| rest.split_whitespace().filter_map(|n| n.parse().ok()))
        .collect()
}

/// The processes whose real or effective uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let uids: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            uids.iter().take(2).any(|u| *u == uid).then_some(pid)
        })
        .collect()
}

/// The probe's data directory: made fresh (mode 0700) below the system's temporary
/// directory, owned by the stand-in when there is one, removed with everything in it when
/// this goes out of scope (after the stand-in's processes).
pub struct ThrowAway {
    path: PathBuf,
    stand_in: Option<u32>,
}

impl ThrowAway {
    /// A fresh directory; `stand_in`: its owner (uid and gid), else the caller.
    pub fn create(stand_in: Option<u32>) -> io::Result<ThrowAway> {
        let path = nix::unistd::mkdtemp("/tmp/bitpoll-launcher-probe-XXXXXX")?;
        let dir = ThrowAway { path, stand_in };
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))?;
        if let Some(id) = stand_in {
            nix::unistd::chown(&dir.path, Some(Uid::from_raw(id)), Some(Gid::from_raw(id)))?;
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ThrowAway {
    fn drop(&mut self) {
        if let Some(uid) = self.stand_in {
            // The stand-in is this probe's alone: whatever still runs as it is the app's.
            for _ in 0..50 {
                let left = processes_of(uid);
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        // remove_dir_all removes a link, never what it points to.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_number_nothing_holds_is_picked() {
        assert_eq!(first_free(10..=20, |id| id < 13), Some(13));
        assert_eq!(first_free(10..=12, |_| true), None);
    }

    #[test]
    fn every_id_of_a_status_is_read() {
        let status = "Name:\tx\nUid:\t0\t61184\t0\t0\nGid:\t5\t5\t61185\t5\nGroups:\t4 61186\n";
        assert_eq!(ids_in_status(status), [0, 61184, 0, 0, 5, 5, 61185, 5]);
    }

    #[test]
    fn a_picked_number_is_held_by_nothing() {
        let id = pick().unwrap();
        assert!(RANGE.contains(&id));
        assert!(User::from_uid(Uid::from_raw(id)).unwrap().is_none());
        assert!(Group::from_gid(Gid::from_raw(id)).unwrap().is_none());
        assert!(!ids_of_processes().unwrap().contains(&id));
    }

    #[test]
    fn the_throw_away_directory_goes_with_what_is_in_it_and_never_through_a_link() {
        let keep = std::env::temp_dir().join(format!("blt-keep-{}", std::process::id()));
        std::fs::write(&keep, "kept").unwrap();
        let path = {
            let dir = ThrowAway::create(None).unwrap();
            let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            std::fs::create_dir(dir.path().join("sub")).unwrap();
            std::fs::write(dir.path().join("sub/file"), "x").unwrap();
            std::os::unix::fs::symlink(&keep, dir.path().join("link")).unwrap();
            dir.path().to_path_buf()
        };
        assert!(!path.exists(), "{} is left", path.display());
        assert_eq!(std::fs::read_to_string(&keep).unwrap(), "kept");
        std::fs::remove_file(&keep).unwrap();
    }
}
