//! PostgreSQL as the launcher reaches it, decided without any I/O: the connection the app
//! makes (from `[database]` and the service user, with libpq's defaults), the key of the
//! advisory lock that serialises migrate across instances, the name the launcher's
//! session shows in `pg_stat_activity`, the schedule of the wait for the server, and
//! which server errors waiting can fix. The binary's `src/postgres.rs` connects.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use launcher_config::{Config, Database, SslMode};
use sha2::{Digest, Sha256};

/// libpq's socket directory on Debian and NixOS alike (/var/run is /run).
pub const DEFAULT_SOCKET_DIR: &str = "/run/postgresql";
pub const DEFAULT_PORT: u16 = 5432;

/// The first delay of the wait for the server; each next one doubles...
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// The directory holding the server's Unix socket `.s.PGSQL.<port>`.
    Socket(PathBuf),
    /// A host name or an IP address.
    Tcp(String),
}

/// The connection the app makes, and so the launcher: the same role, server and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub role: String,
    pub host: Host,
    pub port: u16,
    pub database: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub wait_timeout: Duration,
}

impl Server {
    /// The PostgreSQL server of `cfg`; None for SQLite. Without `database.user` the role
    /// is the service user's name, as libpq (and so the app, which runs as that user)
    /// defaults it; without `database.host` the local socket directory.
    pub fn of(cfg: &Config) -> Option<Server> {
        let Database::Postgresql {
            name,
            user,
            host,
            port,
            sslmode,
            sslrootcert,
            wait_timeout,
        } = &cfg.database
        else {
            return None;
        };
        let host = match host.as_deref() {
            None => Host::Socket(DEFAULT_SOCKET_DIR.into()),
            Some(h) if h.starts_with('/') => Host::Socket(h.into()),
            Some(h) => Host::Tcp(h.to_string()),
        };
        Some(Server {
            role: user.clone().unwrap_or_else(|| cfg.service.user.clone()),
            host,
            port: port.unwrap_or(DEFAULT_PORT),
            database: name.clone(),
            sslmode: *sslmode,
            sslrootcert: sslrootcert.clone(),
            wait_timeout: *wait_timeout,
        })
    }

    /// The socket file, for a Unix socket host.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Socket(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    /// "host:port" (an IPv6 address in brackets; a socket directory as written).
    pub fn address(&self) -> String {
        match &self.host {
            Host::Socket(dir) => format!("{}:{}", dir.display(), self.port),
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
        }
    }

    /// Whether TLS is tried at all: never over a Unix socket (as libpq), never with
    /// `disable`.
    pub fn tls(&self) -> bool {
        matches!(self.host, Host::Tcp(_)) && self.sslmode != SslMode::Disable
    }
}

/// "role R at HOST:PORT, database D": what every message about the connection names.
/// Never the password.
impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "role {} at {}, database {}",
            self.role,
            self.address(),
            self.database
        )
    }
}

/// The key of the session-level advisory lock (`pg_advisory_lock(bigint)`) that
/// serialises migrate across the instances of one app on one database: the first 8 bytes
/// (big-endian, signed) of SHA-256 of "bitpoll-launcher migrate", the database name and
/// the settings module, NUL-separated. Advisory locks live per database already; the
/// settings module keeps two different apps sharing a database apart.
pub fn migration_lock_key(database: &str, settings_module: &str) -> i64 {
    let mut h = Sha256::new();
    for part in ["bitpoll-launcher migrate", database, settings_module] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The launcher session's `application_name` (also written into the data directory's
/// lock file): "bitpoll-launcher HOST pid N", cut to PostgreSQL's 63 bytes and to
/// printable ASCII, which is all the server keeps.
pub fn instance_name(hostname: &str, pid: u32) -> String {
    let host: String = hostname
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    let suffix = format!(" pid {pid}");
    let room = 63 - "bitpoll-launcher ".len() - suffix.len();
    let host = if host.len() > room {
        &host[..room]
    } else {
        &host
    };
    format!("bitpoll-launcher {host}{suffix}")
}

/// The delay after failed attempt `attempt` (1, 2, ...): 0.5 s, doubling, capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_CAP)
}

/// Why a connection failed, by what can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not there yet, or not accepting connections yet (refused, no socket, timed out,
    /// starting up, too many connections): waiting can fix it.
    Unreachable,
    /// The server refused the role or its password (or the client could not offer one).
    Authentication,
    /// The server has no database of that name.
    NoDatabase,
    /// TLS could not be agreed or the server's certificate was not accepted.
    Tls,
    /// Anything else the server or the client refused.
    Other,
}

impl Failure {
    /// Only an unreachable server is worth waiting for.
    pub fn waits(self) -> bool {
        self == Failure::Unreachable
    }

