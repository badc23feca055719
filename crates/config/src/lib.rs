//! The launcher's configuration: one TOML file turned into a validated [`Config`].
//!
//! This crate owns the meaning of every key and every rule a value must satisfy. It does
//! no I/O: the binary reads the file (as root, under the launcher's trust rule, at most
//! [`MAX_CONFIG_BYTES`]) and hands its bytes to [`from_bytes`]; [`parse_str`] is the pure
//! core the tests exercise. Validation never stops at the first problem: every unknown key, wrong type,
//! missing key and conflicting value is collected, so an admin fixes the file in one go.
//! Both `run` and `check` go through here, so they can never disagree about a config.

mod reader;
mod suggest;
pub mod unit;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use reader::{Reader, Table};
pub use suggest::did_you_mean;
pub use unit::{Directive, Limit, Section, Unit};

/// A validated launcher configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service: Service,
    pub app: App,
    pub database: Database,
    pub prepare: Prepare,
    /// Environment variable name -> where its secret value comes from.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Plain (non-secret) variables for the app.
    pub environment: BTreeMap<String, String>,
    pub server: Server,
    /// Limits and restart policy of the unit (rendered by `unit` and the NixOS module).
    pub unit: Unit,
    /// What `check` reports.
    pub check: Check,
}

/// The `[check]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Check {
    /// Finding ids the admin accepts: such a warning is reported as info and does not
    /// change `check`'s exit status (the ids are `check`'s, e.g. `django:security.W004`).
    pub accept: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub user: String,
    pub group: String,
    /// As root: create the user and group when missing. When false they must exist.
    pub create_user: bool,
    /// Accept an account that looks like a person's (a regular uid with a login shell).
    pub allow_login_account: bool,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub python: PathBuf,
    pub source_dir: PathBuf,
    pub settings_module: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Sqlite {
        path: PathBuf,
    },
    Postgresql {
        name: String,
        /// The role; libpq's default, and so the app's, is the service user's name.
        user: Option<String>,
        /// A host name or address, or a directory holding the server's Unix socket (an
        /// absolute path); default: the socket in /run/postgresql.
        host: Option<String>,
        port: Option<u16>,
        /// TLS for TCP connections, as libpq's `sslmode`.
        sslmode: SslMode,
        /// The CA certificate(s) (PEM) that verify the server, for `verify-ca` and
        /// `verify-full` (with `require`, a given file makes it `verify-ca`, as in libpq).
        sslrootcert: Option<PathBuf>,
        /// How long `run` waits for the server to accept connections.
        wait_timeout: Duration,
    },
}

