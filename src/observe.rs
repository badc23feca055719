//! The facts layer: observe the host once, read-only, into [`Facts`].
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

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use launcher_config::{Config, Database, SecretSource};
use launcher_plan::Step;
use launcher_plan::facts::*;
use launcher_plan::layout::{self, SECRETS_DIR, STATE_DIR, TREE, stamp_file_name};
use launcher_plan::postgres::Server;
use launcher_plan::secret;
use launcher_sys::files::SecretFileError;
use launcher_sys::tree::{self, DataTree, Inspected, Observed};

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

/// The secret that holds the database password.
pub const DB_PASSWORD: &str = "BITPOLL_DB_PASSWORD";

/// The database password as read, when configured and readable.
pub fn db_password(facts: &Facts) -> Option<&secret::SecretValue> {
    read_password(&facts.secrets)
}

fn read_password(secrets: &[SecretFact]) -> Option<&secret::SecretValue> {
    secrets
        .iter()
        .find(|s| s.name == DB_PASSWORD)
        .and_then(|s| match &s.state {
            SecretState::Read { value, .. } => Some(value),
            _ => None,
        })
}

/// The ids to connect the server's Unix socket as: the service user's, so peer
/// authentication sees the user the app runs as. None when the account does not exist
/// (yet) or this process cannot take them.
pub fn peer_ids(account: &AccountFacts) -> Option<(launcher_sys::Uid, launcher_sys::Gid)> {
    let user = account.user.as_ref()?;
    let gid = account.group.as_ref().map_or(user.gid, |g| g.gid);
    Some((user.uid.into(), gid.into()))
}

/// Observe everything the judgements need.
///
/// As root, secret files and credentials are read with root's rights first; a data
/// directory that belongs to the service user is then looked at *as* that user
/// (`launcher_sys::privs::ActingAs`), as `run` will act in it, so what is seen is what
/// the user may see, and root's rights never touch the user's files. Any other data
/// directory (missing, root's, someone else's) is looked at as root.
pub fn observe(cfg: &Config, opts: &Options<'_>) -> Facts {
    let euid = nix::unistd::geteuid().as_raw();
    let account = account(cfg);
    let observer = match &account.user {
        _ if euid == 0 => Observer::Root,
        Some(u) if u.uid == euid => Observer::ServiceUser,
        _ => Observer::Other,
    };
    let credentials_dir = credentials_dir(opts);
    let service_uid = account.user.as_ref().map_or(euid, |u| u.uid);
    // The credentials of the unprivileged unit belong to the service user (systemd gives
    // them to User=): root reads them as that user, under the trust rule for that user.
    let credentials_user = match (&account.user, &credentials_dir) {
        (Some(u), Some(dir)) if euid == 0 && owner_of(dir) == Some(u.uid) => Some(u),
        _ => None,
    };
    let mut from_root: Vec<Option<SecretState>> = cfg
        .secrets
        .values()
        .map(|source| match (source, credentials_user) {
            (SecretSource::Credential(_), Some(u)) => {
                match launcher_sys::privs::ActingAs::new(u.uid.into(), u.gid.into()) {
                    // Root again when the guard goes, at the end of this arm.
                    Ok(_acting) => read_source(source, credentials_dir.as_deref()),
                    Err(_) => read_source(source, credentials_dir.as_deref()),
                }
            }
            _ => read_source(source, credentials_dir.as_deref()),
        })
        .collect();
    let acting = match &account.user {
        Some(u) if euid == 0 && owner_of(&cfg.service.data_dir) == Some(u.uid) => {
            launcher_sys::privs::ActingAs::new(u.uid.into(), u.gid.into()).ok()
        }
        _ => None,
    };
    let inspected = tree::inspect(&cfg.service.data_dir, TREE);
    let fd_of = |name: &str| {
        inspected
            .iter()
            .find(|d| d.spec.name == name)
            .and_then(Inspected::fd)
    };
    let secrets = secrets(
        cfg,
        &mut from_root,
        fd_of(SECRETS_DIR).map(|fd| (fd, cfg.service.data_dir.join(SECRETS_DIR))),
        service_uid,
    );
    let (stamps, witnesses, source) = preparation(cfg, fd_of(""), fd_of(STATE_DIR));
    let key_record = fd_of(STATE_DIR)
        .and_then(|state| launcher_sys::files::read_state(state, layout::KEYS_FILE));
    let tree = tree_facts(cfg, &inspected);
    let mut database = database(cfg);
    drop(inspected);
    drop(acting);
    // Root again: the PostgreSQL connection takes the user's ids itself where it must.
    if let (Postgres::Once, Some(server)) = (opts.postgres, Server::of(cfg)) {
        database.postgresql = Some(postgresql(&server, &secrets, &account, euid, observer));
    }
    Facts {
        euid,
        observer,
        view: opts.view,
        inherited: inherited_env(),
        programs: Programs {
            python_executable: executable(&cfg.app.python),
            server_executable: executable(Path::new(&cfg.server.command[0])),
        },
        tree,
        account,
        secrets,
        database,
        can_chown: euid == 0 && launcher_sys::privs::may_chown(),
        python_identity: python_identity(&cfg.app.python),
        source,
        stamps,
        witnesses,
        key_record,
        systemd: SystemdFacts {
            credentials_dir,
            invocation: std::env::var_os("INVOCATION_ID").is_some(),
        },
    }
}

