//! The directories phase: the data directory tree with exact owner and mode, made or
//! repaired while acting as the service user (root only where it must).

use tracing::info;

use launcher_config::Config;
use launcher_plan::layout::{TREE, sqlite_files_in_data_dir};
use launcher_sys::privs::Switched;
pub(super) use launcher_sys::tree::DataTree;

use super::Phase;
use super::account::Account;
use crate::exit::{self, Exit};

/// A refusal while acting has the rule of the same problem found ahead.
pub(super) fn tree_exit(e: launcher_sys::tree::TreeError) -> Exit {
    let rule = match &e {
        launcher_sys::tree::TreeError::Refused(p) => Some(p.finding().rule),
        _ => None,
    };
    let exit = Exit::new(exit::SYSTEM, e);
    match rule {
        Some(rule) => exit.rule(rule),
        None => exit,
    }
}

pub(super) fn directories(
    acting: &mut Switched<'_>,
    cfg: &Config,
    account: &Account,
) -> Result<DataTree, Exit> {
    let phase = Phase::begin("directories", "Preparing the data directory");
    let owner = account.owner();
    let (tree, changes) = launcher_sys::tree::ensure(
        acting,
        &cfg.service.data_dir,
        TREE,
        owner,
        &account.account.user,
    )
    .map_err(tree_exit)?;
    for change in &changes {
        info!(phase = "directories", path = %change.path.display(), "{}: {}", change.path.display(), change.what);
    }
    for file in sqlite_files_in_data_dir(cfg) {
        if let Some(change) = launcher_sys::tree::adopt_root_owned_file(
            acting,
            &tree,
            &file,
            owner,
            &account.account.user,
        )
        .map_err(tree_exit)?
        {
            info!(phase = "directories", path = %change.path.display(), "{}: {} (it was left behind by a tool run as root)", change.path.display(), change.what);
        }
    }
    phase.end(&format!(
        "data directory {} ready ({} change{})",
        tree.path.display(),
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    ));
    Ok(tree)
}