/// libpq's `sslmode` values the launcher supports (not `allow`: it only ever adds TLS
/// after a refused plain connection, which nothing needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not verified.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified (unless a root certificate
    /// is configured).
    Require,
    /// TLS with a certificate signed by `sslrootcert`, any host name.
    VerifyCa,
    /// TLS with a certificate signed by `sslrootcert` for the configured host name.
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The server's certificate must chain to `sslrootcert`.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepare {
    pub migrate: bool,
    pub collectstatic: bool,
    pub compilemessages: bool,
    /// A step that produces no output for this long is considered hung and is stopped.
    pub stall_timeout: Duration,
    /// How many backups of an SQLite database, taken before a migrate that has work, are
    /// kept (0: none are taken).
    pub backups: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file read as root before the privilege drop.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/<id>`, placed there by systemd's `LoadCredential=`.
    Credential(String),
    /// Generated once, kept in `<data_dir>/secrets/<NAME>`.
    Generate(GenerateKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerateKind {
    /// 50 characters from Django's `get_random_secret_key` alphabet.
    DjangoSecretKey,
    /// 32 random bytes, url-safe base64: a key for Fernet (django-encrypted-model-fields).
    FernetKey,
}

impl GenerateKind {
    pub const ALL: [GenerateKind; 2] = [GenerateKind::DjangoSecretKey, GenerateKind::FernetKey];

    pub fn as_str(self) -> &'static str {
        match self {
            GenerateKind::DjangoSecretKey => "django-secret-key",
            GenerateKind::FernetKey => "fernet-key",
        }
    }
}

impl fmt::Display for GenerateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// argv of the server; `command[0]` is an absolute path.
    pub command: Vec<String>,
    /// When systemd is told the service is ready.
    pub ready: Ready,
    /// The path (and query) of the warm-up request with `ready = "answer"`.
    pub ready_path: String,
    /// How long a gunicorn worker waits for the answer to its warm-up request before it
    /// reports readiness anyway (`ready = "answer"`).
    pub ready_timeout: Duration,
}

/// The warm-up request's path when the config names none.
pub const DEFAULT_READY_PATH: &str = "/";
/// `ready_timeout_sec` when the config names none.
pub const DEFAULT_READY_TIMEOUT_SECS: u64 = 30;
/// The longest `ready_path`.
const READY_PATH_MAX: usize = 2048;

/// Who sends READY=1, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The server itself: gunicorn's arbiter, once its socket listens and before any
    /// worker exists (unit: NotifyAccess=main).
    Arbiter,
    /// gunicorn's first worker, once it has loaded the app, through a gunicorn config
    /// file the launcher passes (`-c`); the arbiter's own READY=1 is suppressed (unit:
    /// NotifyAccess=all).
    Worker,
    /// gunicorn's arbiter, once its first worker has loaded the app and answered a
    /// request to `ready_path` inside the worker (a warm-up, before the worker accepts
    /// connections), through the same config file: the worker tells the arbiter, which
    /// sends READY=1 (unit: NotifyAccess=main).
    Answer,
}

impl Ready {
    pub const ALL: [Ready; 3] = [Ready::Arbiter, Ready::Worker, Ready::Answer];

    pub fn as_str(self) -> &'static str {
        match self {
            Ready::Arbiter => "arbiter",
            Ready::Worker => "worker",
            Ready::Answer => "answer",
        }
    }

    /// Whether gunicorn gets the launcher's config file with the readiness hooks.
    pub fn uses_hook(self) -> bool {
        self != Ready::Arbiter
    }

    /// Whether READY=1 comes from another process than the main one (the unit then
    /// needs NotifyAccess=all).
    pub fn from_worker(self) -> bool {
        self == Ready::Worker
    }
}

/// The variable the launcher always gives the app: the data directory.
pub const DATA_DIR_VAR: &str = "BITPOLL_DATA_DIR";

/// Variables the launcher sets itself; the config may not set them.
pub const RESERVED_VARIABLES: &[&str] = &[
    DATA_DIR_VAR,
    "BITPOLL_LOCALE_PATHS",
    "DJANGO_SETTINGS_MODULE",
    "PYTHONPATH",
    "HOME",
    "USER",
    "LOGNAME",
    "BITPOLL_DB_ENGINE",
    "BITPOLL_DB_PATH",
    "BITPOLL_DB_NAME",
    "BITPOLL_DB_USER",
    "BITPOLL_DB_HOST",
    "BITPOLL_DB_PORT",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "CREDENTIALS_DIRECTORY",
];

/// Secrets the app cannot start without; a config that does not provide them is an error.
pub const REQUIRED_SECRETS: &[(&str, GenerateKind)] = &[
    ("BITPOLL_SECRET_KEY", GenerateKind::DjangoSecretKey),
    ("BITPOLL_FIELD_ENCRYPTION_KEY", GenerateKind::FernetKey),
];

/// Variables that hold secrets and so must never be written into the config file itself
/// (which is often world-readable, e.g. in the Nix store).
pub const SECRET_VARIABLES: &[&str] = &[
    "BITPOLL_SECRET_KEY",
    "BITPOLL_SECRET_KEY_FALLBACKS",
    "BITPOLL_FIELD_ENCRYPTION_KEY",
    "BITPOLL_DB_PASSWORD",
    "BITPOLL_EMAIL_HOST_PASSWORD",
    "BITPOLL_AUTH_LDAP_BIND_PASSWORD",
];

/// Where `service.data_dir` may never be: the launcher gives the data directory to the
/// service user, so it must be a directory of the service's own, never a system location.
/// Everything below these is refused...
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/nix", "/proc",
    "/root", "/run", "/sbin", "/sys", "/usr",
];
/// ...and these themselves (a directory of its own below them is fine).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/srv",
    "/tmp",
    "/var",
    "/var/lib",
    "/var/tmp",
    "/var/log",
    "/var/cache",
    "/var/spool",
    "/var/mail",
    "/var/www",
    "/var/backups",
    "/var/opt",
    "/var/local",
];

/// Why `dir` cannot be the data directory, if it cannot.
pub fn system_location(dir: &Path) -> Option<String> {
    if let Some(tree) = SYSTEM_TREES.iter().find(|t| dir.starts_with(t)) {
        return Some(format!(
            "{} is inside the system tree {tree}",
            dir.display()
        ));
    }
    SYSTEM_DIRS
        .iter()
        .any(|d| Path::new(d) == dir)
        .then(|| format!("{} is a system directory", dir.display()))
}

/// Longest value of one [environment] variable (the kernel refuses a single environment
/// string over 128 KiB at exec; secrets are bounded separately).
pub const MAX_ENV_VALUE: usize = 32 * 1024;
/// Longest [environment] in total, so the server's whole environment stays far below the
/// kernel's limit for argv + environment.
pub const MAX_ENV_TOTAL: usize = 256 * 1024;

pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 300;
/// How long `run` waits for PostgreSQL by default.
pub const DEFAULT_DB_WAIT_TIMEOUT_SECS: u64 = 120;
/// The longest configurable wait for PostgreSQL.
pub const MAX_DB_WAIT_TIMEOUT_SECS: i64 = 3600;
/// Backups of the SQLite database kept by default.
pub const DEFAULT_BACKUPS: u32 = 3;

/// One problem with the configuration, located by its key path (`secrets.X.file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, or empty for the whole file.
    pub key: String,
    pub message: String,
    /// A sentence telling how to fix it, when there is more to say than the message.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.key, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, or is not trusted (someone other than root could change
    /// it or a directory on its path). `reason` names the file; `fix` says what to do.
    #[error("cannot read config file: {reason}; {fix}")]
    Unreadable {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {} problem{}:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, render_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found, for callers that report them one by one (`check`).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Unreadable { reason, fix, .. } => vec![Problem {
                key: String::new(),
                message: format!("cannot read the file: {reason}"),
                hint: Some(fix.clone()),
            }],
            ConfigError::Syntax { message, .. } => vec![Problem {
                key: String::new(),
                message: format!("invalid TOML: {message}"),
                hint: None,
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// "a string", "an integer", "an array": the type name with its article.
pub(crate) fn article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The largest config file the launcher reads; a real one is a few KiB. Bounds what a
/// wrong `--config` (a log file, a device) can make root read into memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Validate the bytes of the config file at `path` (read by the caller). Errors name
/// `path`; a syntax error gives line and column, never the file's text.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => from_text(path, text),
        Err(e) => {
            // The valid prefix locates the first bad byte; the bytes themselves are not shown.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let (line, column) = line_column(valid, valid.len());
            Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "line {line}, column {column}: the file is not UTF-8 text; save it as UTF-8"
                ),
            })
        }
    }
}

