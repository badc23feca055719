//! The facts layer: observe the host once, read-only, into [`Facts`], one module per
//! subject (account, tree, secrets, database, source).
//!
//! Everything `run` and `check` judge is read here and nowhere else: the account, the data
//! directory tree (without following links), the secrets (as root, before any change), the
//! database as far as the launcher can see it without starting Django, the app source,
//! the interpreter, the preparation stamps and the outputs they vouch for. Nothing here
//! creates, changes or decides anything; every read is bounded and never blocks on a FIFO.
//!
//! PostgreSQL is read on the launcher's own connection (crate::postgres): `check` tries
//! once from here; `run` waits for the server itself and fills the same facts, and looks
//! again at what preparation depends on once it holds the locks ([`refresh_preparation`]).

mod account;
mod database;
mod secrets;
mod source;
mod tree;

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::Path;

use launcher_config::Config;
use launcher_plan::Step;
use launcher_plan::facts::*;
use launcher_plan::layout::{self, SECRETS_DIR, STATE_DIR, TREE, stamp_file_name};
use launcher_plan::postgres::Server;
use launcher_sys::privs::{Identity, Kernel};
use launcher_sys::tree::{DataTree, Inspected};

pub use account::user_ids;
pub use database::db_password;
pub use source::SourceTree;
pub use tree::witness;

/// How to look.
pub struct Options<'a> {
    pub view: View,
    /// The unit whose credentials directory `check` and `manage` read from outside it.
    pub unit: &'a str,
    pub postgres: Postgres,
}

/// Whether and how PostgreSQL is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postgres {
    /// One connection attempt (`check`).
    Once,
    /// Not here: `run` waits for the server and fills the facts itself
    /// (`manage` does not need them).
    Later,
}

/// Observe everything the judgements need, through `ids` for every change of identity.
///
/// As root, secret files and credentials are read with root's rights first (the
/// unprivileged unit's credentials, which belong to the service user, as that user); a
/// data directory that belongs to the service user is then looked at *as* that user, as
/// `run` will act in it, so what is seen is what the user may see, and root's rights
/// never touch the user's files. Any other data directory (missing, root's, someone
/// else's) is looked at as root. A switch that fails is reported in the facts it kept
/// from being read, never made up for by reading as root.
pub fn observe<K: Kernel>(ids: &mut Identity<K>, cfg: &Config, opts: &Options<'_>) -> Facts {
    let euid = ids.current().uid.as_raw();
    let account = account::account(cfg);
    let observer = match &account.user {
        _ if euid == 0 => Observer::Root,
        Some(u) if u.uid == euid => Observer::ServiceUser,
        _ => Observer::Other,
    };
    let credentials_dir = secrets::credentials_dir(opts);
    let service_uid = account.user.as_ref().map_or(euid, |u| u.uid);
    let user = account::user_ids(&account).filter(|_| ids.privileged());
    let owned_by_user = |path: &Path| {
        user.as_ref()
            .is_some_and(|u| account::owner_of(path) == Some(u.uid.as_raw()))
    };
    // The credentials of the unprivileged unit belong to the service user (systemd gives
    // them to User=): root reads them as that user, under the trust rule for that user.
    let credentials_as_user = credentials_dir.as_deref().is_some_and(owned_by_user);
    let from_root: Vec<Option<SecretState>> = cfg
        .secrets
        .values()
        .map(|source| match (source, &user) {
            (launcher_config::SecretSource::Credential(_), Some(u)) if credentials_as_user => {
                match ids.act_as(u.clone()) {
                    // Root again when the guard goes, at the end of this arm.
                    Ok(_as_user) => secrets::read_source(source, credentials_dir.as_deref()),
                    Err(e) => Some(switch_failed(&e)),
                }
            }
            _ => secrets::read_source(source, credentials_dir.as_deref()),
        })
        .collect();
    let looked = match &user {
        Some(u) if owned_by_user(&cfg.service.data_dir) => match ids.act_as(u.clone()) {
            Ok(mut as_user) => look(&mut as_user, cfg, from_root, service_uid),
            Err(e) => Looked::blocked(cfg, from_root, &e),
        },
        _ => look(ids, cfg, from_root, service_uid),
    };
    let mut database = looked.database;
    // Root again: the PostgreSQL connection takes the user's ids itself where it must.
    if let (Postgres::Once, Some(server)) = (opts.postgres, Server::of(cfg)) {
        database.postgresql = Some(database::postgresql(
            ids,
            &server,
            &looked.secrets,
            &account,
            euid,
            observer,
        ));
    }
    Facts {
        euid,
        observer,
        view: opts.view,
        inherited: inherited_env(),
        programs: Programs {
            python_executable: account::executable(&cfg.app.python),
            server_executable: account::executable(Path::new(&cfg.server.command[0])),
        },
        tree: looked.tree,
        account,
        secrets: looked.secrets,
        database,
        can_chown: euid == 0 && launcher_sys::privs::may_chown(),
        trust: trust(cfg, observer, euid),
        python_identity: source::python_identity(&cfg.app.python),
        source: looked.preparation.2,
        stamps: looked.preparation.0,
        witnesses: looked.preparation.1,
        key_record: looked.key_record,
        systemd: SystemdFacts {
            credentials_dir,
            invocation: std::env::var_os("INVOCATION_ID").is_some(),
            unit: opts.unit.to_string(),
        },
    }
}

