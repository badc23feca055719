//! Facts: what the launcher observed on the host, as plain typed values.
//!
//! The binary's observer (`src/observe`) fills a [`Facts`] once, read-only, before anything
//! is decided; the judgements in [`crate::judge`] turn config + facts into decisions.
//! Nothing here reads the host or decides anything: these are the inputs of every rule,
//! so a rule can be tested with a literal `Facts` and `run` and `check` cannot see two
//! different worlds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use launcher_config::GenerateKind;

use crate::Step;
use crate::secret::SecretValue;

/// Who observed the facts, relative to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Observer {
    /// root: sees everything `run` as root sees.
    #[default]
    Root,
    /// The service user itself (`run` in the unprivileged mode).
    ServiceUser,
    /// Anyone else (`check` by an admin without root): some facts are hidden.
    Other,
}

/// Where the facts were observed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// As the service: `run`, which must have everything the app needs.
    #[default]
    Service,
    /// From outside the running unit: `check` and `manage`, which report what they cannot
    /// see (a credential only the unit receives) instead of failing on it.
    Outside,
}

/// Everything observed, in one value.
#[derive(Debug)]
pub struct Facts {
    /// The effective uid of the observing process (root for `run` as ExecStart).
    pub euid: u32,
    pub observer: Observer,
    pub view: View,
    /// The launcher's own environment (UTF-8 entries only).
    pub inherited: Vec<(String, String)>,
    pub programs: Programs,
    pub account: AccountFacts,
    pub tree: TreeFacts,
    /// One entry per configured secret, in config order.
    pub secrets: Vec<SecretFact>,
    pub database: DatabaseFacts,
    /// The app source; None when it could not be read (the error text).
    pub source: Result<SourceFacts, String>,
    /// Identity of the interpreter and its installed packages (see the observer).
    pub python_identity: String,
    /// Stamp text per step, as read from the state directory (absent: None).
    pub stamps: BTreeMap<Step, String>,
    /// The current state of each step's output (see [`crate::stamp`]).
    pub witnesses: BTreeMap<Step, String>,
    /// `state/keys`: the key fingerprints of the last successful start (crate::keys).
    pub key_record: Option<String>,
    pub systemd: SystemdFacts,
    /// The observer is root and may give files to another user (CAP_CHOWN in its
    /// permitted set; the hardened unit does not keep it).
    pub can_chown: bool,
    /// The paths the launcher trusts besides its config and secrets (rule 1 of
    /// docs/security.md, for directories).
    pub trust: TrustFacts,
}

/// Directories whose path nobody but root (or the launching user) may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustFacts {
    /// The data directory's parent and every directory above it.
    pub data_dir_parent: Result<(), Untrusted>,
    /// The app source directory and every directory above it.
    pub source: Result<(), Untrusted>,
}

impl Default for TrustFacts {
    fn default() -> TrustFacts {
        TrustFacts {
            data_dir_parent: Ok(()),
            source: Ok(()),
        }
    }
}

/// Why a directory on a trusted path fails the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// `dir` belongs to `uid`, neither root nor the launching user.
    Owner { dir: PathBuf, uid: u32, mode: u32 },
    /// `dir` is writable by its group or others, without the sticky bit.
    Writable { dir: PathBuf, mode: u32 },
    /// `entry` sits in `dir`, which others may write (sticky), and belongs to `uid`.
    SharedEntry {
        entry: PathBuf,
        uid: u32,
        dir: PathBuf,
    },
    /// The path could not be walked: the walk's own words (missing, not a directory, a
    /// loop of links, an I/O error).
    Unwalkable(String),
}

/// The programs the launcher needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Programs {
    /// app.python is an executable regular file (links followed).
    pub python_executable: bool,
    /// server.command[0] is an executable regular file.
    pub server_executable: bool,
}

/// A user database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// A group database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The service account as the account database has it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    pub user: Option<UserEntry>,
    pub group: Option<GroupEntry>,
    /// The user's supplementary groups (from the group database), with their names.
    pub supplementary: Vec<(u32, String)>,
    /// /etc is on a read-only mount (ProtectSystem=strict or full, a read-only root).
    pub etc_read_only: bool,
    /// The first uid of regular (human) accounts: UID_MIN of /etc/login.defs, or 1000.
    pub uid_min: u32,
}

/// One directory of the data directory layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFact {
    /// Relative name in the layout ("" for the data directory itself).
    pub name: &'static str,
    pub path: PathBuf,
    /// The mode the layout wants.
    pub want_mode: u32,
    pub state: DirState,
}

/// A directory as found, without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    Missing,
    Symlink,
    NotADirectory,
    /// Could not be looked at: permission denied for a caller that is not root, or an
    /// I/O error (the text says which).
    Unreadable {
        denied: bool,
        error: String,
    },
    Present {
        uid: u32,
        gid: u32,
        mode: u32,
        /// The owner's name, when the account database knows it.
        owner_name: Option<String>,
    },
}

/// The data directory tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeFacts {
    /// The data directory's parent exists.
    pub parent_exists: bool,
    /// The layout, parents first (empty when the parent is missing).
    pub dirs: Vec<DirFact>,
    /// Names inside the data directory, when it exists (at most a few hundred).
    pub entries: Vec<String>,
    /// Free bytes for unprivileged users on the data directory's file system (or its
    /// parent's when it does not exist yet).
    pub free_bytes: Option<(PathBuf, u64)>,
}