/// What preparation is decided on: the stamps, the current witnesses of the steps'
/// outputs, the app source.
type Preparation = (
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
        .map(|s| (s, witness(cfg, data_dir, s, source.as_ref().ok())))
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
        .map(|s| (s, witness(cfg, Some(tree.dir("")), s, source.as_ref())))
        .collect();
    if let Some(source) = source {
        facts.source = Ok(source.facts);
    }
    facts.database.sqlite = database(cfg).sqlite;
}

/// PostgreSQL, one attempt, as `run` would connect: the service user's identity over a
/// Unix socket, the password secret as read.
fn postgresql(
    server: &Server,
    secrets: &[SecretFact],
    account: &AccountFacts,
    euid: u32,
    observer: Observer,
) -> PostgresFacts {
    let not = |why: String| PostgresFacts {
        server: server.to_string(),
        state: PostgresState::NotObserved(why),
    };
    if let Some(s) = secrets.iter().find(|s| s.name == DB_PASSWORD) {
        if !matches!(s.state, SecretState::Read { .. }) {
            return not(format!(
                "the password secret {DB_PASSWORD} could not be read here"
            ));
        }
    }
    if server.socket_path().is_some() && observer == Observer::Other {
        return not(format!(
            "over a Unix socket the server would see uid {euid}, not the service user; run check as root"
        ));
    }
    let login = crate::postgres::Login {
        password: read_password(secrets),
        peer: (euid == 0).then(|| peer_ids(account)).flatten(),
        name: launcher_plan::postgres::instance_name(&launcher_sys::hostname(), std::process::id()),
    };
    crate::postgres::observe_once(server, &login)
}

