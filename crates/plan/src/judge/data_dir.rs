//! The data directory: `run` may create it and repair its owner and mode, but never takes
//! over a tree that belongs to someone else and never follows a link inside it.

use std::path::{Path, PathBuf};

use launcher_config::Config;

use crate::facts::{DirState, Facts, Observer};
use crate::finding::Finding;
use crate::rule::Rule;

/// What is wrong with a directory on a trusted path, and the fix: the words for every
/// path rule 1 covers besides files (the data directory's parents, the app source).
/// `what` names what the path leads to; `elsewhere` is the other way out.
pub fn untrusted(
    why: &crate::facts::Untrusted,
    what: &str,
    target: &Path,
    elsewhere: &str,
) -> (String, String) {
    use crate::facts::Untrusted;
    // "/srv/pub on the way to the data directory", or "the app source /srv/app" itself.
    let place = |dir: &Path| {
        if dir == target {
            format!("{what} {}", dir.display())
        } else {
            format!("{} on the way to {what}", dir.display())
        }
    };
    match why {
        Untrusted::Owner { dir, uid, mode } => (
            format!(
                "{} belongs to uid {uid} (mode {mode:04o}), not root: that user can replace {what}",
                place(dir)
            ),
            format!(
                "chown root:root {0} && chmod go-w {0}, or {elsewhere}",
                dir.display()
            ),
        ),
        Untrusted::Writable { dir, mode } => (
            format!(
                "{} on the way to {what} is writable by {} (mode {mode:04o}) without the sticky bit: anyone who can write there can move {what} away and put their own in its place",
                dir.display(),
                if mode & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                }
            ),
            format!(
                "chmod go-w {} (or set the sticky bit, chmod +t, where others must write), or {elsewhere}",
                dir.display()
            ),
        ),
        Untrusted::SharedEntry { entry, uid, dir } => (
            format!(
                "{} belongs to uid {uid} and sits in {}, which others can write: its owner can replace it",
                place(entry),
                dir.display()
            ),
            format!("chown -h root:root {}, or {elsewhere}", entry.display()),
        ),
        Untrusted::Unwalkable(words) => (
            format!("its path cannot be checked: {words}"),
            format!("correct the path, or {elsewhere}"),
        ),
    }
}

/// How to create the data directory ahead where `run` cannot.
const CREATE_AHEAD: &str = "create it ahead: `bitpoll-launcher tmpfiles --config FILE > /etc/tmpfiles.d/bitpoll.conf && systemd-tmpfiles --create` (NixOS: the module does)";

/// Why a path of the data directory cannot be used as it is, whoever finds it: this
/// judgement ahead of a start, or the guard of `launcher_sys::tree` while `run` acts (what
/// changed in between). Either way it is worded once, by [`DirProblem::finding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirProblem {
    /// The data directory's parent does not exist.
    ParentMissing {
        data_dir: PathBuf,
        parent: PathBuf,
    },
    Symlink {
        path: PathBuf,
    },
    NotADirectory {
        path: PathBuf,
    },
    /// Owned by a user other than the service user and root.
    ForeignOwner {
        path: PathBuf,
        owner: String,
        user: String,
    },
    /// The launcher runs as the service user (uid `me`), the directory is someone else's.
    NotOwnedBySelf {
        path: PathBuf,
        uid: u32,
        me: u32,
        user: String,
    },
    /// Root's, and the launcher may not give it to the user (no CAP_CHOWN).
    NoChown {
        path: PathBuf,
        user: String,
    },
    /// Missing, and the launcher may not make it the user's (no CAP_CHOWN).
    MissingNoChown {
        path: PathBuf,
        user: String,
    },
    /// Missing on a file system that is read-only here.
    ReadOnly {
        path: PathBuf,
    },
    /// A directory above the data directory that others can change.
    UntrustedParent {
        data_dir: PathBuf,
        why: crate::facts::Untrusted,
    },
    /// A file of the data directory with more than one name.
    HardLinked {
        subject: String,
        path: PathBuf,
        links: u64,
    },
}

