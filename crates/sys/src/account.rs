//! The service account: look it up, create it where allowed, or explain why not.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Group, Uid, User};

use launcher_plan::judge::account::AccountProblem;

/// The resolved service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub uid: Uid,
    pub group: String,
    pub gid: Gid,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Supplementary groups of the user (from the group database), including `gid`.
    pub groups: Vec<Gid>,
}

/// Why the account could not be made or used. An account the service may not use is an
/// [`AccountProblem`], the same reason the judgement ahead of the start gives, worded once
/// by launcher_plan.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{}", .0.finding())]
    Refused(AccountProblem),
    #[error("cannot create {what} {name:?}: `{command}` failed ({status}): {stderr}")]
    CreateFailed {
        what: &'static str,
        name: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot look up {what} {name:?} in the account database: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        #[source]
        source: nix::Error,
    },
}

fn missing(what: &'static str, name: &str, create_user: bool) -> AccountError {
    AccountError::Refused(AccountProblem::Missing {
        what,
        name: name.into(),
        create_user,
    })
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    pub group: bool,
    pub user: bool,
}

fn lookup_group(name: &str) -> Result<Option<Group>, AccountError> {
    Group::from_name(name).map_err(|source| AccountError::Lookup {
        what: "group",
        name: name.into(),
        source,
    })
}

fn lookup_user(name: &str) -> Result<Option<User>, AccountError> {
    User::from_name(name).map_err(|source| AccountError::Lookup {
        what: "user",
        name: name.into(),
        source,
    })
}

/// Look the account up without changing anything.
pub fn lookup(user: &str, group: &str) -> Result<Option<Account>, AccountError> {
    let (Some(u), Some(g)) = (lookup_user(user)?, lookup_group(group)?) else {
        return Ok(None);
    };
    resolve(u, g).map(Some)
}

fn resolve(u: User, g: Group) -> Result<Account, AccountError> {
    if u.uid.is_root() {
        return Err(AccountError::Refused(AccountProblem::UserIsRoot {
            user: u.name,
        }));
    }
    if g.gid.as_raw() == 0 {
        return Err(AccountError::Refused(AccountProblem::GroupIsRoot {
            group: g.name,
        }));
    }
    let cname = CString::new(u.name.clone()).expect("user names from the database have no NUL");
    let mut groups =
        nix::unistd::getgrouplist(&cname, g.gid).map_err(|source| AccountError::Lookup {
            what: "groups of user",
            name: u.name.clone(),
            source,
        })?;
    groups.sort_by_key(|g| g.as_raw());
    groups.dedup();
    Ok(Account {
        user: u.name,
        uid: u.uid,
        group: g.name,
        gid: g.gid,
        home: u.dir,
        shell: u.shell,
        groups,
    })
}

/// Make sure the account exists. With `create` (and as root) a missing group and user are
/// created as a system group and a system user without login shell, home = `home`.
pub fn ensure(
    user: &str,
    group: &str,
    home: &Path,
    create: bool,
) -> Result<(Account, Created), AccountError> {
    let mut created = Created::default();
    let g = match lookup_group(group)? {
        Some(g) => g,
        None if create => {
            run_tool("group", group, "groupadd", &["--system", group])?;
            created.group = true;
            lookup_group(group)?.ok_or_else(|| missing("group", group, create))?
        }
        None => return Err(missing("group", group, create)),
    };
    let u = match lookup_user(user)? {
        Some(u) => u,
        None if create => {
            let home = home.to_string_lossy();
            let shell = nologin_shell();
            run_tool(
                "user",
                user,
                "useradd",
                &[
                    "--system",
                    "--gid",
                    group,
                    "--home-dir",
                    &home,
                    "--no-create-home",
                    "--shell",
                    &shell,
                    "--comment",
                    "Bitpoll service",
                    user,
                ],
            )?;
            created.user = true;
            lookup_user(user)?.ok_or_else(|| missing("user", user, create))?
        }
        None => return Err(missing("user", user, create)),
    };
    Ok((resolve(u, g)?, created))
}

/// The configured account, for a launcher that is not root: it must already be that user.
pub fn verify_current(user: &str, group: &str) -> Result<Account, AccountError> {
    let account = lookup(user, group)?.ok_or_else(|| match lookup_user(user) {
        Ok(Some(_)) => missing("group", group, false),
        _ => missing("user", user, false),
    })?;
    let uid = nix::unistd::geteuid();
    if uid != account.uid {
        return Err(AccountError::Refused(AccountProblem::WrongUser {
            uid: uid.as_raw(),
            user: user.into(),
            want: account.uid.as_raw(),
        }));
    }
    Ok(account)
}

fn nologin_shell() -> String {
    [
        "/usr/sbin/nologin",
        "/sbin/nologin",
        "/run/current-system/sw/bin/nologin",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("/bin/false")
    .to_string()
}

/// Whether /etc is on a read-only mount (ProtectSystem=strict/full, a read-only root).
pub fn etc_is_read_only() -> bool {
    nix::sys::statvfs::statvfs("/etc")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// The shadow tools live in sbin, which a minimal PATH may lack.
fn admin_tool(tool: &str) -> PathBuf {
    [
        "/usr/sbin",
        "/sbin",
        "/run/current-system/sw/bin",
        "/usr/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(tool))
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from(tool))
}

fn run_tool(what: &'static str, name: &str, tool: &str, args: &[&str]) -> Result<(), AccountError> {
    if etc_is_read_only() {
        return Err(AccountError::Refused(AccountProblem::ReadOnlyEtc {
            what,
            name: name.into(),
        }));
    }
    let out = Command::new(admin_tool(tool))
        .args(args)
        .output()
        .map_err(|e| AccountError::CreateFailed {
            what,
            name: name.into(),
            command: format!("{tool} {}", args.join(" ")),
            status: "not started".into(),
            stderr: format!("{e} (is the shadow/passwd package installed?)"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("Read-only file system") {
        return Err(AccountError::Refused(AccountProblem::ReadOnlyEtc {
            what,
            name: name.into(),
        }));
    }
    Err(AccountError::CreateFailed {
        what,
        name: name.into(),
        command: format!("{tool} {}", args.join(" ")),
        status: out.status.to_string(),
        stderr,
    })
}