/// The directories the launcher trusts besides its files, walked under rule 1: root's
/// (or, for a launcher that runs as the service user, that user's) all the way.
fn trust(cfg: &Config, observer: Observer, euid: u32) -> TrustFacts {
    use launcher_sys::trust::{TrustError, trusted_directory};
    let trusted = launcher_sys::Uid::from_raw(if observer == Observer::ServiceUser {
        euid
    } else {
        0
    });
    let walk = |dir: &Path| -> Result<(), Untrusted> {
        trusted_directory(dir, trusted)
            .map(drop)
            .map_err(|e| match e {
                TrustError::Owner {
                    component,
                    uid,
                    mode,
                    ..
                } => Untrusted::Owner {
                    dir: component,
                    uid,
                    mode,
                },
                TrustError::Writable {
                    component, mode, ..
                } => Untrusted::Writable {
                    dir: component,
                    mode,
                },
                TrustError::SharedEntry {
                    component,
                    uid,
                    dir,
                    ..
                } => Untrusted::SharedEntry {
                    entry: component,
                    uid,
                    dir,
                },
                other => Untrusted::Unwalkable(other.reason()),
            })
    };
    let parent = cfg.service.data_dir.parent().unwrap_or(Path::new("/"));
    TrustFacts {
        // A missing parent is a finding of its own.
        data_dir_parent: if parent.is_dir() {
            walk(parent)
        } else {
            Ok(())
        },
        source: walk(&cfg.app.source_dir),
    }
}

/// A secret that could not be read because the switch to the service user failed.
fn switch_failed(e: &launcher_sys::privs::SwitchError) -> SecretState {
    SecretState::Failed {
        failure: SecretFailure::Io,
        message: format!("not read: {e}"),
    }
}

/// What is read in the data directory (as its owner, when that is the service user).
struct Looked {
    tree: TreeFacts,
    secrets: Vec<SecretFact>,
    preparation: Preparation,
    key_record: Option<String>,
    database: DatabaseFacts,
}

impl Looked {
    /// Nothing in the data directory could be read: the switch to its owner failed.
    fn blocked(
        cfg: &Config,
        from_root: Vec<Option<SecretState>>,
        e: &launcher_sys::privs::SwitchError,
    ) -> Looked {
        let error = e.to_string();
        Looked {
            tree: tree::unreadable(cfg, &error),
            secrets: secrets::secrets_not_read(cfg, from_root, &error),
            preparation: preparation(cfg, None, None),
            key_record: None,
            database: DatabaseFacts::default(),
        }
    }
}

fn look<K: Kernel>(
    ids: &mut Identity<K>,
    cfg: &Config,
    mut from_root: Vec<Option<SecretState>>,
    service_uid: u32,
) -> Looked {
    let inspected = launcher_sys::tree::inspect(ids, &cfg.service.data_dir, TREE);
    let fd_of = |name: &str| {
        inspected
            .iter()
            .find(|d| d.spec.name == name)
            .and_then(Inspected::fd)
    };
    let secrets = secrets::secrets(
        ids,
        cfg,
        &mut from_root,
        fd_of(SECRETS_DIR).map(|fd| (fd, cfg.service.data_dir.join(SECRETS_DIR))),
        service_uid,
    );
    let preparation = preparation(cfg, fd_of(""), fd_of(STATE_DIR));
    let key_record = fd_of(STATE_DIR)
        .and_then(|state| launcher_sys::files::read_state(state, layout::KEYS_FILE));
    Looked {
        tree: tree::tree_facts(cfg, &inspected),
        secrets,
        preparation,
        key_record,
        database: database::database(cfg),
    }
}

/// What preparation is decided on: the stamps, the current witnesses of the steps'
/// outputs, the app source.
pub(crate) type Preparation = (
    BTreeMap<Step, String>,
    BTreeMap<Step, String>,
    Result<SourceFacts, String>,
);

fn preparation(
    cfg: &Config,
    data_dir: Option<BorrowedFd<'_>>,
    state: Option<BorrowedFd<'_>>,
) -> Preparation {
    let stamps = state.map(stamps).unwrap_or_default();
    let source = SourceTree::of(cfg);
    let witnesses = Step::ALL
        .into_iter()
        .map(|s| (s, tree::witness(cfg, data_dir, s, source.as_ref().ok())))
        .collect();
    (
        stamps,
        witnesses,
        source.map(|s| s.facts).map_err(|e| e.to_string()),
    )
}

/// Every step's stamp in the state directory.
fn stamps(state: BorrowedFd<'_>) -> BTreeMap<Step, String> {
    Step::ALL
        .into_iter()
        .filter_map(|s| {
            Some((
                s,
                launcher_sys::files::read_state(state, &stamp_file_name(s))?,
            ))
        })
        .collect()
}

/// Look again at what preparation is decided on (stamps, outputs, the compiled catalogs,
/// an SQLite database), now through the data directory tree `run` holds: another launcher
/// may have prepared while this one waited for a lock. The app source is not walked again
/// (nothing a launcher does changes it). PostgreSQL is re-read by the caller on its
/// session.
pub fn refresh_preparation(cfg: &Config, tree: &DataTree, facts: &mut Facts) {
    facts.stamps = stamps(tree.dir(STATE_DIR));
    let source = facts.source.as_ref().ok().map(SourceTree::recounted);
    facts.witnesses = Step::ALL
        .into_iter()
        .map(|s| {
            (
                s,
                tree::witness(cfg, Some(tree.dir("")), s, source.as_ref()),
            )
        })
        .collect();
    if let Some(source) = source {
        facts.source = Ok(source.facts);
    }
    facts.database.sqlite = database::database(cfg).sqlite;
}

/// The launcher's own environment (UTF-8 entries only), the input of env::build.
pub fn inherited_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