impl DirProblem {
    /// The finding: an error with its fix.
    pub fn finding(&self) -> Finding {
        let at = |p: &Path| p.display().to_string();
        let (rule, subject, message, fix) = match self {
            DirProblem::ParentMissing { data_dir, parent } => (
                Rule::DataDirParentMissing,
                at(data_dir),
                format!("its parent {} does not exist", parent.display()),
                format!(
                    "create {}, or point service.data_dir elsewhere",
                    parent.display()
                ),
            ),
            DirProblem::Symlink { path } => (
                Rule::DataDirSymlink,
                at(path),
                "is a symbolic link; the launcher refuses to follow links here".into(),
                "replace it with a real directory (or point service.data_dir at the link's target)"
                    .into(),
            ),
            DirProblem::NotADirectory { path } => (
                Rule::DataDirNotADirectory,
                at(path),
                "is not a directory".into(),
                "move it away so the launcher can create the directory".into(),
            ),
            DirProblem::ForeignOwner { path, owner, user } => (
                Rule::DataDirForeignOwner,
                at(path),
                format!("is owned by {owner}, not {user}; `run` refuses to take it over"),
                format!(
                    "refusing to take over another user's files: if it really belongs to the service, run `chown -R {user}: {}` once; otherwise choose another service.data_dir",
                    path.display()
                ),
            ),
            DirProblem::NotOwnedBySelf {
                path,
                uid,
                me,
                user,
            } => (
                Rule::DataDirNotOwnedBySelf,
                at(path),
                format!(
                    "is owned by uid {uid}, but the launcher runs unprivileged as uid {me}"
                ),
                format!(
                    "run the launcher as root once, or `chown {user} {}`",
                    path.display()
                ),
            ),
            DirProblem::NoChown { path, user } => (
                Rule::DataDirNoChown,
                at(path),
                format!("belongs to root, and without CAP_CHOWN `run` cannot give it to {user}"),
                format!(
                    "run `chown -R {user}: {}` once (the launcher has no CAP_CHOWN here: the hardened unit does not keep it, nor does a container started without it; see docs/hardening.md)",
                    path.display()
                ),
            ),
            DirProblem::MissingNoChown { path, user } => (
                Rule::DataDirMissingNoChown,
                at(path),
                format!("does not exist, and without CAP_CHOWN `run` cannot create it for {user}"),
                CREATE_AHEAD.into(),
            ),
            DirProblem::ReadOnly { path } => (
                Rule::DataDirReadOnly,
                at(path),
                "does not exist, and the file system is read-only here (a unit with ProtectSystem=strict)".into(),
                CREATE_AHEAD.into(),
            ),
            DirProblem::UntrustedParent { data_dir, why } => {
                let (message, fix) = untrusted(
                    why,
                    "the data directory",
                    data_dir,
                    "move service.data_dir below directories only root can change (such as /var/lib)",
                );
                (Rule::DataDirUntrustedParent, at(data_dir), message, fix)
            }
            DirProblem::HardLinked {
                subject,
                path,
                links,
            } => (
                Rule::DataDirHardLinked,
                subject.clone(),
                format!(
                    "has {links} hard links: a file that also exists under another name may be a planted link to a file the service must not get"
                ),
                format!(
                    "move {} away (keep it if it holds data)",
                    path.display()
                ),
            ),
        };
        Finding::error(rule, subject, message, fix)
    }
}

/// Below this much free space in the data directory's file system: a warning.
pub const LOW_DISK: u64 = 512 * 1024 * 1024;
/// Below this: an error (a migration or collectstatic would fail half-way).
pub const CRITICAL_DISK: u64 = 32 * 1024 * 1024;