/// Validate the text of the config file at `path`. Pure; errors name `path`.
pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_str(text).map_err(|e| match e {
        ParseError::Syntax(message) => ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        },
        ParseError::Invalid(problems) => ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        },
    })
}

/// Why a config text was refused, before a file name is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// "line L, column C: what is wrong"; never an excerpt of the text.
    Syntax(String),
    Invalid(Vec<Problem>),
}

/// Parse and validate config text. Pure: no file system access.
pub fn parse_str(text: &str) -> Result<Config, ParseError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    let mut r = Reader::default();
    let cfg = read_config(&mut r, &table);
    match (cfg, r.into_problems()) {
        (Some(cfg), problems) if problems.is_empty() => Ok(cfg),
        (_, problems) => Err(ParseError::Invalid(problems)),
    }
}

/// toml's own rendering quotes the offending line under a caret; a config may hold
/// something sensitive on that line, so only the message and the position are kept.
fn syntax_error(text: &str, e: &toml::de::Error) -> ParseError {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ParseError::Syntax(match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    })
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

const TOP_KEYS: &[&str] = &[
    "service",
    "app",
    "database",
    "prepare",
    "secrets",
    "environment",
    "server",
    "unit",
    "check",
];
const SERVICE_KEYS: &[&str] = &[
    "user",
    "group",
    "create_user",
    "allow_login_account",
    "data_dir",
];
const APP_KEYS: &[&str] = &["python", "source_dir", "settings_module"];
const DATABASE_KEYS: &[&str] = &[
    "engine",
    "path",
    "name",
    "user",
    "host",
    "port",
    "sslmode",
    "sslrootcert",
    "wait_timeout_sec",
];
/// The keys of [database] that only PostgreSQL has.
const POSTGRESQL_KEYS: &[&str] = &[
    "name",
    "user",
    "host",
    "port",
    "sslmode",
    "sslrootcert",
    "wait_timeout_sec",
];
const PREPARE_KEYS: &[&str] = &[
    "migrate",
    "collectstatic",
    "compilemessages",
    "stall_timeout_sec",
    "backups",
];
const SERVER_KEYS: &[&str] = &["command", "ready", "ready_path", "ready_timeout_sec"];
const CHECK_KEYS: &[&str] = &["accept"];
const SECRET_SOURCE_KEYS: &[&str] = &["file", "credential", "generate"];

/// All keys of all fixed tables, to tell an admin that a key lives in another table.
fn table_of_key(key: &str) -> Option<&'static str> {
    let tables: [(&str, &[&str]); 7] = [
        ("service", SERVICE_KEYS),
        ("app", APP_KEYS),
        ("database", DATABASE_KEYS),
        ("prepare", PREPARE_KEYS),
        ("server", SERVER_KEYS),
        ("unit", unit::UNIT_KEYS),
        ("check", CHECK_KEYS),
    ];
    tables
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(t, _)| *t)
}

