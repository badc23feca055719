//! The data directory: `run` may create it and repair its owner and mode, but never takes
//! over a tree that belongs to someone else and never follows a link inside it.

use launcher_config::Config;

use crate::facts::{DirState, Facts, Observer};
use crate::finding::{Finding, Group};

/// Below this much free space in the data directory's file system: a warning.
pub const LOW_DISK: u64 = 512 * 1024 * 1024;
/// Below this: an error (a migration or collectstatic would fail half-way).
pub const CRITICAL_DISK: u64 = 32 * 1024 * 1024;

pub fn judge(cfg: &Config, facts: &Facts) -> Vec<Finding> {
    let user = &cfg.service.user;
    let data_dir = &cfg.service.data_dir;
    let user_uid = facts.account.user.as_ref().map(|u| u.uid);
    let mut out = Vec::new();
    let tree = &facts.tree;
    if !tree.parent_exists {
        let parent = data_dir.parent().unwrap_or(data_dir);
        out.push(Finding::error(
            Group::DataDir,
            data_dir.display().to_string(),
            format!("its parent {} does not exist", parent.display()),
            format!(
                "create {}, or point service.data_dir elsewhere",
                parent.display()
            ),
        ));
        return out;
    }
    let root_usable = matches!(
        tree.dirs.first().map(|d| &d.state),
        Some(DirState::Present { .. })
    );
    for d in &tree.dirs {
        let subject = d.path.display().to_string();
        match &d.state {
            DirState::Missing if d.name.is_empty() || root_usable => out.push(Finding::info(
                Group::DataDir,
                subject,
                format!("does not exist yet; `run` creates it ({:04o})", d.want_mode),
            )),
            DirState::Missing => {}
            DirState::Symlink => out.push(Finding::error(
                Group::DataDir,
                subject,
                "is a symbolic link; the launcher refuses to follow links here",
                "replace it with a real directory (or point service.data_dir at the link's target)",
            )),
            DirState::NotADirectory => out.push(Finding::error(
                Group::DataDir,
                subject,
                "is not a directory",
                "move it away so the launcher can create the directory",
            )),
            DirState::Unreadable { denied, error } => {
                if facts.observer == Observer::Root || !denied {
                    out.push(Finding::error(
                        Group::DataDir,
                        subject,
                        format!("cannot be inspected: {error}"),
                        "check the file system",
                    ));
                } else {
                    out.push(Finding::warning(
                        Group::DataDir,
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
                    out.push(Finding::error(
                        Group::DataDir,
                        subject,
                        format!(
                            "is owned by uid {uid}, but the launcher runs unprivileged as uid {}",
                            facts.euid
                        ),
                        format!(
                            "run the launcher as root once, or `chown {user} {}`",
                            d.path.display()
                        ),
                    ));
                    continue;
                }
                if !is_user && *uid != 0 {
                    let name = owner_name.clone().unwrap_or_else(|| format!("uid {uid}"));
                    out.push(Finding::error(
                        Group::DataDir,
                        subject,
                        format!("is owned by {name}, not {user}; `run` refuses to take it over"),
                        format!(
                            "refusing to take over another user's files: if it really belongs to the service, run `chown -R {user}: {}` once; otherwise choose another service.data_dir",
                            d.path.display()
                        ),
                    ));
                    if d.name.is_empty() {
                        // Not looked into: nothing below it is the launcher's business.
                        break;
                    }
                    continue;
                }
                if *uid == 0 && d.name.is_empty() && !is_user && !tree.entries.is_empty() {
                    out.push(Finding::error(
                        Group::DataDir,
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
                let mut notes = Vec::new();
                if *uid == 0 {
                    notes.push(format!("owned by root; `run` gives it to {user}"));
                }
                if *mode != d.want_mode {
                    notes.push(format!("mode {mode:04o}; `run` sets {:04o}", d.want_mode));
                }
                if notes.is_empty() {
                    out.push(Finding::ok(
                        Group::DataDir,
                        subject,
                        format!("owner {uid}:{gid}, mode {mode:04o}"),
                    ));
                } else {
                    out.push(Finding::info(Group::DataDir, subject, notes.join("; ")));
                }
            }
        }
    }
    if let Some((path, free)) = &tree.free_bytes {
        let mib = free / (1024 * 1024);
        let subject = format!("free space at {}", path.display());
        out.push(if *free < CRITICAL_DISK {
            Finding::error(
                Group::DataDir,
                subject,
                format!("{mib} MiB free"),
                "free disk space before starting: migrations and collectstatic need room",
            )
        } else if *free < LOW_DISK {
            Finding::warning(
                Group::DataDir,
                subject,
                format!("only {mib} MiB free"),
                "free some disk space",
            )
        } else {
            Finding::ok(Group::DataDir, subject, format!("{mib} MiB free"))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture;

    fn errors(f: &[Finding]) -> Vec<&Finding> {
        f.iter().filter(|f| f.is_error()).collect()
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