impl TreeFacts {
    pub fn dir(&self, name: &str) -> Option<&DirFact> {
        self.dirs.iter().find(|d| d.name == name)
    }
}

/// Why reading a secret failed, by kind: the judgement picks the severity and fix by kind,
/// never by message text. The message names the file and never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFailure {
    /// The file does not exist.
    Missing,
    /// The observer may not read it (only possible when it is not root).
    PermissionDenied,
    /// Readable or writable by other users.
    Exposed,
    /// Not to be trusted: a link, another owner, several names, not a regular file, a
    /// path others can change.
    Untrusted,
    /// The content breaks a rule of secret values (empty, too large, not UTF-8, NUL).
    Invalid,
    /// A publicly known sample value.
    KnownSample,
    /// A stored generated secret that is not of its kind (not a Fernet key...).
    WrongKind,
    /// A credential, but no credentials directory is known.
    NoCredentialsDirectory,
    /// Any other I/O error.
    Io,
}

/// Where a secret's value came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Credential(PathBuf),
    /// Generated by an earlier start and kept in the secrets directory.
    Generated(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Credential(p) => write!(f, "credential {}", p.display()),
            Origin::Generated(p) => write!(f, "generated earlier, kept in {}", p.display()),
        }
    }
}

/// What reading one secret found.
#[derive(Debug)]
pub enum SecretState {
    Read {
        value: SecretValue,
        origin: Origin,
    },
    /// A generated secret that does not exist yet (or whose directory does not).
    NotGenerated {
        kind: GenerateKind,
        path: PathBuf,
    },
    Failed {
        failure: SecretFailure,
        message: String,
    },
}

#[derive(Debug)]
pub struct SecretFact {
    pub name: String,
    /// The source as the admin wrote it ("file /run/keys/x", "generate fernet-key").
    pub source: String,
    pub state: SecretState,
}

/// A file as found, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Regular,
    Symlink,
    Directory,
    Other,
}

/// The SQLite database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFacts {
    pub path: PathBuf,
    pub kind: FileKind,
    pub size: u64,
    /// Number of names of the file (a planted hard link has more than one).
    pub links: u64,
    /// The migrations the database records as applied (`django_migrations`), read with a
    /// read-only connection; Err(why) when it could not be read exactly.
    pub applied: Result<BTreeSet<String>, String>,
}

/// The PostgreSQL database, as the launcher's own connection found it (the same role,
/// server and database as the app's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresFacts {
    /// "role R at HOST:PORT, database D", for messages.
    pub server: String,
    pub state: PostgresState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresState {
    /// Not looked at from here (the text says why).
    NotObserved(String),
    /// No session: why, by kind, and the server's or the system's words (never the
    /// password).
    Failed {
        failure: crate::postgres::Failure,
        message: String,
    },
    Connected {
        /// `server_version` as the server reports it.
        version: String,
        /// Tables in the database outside PostgreSQL's own schemas.
        tables: u64,
        /// The migrations `django_migrations` records as applied; an empty set when the
        /// table does not exist (a new or emptied database); Err(why) when it could not
        /// be read exactly.
        applied: Result<BTreeSet<String>, String>,
    },
}

/// The database, as far as the launcher can see it without starting Django.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DatabaseFacts {
    pub sqlite: Option<SqliteFacts>,
    /// None when not observed at all (`manage`; `run` fills it after waiting for the
    /// server).
    pub postgresql: Option<PostgresFacts>,
}

impl DatabaseFacts {
    /// The applied migrations of the configured database, as observed: None when the
    /// database was not observed.
    pub fn applied(&self) -> Option<Result<&BTreeSet<String>, String>> {
        if let Some(db) = &self.sqlite {
            return Some(db.applied.as_ref().map_err(Clone::clone));
        }
        let pg = self.postgresql.as_ref()?;
        Some(match &pg.state {
            PostgresState::Connected { applied, .. } => applied.as_ref().map_err(Clone::clone),
            PostgresState::NotObserved(why) => Err(why.clone()),
            PostgresState::Failed { message, .. } => Err(message.clone()),
        })
    }
}

/// The app source tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceFacts {
    /// source_dir/manage.py is a regular file.
    pub manage_py: bool,
    /// A digest of every file's path, size, mode and mtime (see the observer).
    pub digest: String,
    pub po_files: usize,
    /// Catalogs whose .mo exists beside the .po and is at least as new.
    pub fresh_mo_files: usize,
    /// The translation base directories (`<base>/<lang>/LC_MESSAGES/*.po`), relative to
    /// the source directory, sorted.
    pub locale_dirs: Vec<PathBuf>,
    /// Catalogs compiled into the data directory (see [`crate::layout::catalog_target`])
    /// that exist and are at least as new as their .po.
    pub fresh_in_data_dir: usize,
    /// Each catalog's compiled form in the data directory and the .po's mtime, so the
    /// count above can be taken again without walking the source.
    pub catalog_targets: Vec<(PathBuf, i64)>,
}

/// What systemd handed the launcher.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SystemdFacts {
    /// $CREDENTIALS_DIRECTORY, or for `check`/`manage` outside the unit the running unit's
    /// credentials directory.
    pub credentials_dir: Option<PathBuf>,
    /// Started by systemd (INVOCATION_ID is set).
    pub invocation: bool,
    /// The unit `check` and `manage` look at from outside (its credentials).
    pub unit: String,
}