fn read_config(r: &mut Reader, root: &toml::Table) -> Option<Config> {
    r.unknown_keys("", root, TOP_KEYS);
    let t = r.table(root, "", "service", true);
    let service = read_service(r, t.as_ref());
    let t = r.table(root, "", "app", true);
    let app = read_app(r, t.as_ref());
    let t = r.table(root, "", "database", false);
    let database = read_database(r, t.as_ref(), service.as_ref());
    let t = r.table(root, "", "prepare", false);
    let prepare = read_prepare(r, t.as_ref());
    let t = r.table(root, "", "secrets", false);
    let secrets = read_secrets(r, t.as_ref());
    let t = r.table(root, "", "environment", false);
    let environment = read_environment(r, t.as_ref());
    let t = r.table(root, "", "server", true);
    let server = read_server(r, t.as_ref());
    let t = r.table(root, "", "unit", false);
    let unit = unit::read_unit(r, t.as_ref());
    let t = r.table(root, "", "check", false);
    let check = read_check(r, t.as_ref());

    if let (Some(secrets), Some(environment)) = (&secrets, &environment) {
        for name in secrets.keys() {
            if environment.contains_key(name) {
                r.problem(
                    format!("environment.{name}"),
                    "is also defined in [secrets]",
                    Some("define each variable once: secrets in [secrets], plain values in [environment]".into()),
                );
            }
        }
        for (name, kind) in REQUIRED_SECRETS {
            if !secrets.contains_key(*name) && !environment.contains_key(*name) {
                r.problem(
                    format!("secrets.{name}"),
                    "is missing; the app cannot start without it",
                    Some(format!(
                        "add `{name} = {{ file = \"/path/to/key\" }}` or `{name} = {{ generate = \"{kind}\" }}` to [secrets]"
                    )),
                );
            }
        }
    }

    Some(Config {
        service: service?,
        app: app?,
        database: database?,
        prepare: prepare?,
        secrets: secrets?,
        environment: environment?,
        server: server?,
        unit: unit?,
        check: check?,
    })
}

/// `[check] accept`: finding ids as `check` prints them: a launcher rule's
/// `<group>.<name>`, or another program's finding as `<program>:<its id>`
/// (`django:security.W004`). Whether a launcher id names a rule is `check`'s to say (it
/// reports an accepted id that does not occur, with the closest one), so that an id a
/// newer launcher dropped never stops a start.
fn read_check(r: &mut Reader, t: Option<&Table>) -> Option<Check> {
    let t = t?;
    r.unknown_keys("check", t, CHECK_KEYS);
    let accept = if t.contains_key("accept") {
        r.string_array(t, "check", "accept", false)?
    } else {
        Vec::new()
    };
    let mut ok = true;
    for (i, id) in accept.iter().enumerate() {
        if !is_finding_id(id) {
            r.problem(
                format!("check.accept[{i}]"),
                format!("{id:?} is not a finding id"),
                Some("use the id `check` prints in brackets after a finding (or its JSON field \"id\"), e.g. \"django:security.W004\" or \"secrets.shared_by_instances\"".into()),
            );
            ok = false;
        } else if accept[..i].contains(id) {
            r.problem(
                format!("check.accept[{i}]"),
                format!("{id:?} is listed twice"),
                Some("list each id once".into()),
            );
            ok = false;
        }
    }
    ok.then_some(Check { accept })
}

/// `group.name` (lowercase letters and `_`), or `program:id` where the id has no spaces
/// or control characters (Django's are `security.W004`, `fields.E304`, ...).
pub fn is_finding_id(id: &str) -> bool {
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    match id.split_once(':') {
        Some((program, rest)) => {
            word(program)
                && !rest.is_empty()
                && rest.len() <= 100
                && rest.chars().all(|c| c.is_ascii_graphic())
        }
        None => id
            .split_once('.')
            .is_some_and(|(group, name)| word(group) && word(name)),
    }
}

fn read_service(r: &mut Reader, t: Option<&Table>) -> Option<Service> {
    let t = t?;
    r.unknown_keys("service", t, SERVICE_KEYS);
    let user = r.string(t, "service", "user", true);
    let user = user.and_then(|u| check_account_name(r, "service.user", &u).then_some(u));
    let group = match r.string(t, "service", "group", false) {
        Some(g) => check_account_name(r, "service.group", &g).then_some(g),
        None => user.clone(),
    };
    let create_user = r.bool(t, "service", "create_user", true);
    let allow_login_account = r.bool(t, "service", "allow_login_account", false);
    let data_dir = r
        .string(t, "service", "data_dir", true)
        .and_then(|d| absolute_path(r, "service.data_dir", &d));
    if let Some(why) = data_dir.as_deref().and_then(system_location) {
        r.problem(
            "service.data_dir",
            why,
            Some("the launcher gives the data directory to the service user; use a directory of its own such as /var/lib/bitpoll".into()),
        );
    }
    Some(Service {
        user: user?,
        group: group?,
        create_user: create_user?,
        allow_login_account: allow_login_account?,
        data_dir: data_dir?,
    })
}

