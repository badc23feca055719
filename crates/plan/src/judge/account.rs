//! The service account: it exists or `run` can create it, and it is safe to hand the app.

use launcher_config::Config;

use crate::facts::{Facts, Observer};
use crate::finding::Finding;
use crate::rule::Rule;

/// How to declare the account ahead, for every message that needs it.
const DECLARE: &str = "it must be declared ahead: on NixOS with users.users/users.groups (the module does), elsewhere with `bitpoll-launcher sysusers --config FILE > /etc/sysusers.d/bitpoll.conf && systemd-sysusers`; then set service.create_user = false";

/// Groups whose members can read or change what the system keeps from everyone else:
/// the app must not carry them (its code runs with every group of its user).
pub const PRIVILEGED_GROUPS: &[&str] = &[
    "root",
    "wheel",
    "sudo",
    "admin",
    "adm",
    "shadow",
    "disk",
    "kmem",
    "mem",
    "docker",
    "podman",
    "lxd",
    "incus",
    "libvirt",
    "kvm",
    "systemd-journal",
    "systemd-network",
    "staff",
    "operator",
    "tty",
    "input",
    "video",
    "audio",
    "lp",
    "dialout",
    "nixbld",
    "trusted",
];

/// Shared "no one" accounts: files they own belong to every service that uses them.
const SHARED_ACCOUNTS: &[&str] = &["nobody", "nfsnobody", "nogroup"];

/// Why the account cannot be used, whoever finds it: this judgement ahead of a start, or
/// `launcher_sys::account` while `run` acts (what changed in between). Either way it is
/// worded once, by [`AccountProblem::finding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountProblem {
    /// The user or group (`what`) does not exist and cannot be created here.
    Missing {
        what: &'static str,
        name: String,
        create_user: bool,
    },
    /// It must be created, and /etc is read-only here.
    ReadOnlyEtc {
        what: &'static str,
        name: String,
    },
    UserIsRoot {
        user: String,
    },
    GroupIsRoot {
        group: String,
    },
    /// The launcher is not root and runs as another user than the service's.
    WrongUser {
        uid: u32,
        user: String,
        want: u32,
    },
}

impl AccountProblem {
    /// The finding: an error with its fix.
    pub fn finding(&self) -> Finding {
        match self {
            AccountProblem::Missing {
                what,
                name,
                create_user: true,
            } => Finding::error(
                Rule::AccountMissing,
                format!("{what} {name}"),
                "does not exist, and only root can create it",
                format!("run the launcher as root once, or {DECLARE}"),
            ),
            AccountProblem::Missing { what, name, .. } => Finding::error(
                Rule::AccountMissing,
                format!("{what} {name}"),
                "does not exist and service.create_user = false",
                DECLARE,
            ),
            AccountProblem::ReadOnlyEtc { what, name } => Finding::error(
                Rule::AccountEtcReadOnly,
                format!("{what} {name}"),
                "does not exist, and /etc is read-only here (a unit with ProtectSystem=strict or full), so `run` cannot create it",
                DECLARE,
            ),
            AccountProblem::UserIsRoot { user } => Finding::error(
                Rule::AccountRootUser,
                format!("user {user}"),
                format!("{user} has uid 0"),
                "the service must run unprivileged: give it its own non-root uid",
            ),
            AccountProblem::GroupIsRoot { group } => Finding::error(
                Rule::AccountRootGroup,
                format!("group {group}"),
                format!("{group} has gid 0"),
                "use a dedicated non-root group",
            ),
            AccountProblem::WrongUser { uid, user, want } => Finding::error(
                Rule::AccountWrongUser,
                format!("uid {uid}"),
                format!(
                    "the launcher runs as uid {uid}, not as the configured user {user} (uid {want})"
                ),
                format!("run it as root or as {user}"),
            ),
        }
    }
}

/// What `run` does about the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It exists as required.
    Use,
    /// `run` creates the group and/or user as root.
    Create { group: bool, user: bool },
    /// It cannot be used: the findings say why.
    Refuse,
}