    /// A server error by its SQLSTATE (see PostgreSQL's errcodes).
    pub fn of_sqlstate(code: &str) -> Failure {
        match code {
            // invalid_authorization_specification (no pg_hba entry, unknown role, peer
            // mismatch), invalid_password
            "28000" | "28P01" => Failure::Authentication,
            // invalid_catalog_name: "database ... does not exist"
            "3D000" => Failure::NoDatabase,
            // cannot_connect_now (starting up, shutting down, in recovery),
            // too_many_connections, admin/crash shutdown of the session
            "57P03" | "53300" | "57P01" | "57P02" => Failure::Unreachable,
            _ => Failure::Other,
        }
    }

    /// A sentence saying what to change.
    pub fn fix(self, server: &Server) -> String {
        match self {
            Failure::Unreachable => format!(
                "start PostgreSQL, or correct database.host and database.port; `run` waits up to database.wait_timeout_sec ({} s) for it",
                server.wait_timeout.as_secs()
            ),
            Failure::Authentication => format!(
                "check that role {} exists and may connect to database {} from this host (pg_hba.conf), and that BITPOLL_DB_PASSWORD in [secrets] holds its password (over a Unix socket with peer authentication, the service user's name must be the role's)",
                server.role, server.database
            ),
            Failure::NoDatabase => format!(
                "create it (`createdb --owner {} {}` as the postgres user) or correct database.name",
                server.role, server.database
            ),
            Failure::Tls => {
                "correct database.sslmode and database.sslrootcert, or the server's TLS certificate"
                    .into()
            }
            Failure::Other => {
                "see the server's message; correct the [database] settings or the server".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(db: &str) -> Config {
        launcher_config::parse_str(&format!(
            r#"
[service]
user = "bitpoll"
data_dir = "/var/lib/bitpoll"
[app]
python = "/opt/venv/bin/python"
source_dir = "/opt/src"
[database]
engine = "postgresql"
name = "polls"
{db}
[secrets]
BITPOLL_SECRET_KEY = {{ file = "/run/keys/sk" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ file = "/run/keys/fek" }}
[server]
command = ["/opt/venv/bin/gunicorn", "bitpoll.wsgi:application"]
"#
        ))
        .unwrap()
    }

    #[test]
    fn the_defaults_are_libpqs_for_the_service_user() {
        let s = Server::of(&config("")).unwrap();
        assert_eq!(s.role, "bitpoll");
        assert_eq!(s.host, Host::Socket("/run/postgresql".into()));
        assert_eq!(
            s.socket_path().unwrap(),
            PathBuf::from("/run/postgresql/.s.PGSQL.5432")
        );
        assert!(!s.tls(), "never TLS over a Unix socket");
        assert_eq!(s.wait_timeout, Duration::from_secs(120));
        assert_eq!(
            s.to_string(),
            "role bitpoll at /run/postgresql:5432, database polls"
        );
    }

    #[test]
    fn a_tcp_host_is_named_with_its_port() {
        let s = Server::of(&config("host = \"::1\"\nport = 5433\nuser = \"app\"")).unwrap();
        assert_eq!(s.to_string(), "role app at [::1]:5433, database polls");
        assert!(s.tls(), "prefer tries TLS over TCP");
        let s = Server::of(&config("host = \"db\"\nsslmode = \"disable\"")).unwrap();
        assert_eq!(s.address(), "db:5432");
        assert!(!s.tls());
    }

    #[test]
    fn the_lock_key_depends_on_database_and_app_only() {
        let k = migration_lock_key("polls", "bitpoll.settings");
        assert_eq!(k, migration_lock_key("polls", "bitpoll.settings"));
        assert_ne!(k, migration_lock_key("polls2", "bitpoll.settings"));
        assert_ne!(k, migration_lock_key("polls", "other.settings"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            migration_lock_key("ab", "c.settings"),
            migration_lock_key("a", "bc.settings")
        );
        // Documented in docs/operations.md; a change breaks the lock between launcher
        // versions during a rolling upgrade.
        assert_eq!(k, 5_243_213_691_639_579_968);
    }

    #[test]
    fn the_instance_name_fits_postgresqls_63_bytes() {
        assert_eq!(
            instance_name("web-1", 812),
            "bitpoll-launcher web-1 pid 812"
        );
        let long = instance_name(&"h".repeat(100), 4_194_304);
        assert_eq!(long.len(), 63);
        assert!(long.ends_with(" pid 4194304"));
        assert_eq!(instance_name("wé b", 1), "bitpoll-launcher w??b pid 1");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let got: Vec<u64> = (1..=7).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn only_an_unreachable_server_is_waited_for() {
        assert_eq!(Failure::of_sqlstate("28P01"), Failure::Authentication);
        assert_eq!(Failure::of_sqlstate("28000"), Failure::Authentication);
        assert_eq!(Failure::of_sqlstate("3D000"), Failure::NoDatabase);
        assert!(Failure::of_sqlstate("57P03").waits());
        assert!(Failure::of_sqlstate("53300").waits());
        assert!(!Failure::of_sqlstate("42501").waits());
        assert!(!Failure::Authentication.waits() && !Failure::NoDatabase.waits());
    }
}