fn read_app(r: &mut Reader, t: Option<&Table>) -> Option<App> {
    let t = t?;
    r.unknown_keys("app", t, APP_KEYS);
    let python = r
        .string(t, "app", "python", true)
        .and_then(|p| absolute_path(r, "app.python", &p));
    let source_dir = r
        .string(t, "app", "source_dir", true)
        .and_then(|p| absolute_path(r, "app.source_dir", &p));
    let settings_module = r
        .string(t, "app", "settings_module", false)
        .unwrap_or_else(|| "bitpoll.settings".to_string());
    let module_ok = !settings_module.is_empty()
        && settings_module
            .split('.')
            .all(|part| is_identifier(part, |c| c.is_ascii_alphanumeric() || c == '_'));
    if !module_ok {
        r.problem(
            "app.settings_module",
            format!("{settings_module:?} is not a dotted Python module name"),
            Some("write it as Django's DJANGO_SETTINGS_MODULE, e.g. \"bitpoll.settings\"".into()),
        );
    }
    Some(App {
        python: python?,
        source_dir: source_dir?,
        settings_module: module_ok.then_some(settings_module)?,
    })
}

fn read_database(r: &mut Reader, t: Option<&Table>, service: Option<&Service>) -> Option<Database> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    r.unknown_keys("database", t, DATABASE_KEYS);
    let engine = r
        .string(t, "database", "engine", false)
        .unwrap_or_else(|| "sqlite".to_string());
    match engine.as_str() {
        "sqlite" => {
            for key in POSTGRESQL_KEYS {
                if t.contains_key(*key) {
                    r.problem(
                        format!("database.{key}"),
                        "only applies to engine = \"postgresql\"",
                        Some("remove it, or set database.engine = \"postgresql\"".into()),
                    );
                }
            }
            let path = match r.string(t, "database", "path", false) {
                Some(p) => absolute_path(r, "database.path", &p)?,
                None => service?.data_dir.join("db.sqlite3"),
            };
            Some(Database::Sqlite { path })
        }
        "postgresql" => {
            if t.contains_key("path") {
                r.problem(
                    "database.path",
                    "only applies to engine = \"sqlite\"",
                    Some("remove it; PostgreSQL is reached by name, host and port".into()),
                );
            }
            let name = r.string(t, "database", "name", true);
            let user = r.string(t, "database", "user", false);
            let host = r.string(t, "database", "host", false);
            let port = match r.integer(t, "database", "port") {
                Some(Some(p)) => match u16::try_from(p) {
                    Ok(p) if p > 0 => Some(Some(p)),
                    _ => {
                        r.problem("database.port", format!("{p} is not a TCP port"), None);
                        None
                    }
                },
                Some(None) => Some(None),
                None => None,
            };
            // Names the server knows: PostgreSQL cuts identifiers at 63 bytes, and a NUL or
            // a control character cannot be sent at all.
            for (key, value, what) in [
                ("name", &name, "the database's name"),
                ("user", &user, "the role's name"),
            ] {
                if value.as_deref().is_some_and(|v| {
                    v.is_empty() || v.len() > 63 || v.chars().any(char::is_control)
                }) {
                    r.problem(
                        format!("database.{key}"),
                        "must be 1 to 63 bytes without NUL or control characters",
                        Some(format!("give {what} exactly as the server knows it")),
                    );
                }
            }
            if host.as_deref().is_some_and(|h| {
                h.is_empty() || h.contains(['\0', ',']) || h.chars().any(char::is_control)
            }) {
                r.problem(
                    "database.host",
                    "is empty or holds several hosts",
                    Some("give one host name, address, or the absolute path of the server's socket directory (e.g. \"/run/postgresql\")".into()),
                );
            }
            let sslmode = match r.string(t, "database", "sslmode", false) {
                None => Some(SslMode::default()),
                Some(v) => match SslMode::ALL.into_iter().find(|m| m.as_str() == v) {
                    Some(m) => Some(m),
                    None => {
                        let names: Vec<&str> = SslMode::ALL.iter().map(|m| m.as_str()).collect();
                        let hint = suggest::did_you_mean(&v, &names)
                            .unwrap_or_else(|| format!("use one of: {}", names.join(", ")));
                        r.problem(
                            "database.sslmode",
                            format!("unknown sslmode {v:?}"),
                            Some(hint),
                        );
                        None
                    }
                },
            };
            let sslrootcert = match r.string(t, "database", "sslrootcert", false) {
                Some(p) => absolute_path(r, "database.sslrootcert", &p).map(Some),
                None => Some(None),
            };
            if let (Some(mode), Some(None)) = (sslmode, &sslrootcert) {
                if mode.verifies() {
                    r.problem(
                        "database.sslmode",
                        format!("{mode} needs database.sslrootcert"),
                        Some("set database.sslrootcert to the CA certificate (PEM) that signed the server's certificate, or use sslmode = \"require\"".into()),
                    );
                }
            }
            let wait_timeout = match r.integer(t, "database", "wait_timeout_sec") {
                Some(Some(s)) if (0..=MAX_DB_WAIT_TIMEOUT_SECS).contains(&s) => {
                    Some(Duration::from_secs(s as u64))
                }
                Some(Some(s)) => {
                    r.problem(
                        "database.wait_timeout_sec",
                        format!("{s} is out of range"),
                        Some(format!("use a number of seconds between 0 (one attempt) and {MAX_DB_WAIT_TIMEOUT_SECS}")),
                    );
                    None
                }
                Some(None) => Some(Duration::from_secs(DEFAULT_DB_WAIT_TIMEOUT_SECS)),
                None => None,
            };
            Some(Database::Postgresql {
                name: name?,
                user,
                host,
                port: port?,
                sslmode: sslmode?,
                sslrootcert: sslrootcert?,
                wait_timeout: wait_timeout?,
            })
        }
        other => {
            let hint = suggest::did_you_mean(other, &["sqlite", "postgresql"]);
            r.problem(
                "database.engine",
                format!("unknown engine {other:?}"),
                Some(hint.unwrap_or_else(|| "use \"sqlite\" or \"postgresql\"".into())),
            );
            None
        }
    }
}