pub fn judge(cfg: &Config, facts: &Facts) -> Vec<Finding> {
    let user = &cfg.service.user;
    let data_dir = &cfg.service.data_dir;
    let user_uid = facts.account.user.as_ref().map(|u| u.uid);
    let mut out = Vec::new();
    if let Some(f) = state_directory(cfg, facts) {
        out.push(f);
    }
    let tree = &facts.tree;
    if let Err(why) = &facts.trust.data_dir_parent {
        out.push(
            DirProblem::UntrustedParent {
                data_dir: data_dir.clone(),
                why: why.clone(),
            }
            .finding(),
        );
        return out;
    }
    if !tree.parent_exists {
        let parent = data_dir.parent().unwrap_or(data_dir);
        out.push(
            DirProblem::ParentMissing {
                data_dir: data_dir.clone(),
                parent: parent.to_path_buf(),
            }
            .finding(),
        );
        return out;
    }
    let root_usable = matches!(
        tree.dirs.first().map(|d| &d.state),
        Some(DirState::Present { .. })
    );
    // Root without CAP_CHOWN (the hardened privileged unit) acts in the tree as the
    // user and cannot give anything of root's to it.
    let no_chown = facts.observer == Observer::Root && !facts.can_chown;
    for d in &tree.dirs {
        let subject = d.path.display().to_string();
        match &d.state {
            DirState::Missing if d.name.is_empty() && no_chown => out.push(
                DirProblem::MissingNoChown {
                    path: d.path.clone(),
                    user: user.clone(),
                }
                .finding(),
            ),
            DirState::Missing if d.name.is_empty() || root_usable => out.push(Finding::info(
                Rule::DataDirMissing,
                subject,
                format!("does not exist yet; `run` creates it ({:04o})", d.want_mode),
            )),
            DirState::Missing => {}
            DirState::Symlink => out.push(
                DirProblem::Symlink {
                    path: d.path.clone(),
                }
                .finding(),
            ),
            DirState::NotADirectory => out.push(
                DirProblem::NotADirectory {
                    path: d.path.clone(),
                }
                .finding(),
            ),
            DirState::Unreadable { denied, error } => {
                if facts.observer == Observer::Root || !denied {
                    out.push(Finding::error(
                        Rule::DataDirUnreadable,
                        subject,
                        format!("cannot be inspected: {error}"),
                        "check the file system",
                    ));
                } else {
                    out.push(Finding::warning(
                        Rule::DataDirUnreadable,
                        subject,
                        format!("cannot be inspected as this user: {error}"),
                        format!("run check as root or as {user}"),
                    ));
                }
            }
            DirState::Present {
                uid,
                gid,
                mode,
                owner_name,
            } => {
                let is_user = user_uid == Some(*uid);
                if facts.observer == Observer::ServiceUser && !is_user {
                    out.push(
                        DirProblem::NotOwnedBySelf {
                            path: d.path.clone(),
                            uid: *uid,
                            me: facts.euid,
                            user: user.clone(),
                        }
                        .finding(),
                    );
                    continue;
                }
                if !is_user && *uid != 0 {
                    out.push(
                        DirProblem::ForeignOwner {
                            path: d.path.clone(),
                            owner: owner_name.clone().unwrap_or_else(|| format!("uid {uid}")),
                            user: user.clone(),
                        }
                        .finding(),
                    );
                    if d.name.is_empty() {
                        // Not looked into: nothing below it is the launcher's business.
                        break;
                    }
                    continue;
                }
                if *uid == 0 && d.name.is_empty() && !is_user && !tree.entries.is_empty() {
                    out.push(Finding::error(
                        Rule::DataDirRootNotEmpty,
                        subject,
                        format!(
                            "belongs to root and is not empty ({}); `run` only takes over an empty directory",
                            crate::stamp::abbreviate(&tree.entries, 3)
                        ),
                        format!(
                            "if it really is the service's data (a restored backup), give it to the service: `chown -R {user}: {}`; otherwise choose another service.data_dir",
                            d.path.display()
                        ),
                    ));
                    continue;
                }
                if *uid == 0 && !is_user && no_chown {
                    out.push(
                        DirProblem::NoChown {
                            path: d.path.clone(),
                            user: user.clone(),
                        }
                        .finding(),
                    );
                    continue;
                }
                let mut notes = Vec::new();
                if *uid == 0 {
                    notes.push(format!("owned by root; `run` gives it to {user}"));
                }
                if *mode != d.want_mode {
                    notes.push(format!("mode {mode:04o}; `run` sets {:04o}", d.want_mode));
                }
                if notes.is_empty() {
                    out.push(Finding::ok(
                        Rule::DataDirOwnerMode,
                        subject,
                        format!("owner {uid}:{gid}, mode {mode:04o}"),
                    ));
                } else {
                    out.push(Finding::info(
                        Rule::DataDirOwnerMode,
                        subject,
                        notes.join("; "),
                    ));
                }
            }
        }
    }
    if let Some((path, free)) = &tree.free_bytes {
        let mib = free / (1024 * 1024);
        let subject = format!("free space at {}", path.display());
        out.push(if *free < CRITICAL_DISK {
            Finding::error(
                Rule::DataDirFreeSpace,
                subject,
                format!("{mib} MiB free"),
                "free disk space before starting: migrations and collectstatic need room",
            )
        } else if *free < LOW_DISK {
            Finding::warning(
                Rule::DataDirFreeSpace,
                subject,
                format!("only {mib} MiB free"),
                "free some disk space",
            )
        } else {
            Finding::ok(Rule::DataDirFreeSpace, subject, format!("{mib} MiB free"))
        });
    }
    out
}