/// The launcher's own environment (UTF-8 entries only), the input of env::build.
pub fn inherited_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The owner of `path` itself (a link is not followed), as the caller sees it.
fn owner_of(path: &Path) -> Option<u32> {
    std::fs::symlink_metadata(path).ok().map(|m| m.uid())
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn account(cfg: &Config) -> AccountFacts {
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

/// How many names the observer lists from the data directory: enough to tell empty from
/// not and to name a few.
const MAX_ENTRIES: usize = 256;

fn tree_facts(cfg: &Config, inspected: &[Inspected]) -> TreeFacts {
    let data_dir = &cfg.service.data_dir;
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let parent_exists = parent.is_dir();
    let dirs = inspected
        .iter()
        .map(|d| DirFact {
            name: d.spec.name,
            path: d.path.clone(),
            want_mode: d.spec.mode,
            state: match &d.observed {
                Observed::Missing => DirState::Missing,
                Observed::Symlink => DirState::Symlink,
                Observed::NotADirectory => DirState::NotADirectory,
                Observed::Unreadable(e) => DirState::Unreadable {
                    denied: *e == nix::errno::Errno::EACCES,
                    error: e.to_string(),
                },
                Observed::Present { uid, gid, mode } => DirState::Present {
                    uid: *uid,
                    gid: *gid,
                    mode: *mode,
                    owner_name: nix::unistd::User::from_uid((*uid).into())
                        .ok()
                        .flatten()
                        .map(|u| u.name),
                },
            },
        })
        .collect();
    let at = if data_dir.exists() { data_dir } else { parent };
    let mut entries: Vec<String> = inspected
        .first()
        .and_then(Inspected::fd)
        .and_then(|fd| {
            nix::dir::Dir::openat(
                fd,
                ".",
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        })
        .map(|mut dir| {
            dir.iter()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "." && n != "..")
                .take(MAX_ENTRIES)
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    TreeFacts {
        parent_exists,
        dirs,
        entries,
        free_bytes: tree::free_bytes(at).map(|b| (at.to_path_buf(), b)),
    }
}

/// Where credentials are: `$CREDENTIALS_DIRECTORY` inside the unit; outside it (check,
/// manage), the running unit's own directory `/run/credentials/<unit>` (readable by root).
fn credentials_dir(opts: &Options<'_>) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        return Some(PathBuf::from(dir));
    }
    if opts.view == View::Service {
        return None;
    }
    let unit = if opts.unit.contains('.') {
        opts.unit.to_string()
    } else {
        format!("{}.service", opts.unit)
    };
    let dir = PathBuf::from("/run/credentials").join(unit);
    dir.is_dir().then_some(dir)
}

/// A source as the admin wrote it, for messages.
pub fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::File(p) => format!("file {}", p.display()),
        SecretSource::Credential(id) => format!("credential {id}"),
        SecretSource::Generate(kind) => format!("generate {kind}"),
    }
}

/// A secret the admin placed: a file or a credential, read with the caller's own rights
/// (root's, for `run`). None for a generated one, which lives in the data directory.
fn read_source(source: &SecretSource, credentials_dir: Option<&Path>) -> Option<SecretState> {
    match source {
        SecretSource::File(path) => Some(read_file(path, Origin::File(path.clone()))),
        SecretSource::Credential(id) => Some(match credentials_dir {
            Some(dir) => read_file(&dir.join(id), Origin::Credential(dir.join(id))),
            None => SecretState::Failed {
                failure: SecretFailure::NoCredentialsDirectory,
                message: "CREDENTIALS_DIRECTORY is not set, so systemd passed no credentials"
                    .into(),
            },
        }),
        SecretSource::Generate(_) => None,
    }
}

/// Every secret in config order: those `from_root` read already, and the generated ones
/// from the data directory's secrets/.
fn secrets(
    cfg: &Config,
    from_root: &mut [Option<SecretState>],
    secrets_dir: Option<(BorrowedFd<'_>, PathBuf)>,
    owner_uid: u32,
) -> Vec<SecretFact> {
    cfg.secrets
        .iter()
        .zip(from_root.iter_mut())
        .map(|((name, source), read)| {
            let state = match (read.take(), source) {
                (Some(state), _) => state,
                (None, SecretSource::File(_) | SecretSource::Credential(_)) => {
                    unreachable!("read_source reads every file and credential")
                }
                (None, SecretSource::Generate(kind)) => {
                    let path = cfg.service.data_dir.join(SECRETS_DIR).join(name);
                    match &secrets_dir {
                        None => SecretState::NotGenerated { kind: *kind, path },
                        Some((dir, dir_path)) => {
                            match launcher_sys::files::read_generated(
                                *dir,
                                dir_path,
                                name,
                                owner_uid.into(),
                            ) {
                                Ok(None) => SecretState::NotGenerated { kind: *kind, path },
                                Ok(Some(bytes)) => match secret::from_bytes(bytes.to_vec())
                                    .and_then(|v| secret::check_kind(*kind, &v).map(|()| v))
                                {
                                    Ok(value) => SecretState::Read {
                                        value,
                                        origin: Origin::Generated(path),
                                    },
                                    Err(e) => SecretState::Failed {
                                        failure: SecretFailure::WrongKind,
                                        message: format!(
                                            "{} {e}; it was not written by the launcher",
                                            path.display()
                                        ),
                                    },
                                },
                                Err(e) => file_failure(&e),
                            }
                        }
                    }
                }
            };
            SecretFact {
                name: name.clone(),
                source: describe(source),
                state,
            }
        })
        .collect()
}

fn read_file(path: &Path, origin: Origin) -> SecretState {
    match launcher_sys::files::read_secret_file(path) {
        Err(e) => file_failure(&e),
        Ok(bytes) => match secret::from_bytes(bytes.to_vec()) {
            Ok(value) => SecretState::Read { value, origin },
            Err(e) => SecretState::Failed {
                failure: match e {
                    secret::SecretProblem::KnownSample(_) => SecretFailure::KnownSample,
                    _ => SecretFailure::Invalid,
                },
                message: format!("{} {e}", path.display()),
            },
        },
    }
}

/// A refused secret file, by kind.
fn file_failure(e: &SecretFileError) -> SecretState {
    use SecretFileError as E;
    use launcher_sys::trust::TrustError as T;
    let failure = match e {
        E::Untrusted(T::Missing { .. }) => SecretFailure::Missing,
        E::Untrusted(T::Open {
            source: nix::errno::Errno::EACCES,
            ..
        })
        | E::Open {
            source: nix::errno::Errno::EACCES,
            ..
        } => SecretFailure::PermissionDenied,
        E::Untrusted(T::Open { .. } | T::Read { .. }) | E::Open { .. } | E::Read { .. } => {
            SecretFailure::Io
        }
        E::Untrusted(T::TooLarge { .. }) | E::TooLarge { .. } => SecretFailure::Invalid,
        E::Untrusted(T::Writable {
            file, component, ..
        }) if file == component => SecretFailure::Exposed,
        E::WorldReadable { .. } | E::NotPrivate { .. } => SecretFailure::Exposed,
        E::Untrusted(_)
        | E::Symlink { .. }
        | E::NotRegular { .. }
        | E::HardLinked { .. }
        | E::UntrustedOwner { .. } => SecretFailure::Untrusted,
    };
    SecretState::Failed {
        failure,
        message: e.to_string(),
    }
}

/// The SQLite database: what the file is, and which migrations it records. (PostgreSQL
/// is looked at by [`postgresql`] or by `run` itself.)
fn database(cfg: &Config) -> DatabaseFacts {
    let Database::Sqlite { path } = &cfg.database else {
        return DatabaseFacts::default();
    };
    let meta = std::fs::symlink_metadata(path);
    let kind = match &meta {
        Err(_) => FileKind::Missing,
        Ok(m) if m.file_type().is_symlink() => FileKind::Symlink,
        Ok(m) if m.is_file() => FileKind::Regular,
        Ok(m) if m.is_dir() => FileKind::Directory,
        Ok(_) => FileKind::Other,
    };
    let (size, links) = meta.as_ref().map_or((0, 0), |m| (m.size(), m.nlink()));
    let applied = if kind == FileKind::Regular && links == 1 {
        crate::sqlite::applied_migrations(path)
    } else {
        Err(format!("{} is not a plain database file", path.display()))
    };
    DatabaseFacts {
        sqlite: Some(SqliteFacts {
            path: path.clone(),
            kind,
            size,
            links,
            applied,
        }),
        postgresql: None,
    }
}

/// The current state of a step's output (see launcher_plan::stamp). `data_dir` is the
/// data directory's descriptor: files inside it are looked up without following links.
pub fn witness(
    cfg: &Config,
    data_dir: Option<BorrowedFd<'_>>,
    step: Step,
    source: Option<&SourceTree>,
) -> String {
    match step {
        Step::Migrate => match &cfg.database {
            Database::Sqlite { path } => match file_identity(cfg, data_dir, path) {
                Some(id) => format!("sqlite {} {id}", path.display()),
                None => format!("sqlite {} absent", path.display()),
            },
            Database::Postgresql {
                name, host, port, ..
            } => format!(
                "postgresql {name}@{}:{}",
                host.as_deref().unwrap_or("local"),
                port.map_or("default".into(), |p| p.to_string())
            ),
        },
        Step::Collectstatic => match layout::static_layout(cfg) {
            layout::StaticLayout::Versioned { dir } => {
                // The tree `current` names, and whether it is complete.
                let current = dir.join(layout::STATIC_CURRENT);
                let target = std::fs::read_link(&current)
                    .ok()
                    .filter(|t| t.components().count() == 1)
                    .map(|t| t.display().to_string());
                let manifest = target
                    .as_ref()
                    .is_some_and(|t| dir.join(t).join("staticfiles.json").is_file());
                format!(
                    "static {} -> {} manifest={manifest}",
                    current.display(),
                    target.as_deref().unwrap_or("absent")
                )
            }
            layout::StaticLayout::Fixed(root) => {
                let id = std::fs::symlink_metadata(&root)
                    .map(|m| format!("{}:{}", m.dev(), m.ino()))
                    .unwrap_or_else(|_| "absent".into());
                let manifest = root.join("staticfiles.json").is_file();
                format!("static {} {id} manifest={manifest}", root.display())
            }
        },
        Step::Compilemessages => match source {
            Some(source) => format!(
                "catalogs po={} compiled-into-data-dir={}",
                source.facts.po_files, source.facts.fresh_in_data_dir
            ),
            // Never matches a real witness: the step would simply run again.
            None => "catalogs not scanned".into(),
        },
    }
}

/// "dev:ino" of a file; inside the data directory looked up without following links.
fn file_identity(cfg: &Config, data_dir: Option<BorrowedFd<'_>>, path: &Path) -> Option<String> {
    match (path.parent(), path.file_name(), data_dir) {
        (Some(parent), Some(name), Some(fd)) if parent == cfg.service.data_dir => {
            launcher_sys::files::identity_at(fd, name.to_str()?)
        }
        _ => std::fs::symlink_metadata(path)
            .ok()
            .map(|m| format!("{}:{}", m.dev(), m.ino())),
    }
}

/// The interpreter and its installed packages: the path as configured (a Nix store path
/// changes with any dependency), the resolved binary, and the modification times of the
/// environment's site-packages directories (pip install/upgrade changes them).
fn python_identity(python: &Path) -> String {
    let mut id = python.display().to_string();
    if let Ok(real) = std::fs::canonicalize(python) {
        if let Ok(m) = std::fs::metadata(&real) {
            id.push_str(&format!(
                " {} {}:{} {} {}",
                real.display(),
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime()
            ));
        }
    }
    if let Some(prefix) = python.parent().and_then(Path::parent) {
        if let Ok(entries) = std::fs::read_dir(prefix.join("lib")) {
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("site-packages"))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for dir in dirs {
                if let Ok(m) = std::fs::metadata(&dir) {
                    id.push_str(&format!(
                        " {}@{}.{}",
                        dir.display(),
                        m.mtime(),
                        m.mtime_nsec()
                    ));
                }
            }
        }
    }
    id
}

/// The app source as scanned: its facts. Walked without following links.
pub struct SourceTree {
    pub facts: SourceFacts,
}

impl SourceTree {
    /// Scan the app source of `cfg`, leaving out what the app itself writes there (a
    /// static root, media root or SQLite database placed inside the source directory):
    /// those change on every run and are outputs, not inputs.
    pub fn of(cfg: &Config) -> std::io::Result<SourceTree> {
        let mut facts = scan(cfg, &cfg.app.source_dir, &layout::app_outputs(cfg))?;
        facts.manage_py = std::fs::symlink_metadata(cfg.app.source_dir.join("manage.py"))
            .is_ok_and(|m| m.is_file());
        Ok(SourceTree { facts })
    }
}

mod libc_flags {
    pub const NONBLOCK_NOFOLLOW: i32 =
        nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOFOLLOW.bits();
}

/// How many catalogs have a compiled form in the data directory at least as new as their
/// .po (the targets as [`scan`] recorded them).
fn fresh_in_data_dir(targets: &[(PathBuf, i64)]) -> usize {
    targets
        .iter()
        .filter(|(mo, po_mtime)| {
            std::fs::symlink_metadata(mo).is_ok_and(|m| m.is_file() && m.mtime() >= *po_mtime)
        })
        .count()
}

impl SourceTree {
    /// The same source, with the data directory's compiled catalogs counted again (after
    /// another launcher or the step itself may have written them); the source is not
    /// walked again.
    pub fn recounted(facts: &SourceFacts) -> SourceTree {
        let mut facts = facts.clone();
        facts.fresh_in_data_dir = fresh_in_data_dir(&facts.catalog_targets);
        SourceTree { facts }
    }
}

/// SHA-256 of a file's content (hex).
fn content_digest(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Never blocks on a FIFO swapped in after the stat, never follows a link.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::NONBLOCK_NOFOLLOW)
        .open(path)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A digest of every file's relative path, size, mode and modification time (and the
/// content of files whose modification time is normalized to 0 or 1), skipping
/// bytecode, compiled catalogs (which compilemessages writes) and hidden directories; the
/// translation catalogs with their up-to-date compiled forms and their directories.
fn scan(cfg: &Config, root: &Path, outputs: &[PathBuf]) -> std::io::Result<SourceFacts> {
    let mut entries = Vec::new();
    let mut po_files = 0;
    let mut fresh_mo_files = 0;
    let mut catalog_targets = Vec::new();
    let mut locale_dirs: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || name == "node_modules" {
                continue;
            }
            let path = entry.path();
            if outputs.contains(&path) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if name.ends_with(".pyc") || name.ends_with(".mo") {
                continue;
            }
            if name.ends_with(".po") {
                po_files += 1;
                let fresh = |mo: &Path| {
                    std::fs::symlink_metadata(mo)
                        .is_ok_and(|m| m.is_file() && m.mtime() >= meta.mtime())
                };
                if fresh(&path.with_extension("mo")) {
                    fresh_mo_files += 1;
                }
                // <base>/<lang>/LC_MESSAGES/<domain>.po
                let base = dir.parent().and_then(Path::parent);
                if let Some(rel) = base.and_then(|b| b.strip_prefix(root).ok()) {
                    if !locale_dirs.iter().any(|d| d == rel) {
                        locale_dirs.push(rel.to_path_buf());
                    }
                    let below = path.strip_prefix(base.unwrap_or(root)).unwrap_or(&path);
                    let target = layout::catalog_target(cfg, rel)
                        .join(below)
                        .with_extension("mo");
                    catalog_targets.push((target, meta.mtime()));
                }
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let link = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            // A normalized timestamp (1 in a Nix store, 0 from some archives) says nothing
            // about the content: such files count by their content.
            let content = if meta.is_file() && meta.mtime() <= 1 {
                content_digest(&path)?
            } else {
                String::new()
            };
            entries.push(format!(
                "{rel}\0{}\0{:o}\0{}.{}\0{link}\0{content}",
                meta.size(),
                meta.mode(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
        }
    }
    entries.sort();
    let mut h = Sha256::new();
    for e in &entries {
        h.update(e.as_bytes());
        h.update(b"\n");
    }
    Ok(SourceFacts {
        manage_py: false,
        digest: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        po_files,
        fresh_mo_files,
        locale_dirs: {
            locale_dirs.sort();
            locale_dirs
        },
        fresh_in_data_dir: fresh_in_data_dir(&catalog_targets),
        catalog_targets,
    })
}