fn read_prepare(r: &mut Reader, t: Option<&Table>) -> Option<Prepare> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    r.unknown_keys("prepare", t, PREPARE_KEYS);
    let migrate = r.bool(t, "prepare", "migrate", true);
    let collectstatic = r.bool(t, "prepare", "collectstatic", true);
    let compilemessages = r.bool(t, "prepare", "compilemessages", true);
    let stall = match r.integer(t, "prepare", "stall_timeout_sec") {
        Some(Some(s)) if (1..=86_400).contains(&s) => Some(Duration::from_secs(s as u64)),
        Some(Some(s)) => {
            r.problem(
                "prepare.stall_timeout_sec",
                format!("{s} is out of range"),
                Some("use a number of seconds between 1 and 86400".into()),
            );
            None
        }
        Some(None) => Some(Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS)),
        None => None,
    };
    let backups = match r.integer(t, "prepare", "backups") {
        Some(Some(n)) if (0..=100).contains(&n) => Some(n as u32),
        Some(Some(n)) => {
            r.problem(
                "prepare.backups",
                format!("{n} is out of range"),
                Some("keep between 0 (no backups) and 100 backups".into()),
            );
            None
        }
        Some(None) => Some(DEFAULT_BACKUPS),
        None => None,
    };
    Some(Prepare {
        backups: backups?,
        migrate: migrate?,
        collectstatic: collectstatic?,
        compilemessages: compilemessages?,
        stall_timeout: stall?,
    })
}