/// The findings about the account, and what `run` does about it.
pub fn judge(cfg: &Config, facts: &Facts) -> (Action, Vec<Finding>) {
    let svc = &cfg.service;
    let acc = &facts.account;
    // `check` as another user predicts a start as root; only the service user itself
    // cannot create accounts.
    let can_create = svc.create_user && facts.observer != Observer::ServiceUser;
    let mut out = Vec::new();
    let group_subject = format!("group {}", svc.group);
    let user_subject = format!("user {}", svc.user);
    match &acc.group {
        Some(g) if g.gid == 0 => out.push(
            AccountProblem::GroupIsRoot {
                group: svc.group.clone(),
            }
            .finding(),
        ),
        Some(g) => out.push(Finding::ok(
            Rule::AccountGroup,
            &group_subject,
            format!("exists (gid {})", g.gid),
        )),
        None if can_create && acc.etc_read_only => out.push(
            AccountProblem::ReadOnlyEtc {
                what: "group",
                name: svc.group.clone(),
            }
            .finding(),
        ),
        None if can_create => out.push(Finding::info(
            Rule::AccountGroup,
            &group_subject,
            "does not exist yet; `run` creates it (create_user = true)",
        )),
        None => out.push(
            AccountProblem::Missing {
                what: "group",
                name: svc.group.clone(),
                create_user: svc.create_user,
            }
            .finding(),
        ),
    }
    match &acc.user {
        Some(u) if u.uid == 0 => out.push(
            AccountProblem::UserIsRoot {
                user: svc.user.clone(),
            }
            .finding(),
        ),
        Some(u) => {
            out.push(Finding::ok(
                Rule::AccountUser,
                &user_subject,
                format!("exists (uid {}, primary gid {})", u.uid, u.gid),
            ));
            if u.home != svc.data_dir {
                out.push(Finding::warning(
                    Rule::AccountHome,
                    &user_subject,
                    format!(
                        "home is {}, not the data directory {}",
                        u.home.display(),
                        svc.data_dir.display()
                    ),
                    format!("usermod -d {} {}", svc.data_dir.display(), svc.user),
                ));
            }
            let shell = u.shell.to_string_lossy();
            if !(shell.ends_with("nologin") || shell.ends_with("false")) {
                out.push(Finding::warning(
                    Rule::AccountLoginShell,
                    &user_subject,
                    format!("has a login shell ({shell})"),
                    format!("usermod -s /usr/sbin/nologin {}", svc.user),
                ));
            }
            if let Some(g) = &acc.group {
                if u.gid != g.gid && !g.members.contains(&u.name) {
                    out.push(Finding::info(
                        Rule::AccountNotMember,
                        &user_subject,
                        format!(
                            "is not a member of {}; the launcher runs the app with gid {} anyway",
                            svc.group, g.gid
                        ),
                    ));
                }
            }
        }
        None if can_create && acc.etc_read_only => out.push(
            AccountProblem::ReadOnlyEtc {
                what: "user",
                name: svc.user.clone(),
            }
            .finding(),
        ),
        None if can_create => out.push(Finding::info(
            Rule::AccountUser,
            &user_subject,
            "does not exist yet; `run` creates it as a system user (create_user = true)",
        )),
        None => out.push(
            AccountProblem::Missing {
                what: "user",
                name: svc.user.clone(),
                create_user: svc.create_user,
            }
            .finding(),
        ),
    }
    out.extend(identity(cfg, facts));
    let action = if out.iter().any(Finding::is_error) {
        Action::Refuse
    } else {
        match (&acc.group, &acc.user) {
            (Some(_), Some(_)) => Action::Use,
            (g, u) => Action::Create {
                group: g.is_none(),
                user: u.is_none(),
            },
        }
    };
    (action, out)
}