/// In a unit with `StateDirectory=` (the unprivileged unit), systemd creates the service
/// user's directory and names it in `STATE_DIRECTORY` (absolute paths, ':'-separated).
/// The data directory must be one of them: anywhere else it is not the directory systemd
/// made writable and owns for the user, and under ProtectSystem=strict it cannot be
/// created at all.
fn state_directory(cfg: &Config, facts: &Facts) -> Option<Finding> {
    let (_, value) = facts
        .inherited
        .iter()
        .find(|(k, _)| k == "STATE_DIRECTORY")?;
    let data_dir = &cfg.service.data_dir;
    if value
        .split(':')
        .any(|p| std::path::Path::new(p) == data_dir.as_path())
    {
        return None;
    }
    let first = value.split(':').next().unwrap_or(value);
    Some(Finding::error(
        Rule::DataDirStateDirectory,
        data_dir.display().to_string(),
        format!(
            "is not the directory systemd created for the unit (StateDirectory=, STATE_DIRECTORY={value})"
        ),
        format!(
            "set service.data_dir = \"{first}\", or render the unit again from this config (`bitpoll-launcher unit --unprivileged` derives StateDirectory= from service.data_dir)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture;

    fn errors(f: &[Finding]) -> Vec<&Finding> {
        f.iter().filter(|f| f.is_error()).collect()
    }

    #[test]
    fn a_parent_others_can_write_is_refused_naming_it_and_the_fix() {
        let mut facts = fixture::facts();
        facts.trust.data_dir_parent = Err(crate::facts::Untrusted::Writable {
            dir: "/srv/pub".into(),
            mode: 0o777,
        });
        let f = judge(&fixture::config(""), &facts);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert!(
            e[0].message.contains("/srv/pub on the way to the data directory is writable by every user (mode 0777) without the sticky bit"),
            "{}",
            e[0]
        );
        assert!(
            e[0].fix
                .as_deref()
                .unwrap()
                .starts_with("chmod go-w /srv/pub")
        );
    }

    #[test]
    fn a_healthy_tree_has_no_problem() {
        let f = judge(&fixture::config(""), &fixture::facts());
        assert!(errors(&f).is_empty(), "{f:?}");
    }

    #[test]
    fn a_tree_owned_by_someone_else_is_refused_and_not_looked_into() {
        let mut facts = fixture::facts();
        facts.tree.dirs[0].state = DirState::Present {
            uid: 65534,
            gid: 65534,
            mode: 0o750,
            owner_name: Some("nobody".into()),
        };
        let f = judge(&fixture::config(""), &facts);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert!(e[0].message.contains("owned by nobody"));
        assert!(e[0].fix.as_deref().unwrap().contains("chown -R"));
        assert!(!f.iter().any(|f| f.subject.ends_with("/secrets")));
    }

    #[test]
    fn links_and_files_in_the_layout_are_refused() {
        for state in [DirState::Symlink, DirState::NotADirectory] {
            let mut facts = fixture::facts();
            facts.tree.dirs[2].state = state.clone();
            let f = judge(&fixture::config(""), &facts);
            assert_eq!(errors(&f).len(), 1, "{state:?}: {f:?}");
        }
    }

    #[test]
    fn a_missing_parent_is_refused() {
        let mut facts = fixture::facts();
        facts.tree.parent_exists = false;
        let f = judge(&fixture::config(""), &facts);
        assert!(errors(&f)[0].message.contains("its parent"));
    }

    #[test]
    fn root_owned_or_wrong_mode_is_repaired_by_run() {
        let mut facts = fixture::facts();
        facts.tree.dirs[0].state = DirState::Present {
            uid: 0,
            gid: 0,
            mode: 0o755,
            owner_name: None,
        };
        facts.tree.entries.clear();
        let f = judge(&fixture::config(""), &facts);
        assert!(errors(&f).is_empty(), "{f:?}");
        assert!(
            f.iter().any(|f| f.message
                == "owned by root; `run` gives it to bitpoll; mode 0755; `run` sets 0750")
        );
    }

    #[test]
    fn a_root_owned_data_dir_is_taken_over_only_when_empty() {
        let mut facts = fixture::facts();
        facts.tree.dirs[0].state = DirState::Present {
            uid: 0,
            gid: 0,
            mode: 0o750,
            owner_name: None,
        };
        let f = judge(&fixture::config(""), &facts);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert!(e[0].message.contains("db.sqlite3, secrets"), "{}", e[0]);
        facts.tree.entries.clear();
        assert!(errors(&judge(&fixture::config(""), &facts)).is_empty());
    }

    #[test]
    fn an_unprivileged_launcher_cannot_repair_a_root_owned_tree() {
        let mut facts = fixture::facts();
        facts.observer = Observer::ServiceUser;
        facts.tree.dirs[0].state = DirState::Present {
            uid: 0,
            gid: 0,
            mode: 0o750,
            owner_name: None,
        };
        assert_eq!(errors(&judge(&fixture::config(""), &facts)).len(), 1);
    }

    #[test]
    fn the_data_dir_must_be_the_state_directory_systemd_made() {
        let mut facts = fixture::facts();
        let data_dir = fixture::config("").service.data_dir;
        facts.inherited = vec![(
            "STATE_DIRECTORY".into(),
            format!("/var/lib/other:{}", data_dir.display()),
        )];
        assert!(errors(&judge(&fixture::config(""), &facts)).is_empty());
        facts.inherited = vec![("STATE_DIRECTORY".into(), "/var/lib/other".into())];
        let f = judge(&fixture::config(""), &facts);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert!(
            e[0].message.contains("STATE_DIRECTORY=/var/lib/other"),
            "{}",
            e[0]
        );
        assert!(
            e[0].fix
                .as_deref()
                .unwrap()
                .contains("service.data_dir = \"/var/lib/other\""),
            "{}",
            e[0]
        );
    }

    #[test]
    fn without_cap_chown_root_owned_or_missing_directories_are_refused() {
        let mut facts = fixture::facts();
        facts.can_chown = false;
        assert!(
            errors(&judge(&fixture::config(""), &facts)).is_empty(),
            "the user's own tree needs no chown"
        );
        facts.tree.dirs[2].state = DirState::Present {
            uid: 0,
            gid: 0,
            mode: 0o755,
            owner_name: Some("root".into()),
        };
        let f = judge(&fixture::config(""), &facts);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert!(e[0].message.contains("without CAP_CHOWN"), "{}", e[0]);
        assert!(
            e[0].fix
                .as_deref()
                .unwrap()
                .contains("chown -R bitpoll: /var/lib/bitpoll/media"),
            "{}",
            e[0]
        );

        let mut facts = fixture::facts();
        facts.can_chown = false;
        for d in &mut facts.tree.dirs {
            d.state = DirState::Missing;
        }
        facts.tree.entries.clear();
        let f = judge(&fixture::config(""), &facts);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert!(
            e[0].fix.as_deref().unwrap().contains("tmpfiles"),
            "{}",
            e[0]
        );
        facts.can_chown = true;
        assert!(errors(&judge(&fixture::config(""), &facts)).is_empty());
    }

    #[test]
    fn almost_no_free_space_is_an_error_and_little_a_warning() {
        let mut facts = fixture::facts();
        facts.tree.free_bytes = Some(("/var/lib".into(), CRITICAL_DISK - 1));
        assert_eq!(errors(&judge(&fixture::config(""), &facts)).len(), 1);
        facts.tree.free_bytes = Some(("/var/lib".into(), LOW_DISK - 1));
        let f = judge(&fixture::config(""), &facts);
        assert!(errors(&f).is_empty());
        assert!(f.iter().any(|f| f.message.starts_with("only")));
    }
}