fn read_secrets(r: &mut Reader, t: Option<&Table>) -> Option<BTreeMap<String, SecretSource>> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, value) in t {
        let key = format!("secrets.{name}");
        if !check_variable_name(r, &key, name) {
            ok = false;
            continue;
        }
        let Some(source) = value.as_table() else {
            r.problem(
                &key,
                format!("must be a table with one source, not {}", crate::article(value.type_str())),
                Some(format!(
                    "write `{name} = {{ file = \"/path\" }}`, `{{ credential = \"id\" }}` or `{{ generate = \"django-secret-key\" }}`"
                )),
            );
            ok = false;
            continue;
        };
        r.unknown_keys(&key, source, SECRET_SOURCE_KEYS);
        let given: Vec<&str> = SECRET_SOURCE_KEYS
            .iter()
            .copied()
            .filter(|k| source.contains_key(*k))
            .collect();
        match given.as_slice() {
            [] => {
                r.problem(
                    &key,
                    "has no source",
                    Some("give exactly one of file, credential or generate".into()),
                );
                ok = false;
            }
            [one] => {
                let parsed = read_secret_source(r, &key, source, one);
                match parsed {
                    Some(s) => {
                        out.insert(name.clone(), s);
                    }
                    None => ok = false,
                }
            }
            many => {
                r.problem(
                    &key,
                    format!("has {} sources ({})", many.len(), many.join(", ")),
                    Some("give exactly one of file, credential or generate".into()),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn read_secret_source(r: &mut Reader, key: &str, t: &Table, which: &str) -> Option<SecretSource> {
    let value = r.string(t, key, which, true)?;
    let path = format!("{key}.{which}");
    match which {
        "file" => absolute_path(r, &path, &value).map(SecretSource::File),
        "credential" => {
            let valid = !value.is_empty()
                && value != "."
                && value != ".."
                && !value.contains('/')
                && value.len() <= 255
                && value.chars().all(|c| !c.is_control());
            if valid {
                Some(SecretSource::Credential(value))
            } else {
                r.problem(
                    path,
                    format!("{value:?} is not a credential name"),
                    Some("use the ID of a LoadCredential=ID:PATH line: no '/', not empty".into()),
                );
                None
            }
        }
        "generate" => match GenerateKind::ALL.iter().find(|k| k.as_str() == value) {
            Some(kind) => Some(SecretSource::Generate(*kind)),
            None => {
                let names: Vec<&str> = GenerateKind::ALL.iter().map(|k| k.as_str()).collect();
                let hint = suggest::did_you_mean(&value, &names)
                    .unwrap_or_else(|| format!("use one of: {}", names.join(", ")));
                r.problem(path, format!("unknown generator {value:?}"), Some(hint));
                None
            }
        },
        _ => unreachable!("caller passes a key of SECRET_SOURCE_KEYS"),
    }
}

fn read_environment(r: &mut Reader, t: Option<&Table>) -> Option<BTreeMap<String, String>> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, value) in t {
        let key = format!("environment.{name}");
        if !check_variable_name(r, &key, name) {
            ok = false;
            continue;
        }
        if SECRET_VARIABLES.contains(&name.as_str()) {
            r.problem(
                &key,
                "is a secret and must not be written into the config file",
                Some(format!(
                    "move it to [secrets]: `{name} = {{ file = \"/path/to/file\" }}` or a systemd credential"
                )),
            );
            ok = false;
            continue;
        }
        match value.as_str() {
            Some(s) if s.len() > MAX_ENV_VALUE => {
                r.problem(
                    &key,
                    format!("is {} bytes long, more than {MAX_ENV_VALUE}", s.len()),
                    Some(
                        "keep environment values short; put large data in a file the app reads"
                            .into(),
                    ),
                );
                ok = false;
            }
            Some(s) if s.contains('\0') => {
                r.problem(&key, "contains a NUL byte", None);
                ok = false;
            }
            Some(s) => {
                out.insert(name.clone(), s.to_string());
            }
            None => {
                r.problem(
                    &key,
                    format!("must be a string, not {}", crate::article(value.type_str())),
                    Some(format!("quote the value: {name} = \"{value}\"")),
                );
                ok = false;
            }
        }
    }
    let total: usize = out.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if total > MAX_ENV_TOTAL {
        r.problem(
            "environment",
            format!("holds {total} bytes in all, more than {MAX_ENV_TOTAL}"),
            Some("keep the environment small; put large data in a file the app reads".into()),
        );
        ok = false;
    }
    ok.then_some(out)
}

fn read_server(r: &mut Reader, t: Option<&Table>) -> Option<Server> {
    let t = t?;
    r.unknown_keys("server", t, SERVER_KEYS);
    let command = r.string_array(t, "server", "command", true)?;
    match command.first() {
        None => {
            r.problem(
                "server.command",
                "is empty",
                Some("give the server's argv, e.g. [\"/opt/bitpoll/venv/bin/gunicorn\", \"bitpoll.wsgi:application\"]".into()),
            );
            None
        }
        Some(program) if !Path::new(program).is_absolute() => {
            r.problem(
                "server.command",
                format!("the program {program:?} is not an absolute path"),
                Some(
                    "the launcher does not search PATH; write the full path of the server program"
                        .into(),
                ),
            );
            None
        }
        Some(_) if command.iter().any(|a| a.contains('\0')) => {
            r.problem("server.command", "an argument contains a NUL byte", None);
            None
        }
        Some(_) => {
            let ready = read_ready(r, t, &command);
            let ready_path = read_ready_path(r, t, ready);
            let ready_timeout = read_ready_timeout(r, t, ready);
            Some(Server {
                command,
                ready: ready?,
                ready_path: ready_path?,
                ready_timeout: ready_timeout?,
            })
        }
    }
}

fn read_ready_timeout(r: &mut Reader, t: &Table, ready: Option<Ready>) -> Option<Duration> {
    match r.integer(t, "server", "ready_timeout_sec")? {
        None => Some(Duration::from_secs(DEFAULT_READY_TIMEOUT_SECS)),
        Some(_) if ready.is_some_and(|k| k != Ready::Answer) => {
            r.problem(
                "server.ready_timeout_sec",
                "is only used with ready = \"answer\"",
                Some("set ready = \"answer\", or remove ready_timeout_sec".into()),
            );
            None
        }
        Some(s) if (1..=600).contains(&s) => Some(Duration::from_secs(s as u64)),
        Some(s) => {
            r.problem(
                "server.ready_timeout_sec",
                format!("{s} is out of range"),
                Some("use a number of seconds between 1 and 600".into()),
            );
            None
        }
    }
}

fn read_ready_path(r: &mut Reader, t: &Table, ready: Option<Ready>) -> Option<String> {
    let Some(path) = r.string(t, "server", "ready_path", false) else {
        return Some(DEFAULT_READY_PATH.to_string());
    };
    if ready.is_some_and(|k| k != Ready::Answer) {
        r.problem(
            "server.ready_path",
            "is only used with ready = \"answer\"",
            Some("set ready = \"answer\", or remove ready_path".into()),
        );
        return None;
    }
    let visible = path.bytes().all(|b| b.is_ascii_graphic());
    if !path.starts_with('/') || !visible || path.len() > READY_PATH_MAX {
        r.problem(
            "server.ready_path",
            format!("{path:?} is not a request path"),
            Some(format!(
                "a path on the app starting with /, at most {READY_PATH_MAX} characters, without spaces or non-ASCII characters (percent-encode them), e.g. \"/\" or \"/healthz?warm=1\""
            )),
        );
        return None;
    }
    Some(path)
}

/// Whether `command` runs gunicorn (its program, or `python -m gunicorn`).
fn runs_gunicorn(command: &[String]) -> bool {
    command.iter().take(3).any(|a| {
        Path::new(a)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("gunicorn"))
    })
}

/// The config-file option of gunicorn in `command`, if it has one.
fn gunicorn_config_option(command: &[String]) -> Option<&String> {
    command.iter().find(|a| {
        *a == "-c"
            || a.starts_with("--config")
            || (a.starts_with("-c") && a.len() > 2 && !a.starts_with("--"))
    })
}

/// `ready` as written, or its default: "answer" for gunicorn without a config file of
/// its own (the hooks come in one), "arbiter" otherwise.
pub fn default_ready(command: &[String]) -> Ready {
    if runs_gunicorn(command) && gunicorn_config_option(command).is_none() {
        Ready::Answer
    } else {
        Ready::Arbiter
    }
}

fn read_ready(r: &mut Reader, t: &Table, command: &[String]) -> Option<Ready> {
    let value = r.string(t, "server", "ready", false);
    let ready = match value.as_deref() {
        None => return Some(default_ready(command)),
        Some(v) => match Ready::ALL.iter().find(|k| k.as_str() == v) {
            Some(k) => *k,
            None => {
                let names: Vec<&str> = Ready::ALL.iter().map(|k| k.as_str()).collect();
                let hint = suggest::did_you_mean(v, &names)
                    .unwrap_or_else(|| format!("use one of: {}", names.join(", ")));
                r.problem("server.ready", format!("unknown value {v:?}"), Some(hint));
                return None;
            }
        },
    };
    if ready.uses_hook() {
        let ready_text = ready.as_str();
        if !runs_gunicorn(command) {
            r.problem(
                "server.ready",
                format!("\"{ready_text}\" needs gunicorn as the server"),
                Some("it works through a gunicorn hook; with another server use ready = \"arbiter\" (the default for it)".into()),
            );
            return None;
        }
        if let Some(a) = gunicorn_config_option(command) {
            r.problem(
                "server.ready",
                format!("\"{ready_text}\" passes its own gunicorn config file, and server.command already has {a}"),
                Some("move those settings to command-line options, or use ready = \"arbiter\"".into()),
            );
            return None;
        }
    }
    Some(ready)
}

fn check_account_name(r: &mut Reader, key: &str, name: &str) -> bool {
    // The portable subset that useradd, systemd-sysusers and NixOS all accept.
    let valid = !name.is_empty()
        && name.len() <= 31
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        r.problem(
            key,
            format!("{name:?} is not a valid user or group name"),
            Some("use lower-case letters, digits, '_' and '-', starting with a letter, at most 31 characters".into()),
        );
        return false;
    }
    if name == "root" {
        r.problem(
            key,
            "must not be root",
            Some("the app runs unprivileged; use a dedicated account such as \"bitpoll\"".into()),
        );
        return false;
    }
    true
}

fn check_variable_name(r: &mut Reader, key: &str, name: &str) -> bool {
    let valid = is_identifier(name, |c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        r.problem(
            key,
            format!("{name:?} is not an environment variable name"),
            Some("use letters, digits and '_', not starting with a digit".into()),
        );
        return false;
    }
    if RESERVED_VARIABLES.contains(&name) {
        r.problem(
            key,
            "is set by the launcher itself",
            Some("remove it; the launcher derives it from [service], [app] and [database]".into()),
        );
        return false;
    }
    true
}

fn is_identifier(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(allowed)
}

fn absolute_path(r: &mut Reader, key: &str, value: &str) -> Option<PathBuf> {
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        r.problem(
            key,
            format!("{value:?} is not an absolute path"),
            Some("write the full path starting with '/'".into()),
        );
        return None;
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        r.problem(
            key,
            format!("{value:?} contains '.' or '..'"),
            Some("write the path without '.' and '..' components".into()),
        );
        return None;
    }
    if value.contains('\0') {
        r.problem(key, "contains a NUL byte", None);
        return None;
    }
    Some(path)
}

#[cfg(test)]
mod tests;