/// The identity handed to the app: no privileged group, not a shared account, not a
/// person's login unless the config says so. A launcher that already runs as the service
/// user (a try-out as oneself, the unprivileged unit) hands over nothing it did not have:
/// there the same findings are warnings.
fn identity(cfg: &Config, facts: &Facts) -> Vec<Finding> {
    let handed_over = facts.observer != Observer::ServiceUser;
    identity_rules(cfg, facts)
        .into_iter()
        .map(|f| {
            if handed_over {
                f
            } else {
                Finding {
                    severity: crate::finding::Severity::Warning,
                    message: format!("{} (the launcher already runs as this user)", f.message),
                    ..f
                }
            }
        })
        .collect()
}

fn identity_rules(cfg: &Config, facts: &Facts) -> Vec<Finding> {
    let svc = &cfg.service;
    let acc = &facts.account;
    let subject = format!("user {}", svc.user);
    let mut out = Vec::new();
    let privileged: Vec<String> = acc
        .supplementary
        .iter()
        .filter(|(gid, name)| *gid == 0 || PRIVILEGED_GROUPS.contains(&name.as_str()))
        .map(|(gid, name)| format!("{name} ({gid})"))
        .collect();
    if !privileged.is_empty() {
        let names: Vec<&str> = acc
            .supplementary
            .iter()
            .filter(|(gid, name)| *gid == 0 || PRIVILEGED_GROUPS.contains(&name.as_str()))
            .map(|(_, name)| name.as_str())
            .collect();
        out.push(Finding::error(
            Rule::AccountPrivilegedGroup,
            &subject,
            format!(
                "is a member of the privileged group(s) {}, which the app would keep",
                privileged.join(", ")
            ),
            format!(
                "give the service an account of its own without them: {}",
                names
                    .iter()
                    .map(|g| format!("gpasswd -d {} {g}", svc.user))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    let shared = |name: &str| SHARED_ACCOUNTS.contains(&name);
    if let Some(u) = &acc.user {
        if shared(&u.name) || u.uid == 65534 {
            out.push(Finding::error(
                Rule::AccountShared,
                &subject,
                format!(
                    "{} is the shared account of many services: files it owns are theirs too",
                    u.name
                ),
                "use a dedicated account such as \"bitpoll\"",
            ));
        }
        let shell = u.shell.to_string_lossy();
        let login = !(shell.ends_with("nologin") || shell.ends_with("false"));
        if u.uid >= acc.uid_min && u.uid != 65534 && login && !svc.allow_login_account {
            out.push(Finding::error(
                Rule::AccountPerson,
                &subject,
                format!(
                    "looks like a person's account (uid {} >= UID_MIN {}, login shell {shell}): the app would own that person's files and sessions",
                    u.uid, acc.uid_min
                ),
                "use a dedicated system account (the launcher creates one with create_user = true), or set service.allow_login_account = true if this really is the service's account",
            ));
        }
    }
    if let Some(g) = &acc.group {
        if shared(&g.name) || g.gid == 65534 {
            out.push(Finding::error(
                Rule::AccountShared,
                format!("group {}", svc.group),
                format!("{} is the shared group of many services", g.name),
                "use a dedicated group",
            ));
        }
    }
    out
}

/// A launcher that is not root must already be the service user (`run` only: `check` by
/// another user reports what it could not see instead).
pub fn launcher_identity(cfg: &Config, facts: &Facts) -> Option<Finding> {
    if facts.euid == 0 {
        return None;
    }
    let subject = format!("uid {}", facts.euid);
    match &facts.account.user {
        Some(u) if u.uid == facts.euid => None,
        Some(u) => Some(
            AccountProblem::WrongUser {
                uid: facts.euid,
                user: cfg.service.user.clone(),
                want: u.uid,
            }
            .finding(),
        ),
        None => Some(Finding::error(
            Rule::AccountMissing,
            subject,
            format!(
                "the launcher is not root and the user {} does not exist, so it cannot be created",
                cfg.service.user
            ),
            format!("run the launcher as root once, or {DECLARE}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture;

    #[test]
    fn missing_account_is_created_as_root_with_create_user() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.account.user = None;
        facts.account.group = None;
        let (action, f) = judge(&cfg, &facts);
        assert_eq!(
            action,
            Action::Create {
                group: true,
                user: true
            }
        );
        assert!(f.iter().all(|f| !f.is_error()), "{f:?}");
    }

    #[test]
    fn missing_account_without_create_user_must_be_declared_ahead() {
        let cfg = fixture::config("create_user = false");
        let mut facts = fixture::facts();
        facts.account.user = None;
        let (action, f) = judge(&cfg, &facts);
        assert_eq!(action, Action::Refuse);
        let e = f.iter().find(|f| f.is_error()).unwrap();
        assert!(e.fix.as_deref().unwrap().contains("sysusers"));
        assert!(e.fix.as_deref().unwrap().contains("users.users"));
    }

    #[test]
    fn read_only_etc_refuses_creation() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.account.user = None;
        facts.account.etc_read_only = true;
        let (action, f) = judge(&cfg, &facts);
        assert_eq!(action, Action::Refuse);
        assert!(f.iter().any(|f| f.message.contains("/etc is read-only")));
    }

    #[test]
    fn root_ids_are_refused() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.account.user.as_mut().unwrap().uid = 0;
        facts.account.group.as_mut().unwrap().gid = 0;
        let (action, f) = judge(&cfg, &facts);
        assert_eq!(action, Action::Refuse);
        assert_eq!(f.iter().filter(|f| f.is_error()).count(), 2);
    }

    #[test]
    fn a_privileged_supplementary_group_is_refused() {
        let cfg = fixture::config("");
        for (gid, name) in [(0, "root"), (27, "sudo"), (999, "docker"), (4, "adm")] {
            let mut facts = fixture::facts();
            facts.account.supplementary.push((gid, name.into()));
            let (action, f) = judge(&cfg, &facts);
            assert_eq!(action, Action::Refuse, "{name}");
            let e = f.iter().find(|f| f.is_error()).unwrap();
            assert!(e.message.contains(name), "{e}");
            assert!(
                e.fix.as_deref().unwrap().contains("gpasswd -d bitpoll"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_launcher_running_as_the_user_itself_is_only_warned_about_its_groups() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.account.supplementary.push((27, "sudo".into()));
        facts.observer = Observer::ServiceUser;
        facts.euid = facts.account.user.as_ref().unwrap().uid;
        let (action, f) = judge(&cfg, &facts);
        assert_eq!(action, Action::Use, "{f:?}");
        assert!(
            f.iter()
                .any(|f| f.severity == crate::finding::Severity::Warning
                    && f.message.contains("sudo"))
        );
    }

    #[test]
    fn nobody_and_human_accounts_are_refused_unless_allowed() {
        let mut facts = fixture::facts();
        facts.account.user.as_mut().unwrap().name = "nobody".into();
        facts.account.user.as_mut().unwrap().uid = 65534;
        assert_eq!(judge(&fixture::config(""), &facts).0, Action::Refuse);

        let mut facts = fixture::facts();
        let u = facts.account.user.as_mut().unwrap();
        u.uid = 1000;
        u.shell = "/bin/bash".into();
        let (action, f) = judge(&fixture::config(""), &facts);
        assert_eq!(action, Action::Refuse, "{f:?}");
        let (action, _) = judge(&fixture::config("allow_login_account = true"), &facts);
        assert_eq!(action, Action::Use);
        // A system account with a shell is only a warning.
        facts.account.user.as_mut().unwrap().uid = 990;
        assert_eq!(judge(&fixture::config(""), &facts).0, Action::Use);
    }

    #[test]
    fn an_unprivileged_launcher_must_be_the_service_user() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.euid = 4242;
        assert!(launcher_identity(&cfg, &facts).is_some());
        facts.euid = facts.account.user.as_ref().unwrap().uid;
        assert!(launcher_identity(&cfg, &facts).is_none());
        facts.euid = 0;
        assert!(launcher_identity(&cfg, &facts).is_none());
    }
}
