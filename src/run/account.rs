//! The account phase: the service user and group exist (created as root where the
//! judgement says so, else verified), and from here on a root launcher acts as that user.

use anyhow::Context as _;
use tracing::info;

use launcher_config::Config;
use launcher_plan::judge::{self, Start};
use launcher_sys::privs::{Identity, Ids, Switched};

use super::{Phase, Waits};
use crate::exit::{self, Exit, OrExit};

/// The service account as the start uses it.
pub(super) struct Account {
    pub account: launcher_sys::account::Account,
    /// The launcher is root (and drops to the account at the end).
    pub privileged: bool,
}

impl Account {
    /// Who owns the data directory tree.
    pub fn owner(&self) -> launcher_sys::tree::Owner {
        launcher_sys::tree::Owner {
            uid: self.account.uid,
            gid: self.account.gid,
            privileged: self.privileged,
        }
    }

    /// The identity of the account: its uid, gid and groups.
    pub fn ids(&self) -> Ids {
        Ids {
            uid: self.account.uid,
            gid: self.account.gid,
            groups: self.account.groups.clone(),
        }
    }
}

/// The account as the judgement decided: used as it is, or created as root. The account
/// tools (groupadd, useradd) are waited for even when a stop is asked for meanwhile: one
/// killed half-way could leave the account database locked or half-written; the stop
/// takes effect as soon as they are done, and nothing of the start goes on after them.
pub(super) fn account(waits: &mut Waits, cfg: &Config, start: &Start) -> Result<Account, Exit> {
    let phase = Phase::begin("account", "Checking the service account");
    let privileged = launcher_sys::is_root();
    let svc = &cfg.service;
    let account = if privileged {
        let create = matches!(start.account, judge::account::Action::Create { .. });
        let ensured = launcher_sys::account::ensure(&svc.user, &svc.group, &svc.data_dir, create);
        waits.stopped("creating the account")?;
        let (account, created) = ensured.map_err(account_exit)?;
        if created.group {
            info!(phase = "account", group = %account.group, "created system group {} (gid {})", account.group, account.gid);
        }
        if created.user {
            info!(phase = "account", user = %account.user, "created system user {} (uid {}, home {}, no login shell)", account.user, account.uid, account.home.display());
        }
        account
    } else {
        let account =
            launcher_sys::account::verify_current(&svc.user, &svc.group).map_err(account_exit)?;
        info!(
            phase = "account",
            "not running as root: using the current user {} as is; creating accounts and changing owners is skipped",
            account.user
        );
        account
    };
    phase.end(&format!(
        "service account {} (uid {}) in group {} (gid {})",
        account.user, account.uid, account.group, account.gid
    ));
    Ok(Account {
        account,
        privileged,
    })
}

/// A refusal while acting has the rule of the same problem found ahead.
pub(crate) fn account_exit(e: launcher_sys::account::AccountError) -> Exit {
    let rule = match &e {
        launcher_sys::account::AccountError::Refused(p) => Some(p.finding().rule),
        _ => None,
    };
    let exit = Exit::new(exit::SYSTEM, e);
    match rule {
        Some(rule) => exit.rule(rule),
        None => exit,
    }
}

/// From here on, root acts as the service user in the user's data directory and towards
/// the preparation process, taking root back only where it must; the guard's end (before
/// the drop, or on a failure) makes it root again. Unprivileged, nothing changes.
pub(super) fn act_as<'a>(ids: &'a mut Identity, account: &Account) -> Result<Switched<'a>, Exit> {
    let to = if account.privileged {
        account.ids()
    } else {
        ids.current().clone()
    };
    ids.act_as(to)
        .context("cannot act as the service user")
        .or_exit(exit::PRIVILEGES)
}
