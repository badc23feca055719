//! The launcher's own PostgreSQL session: the same role, server and database as the app
//! (launcher_plan::postgres::Server), the password from the BITPOLL_DB_PASSWORD secret.
//!
//! `run` waits for the server with a bounded, visible backoff ([`wait`]), reads what the
//! database holds (the facts the judgements need: `django_migrations`, whether there is
//! data at all), and holds the migration lock on this session (crate::lock). `check`
//! connects once ([`observe_once`]). The streams are connected here: TCP (with TLS per
//! `sslmode`) or the server's Unix socket, connected with the service user's identity so
//! peer authentication sees the user the app runs as. Messages name the role, host, port
//! and database, never the password. Every query has a time limit.

mod tls;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::tls::NoTls;
use tokio_postgres::{Client, Config as PgConfig};
use tracing::{debug, info};

use launcher_config::SslMode;
use launcher_plan::facts::{PostgresFacts, PostgresState};
use launcher_plan::postgres::{Failure, Host, Server, backoff};
use launcher_plan::secret::SecretValue;
use launcher_sys::StopSignal;
use launcher_sys::privs::{Identity, Ids, Kernel};

use crate::notify;
use crate::signals::StopSignals;

/// The longest one connection attempt (name lookup, TCP, TLS, authentication) may take,
/// for `run`'s attempts and `check`'s and `manage`'s single one alike. Longer than the C
/// library's resolver timeout (5 s), so one DNS datagram lost on the way (a container
/// network's DNS server reloading as a container joins) is retried within the attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// More rows than any app has migrations: a bound, not a limit anyone meets.
const MAX_ROWS: usize = 100_000;
const MAX_NAME: usize = 255;
/// How much longer than its own limit systemd's start timeout is kept while waiting, so
/// the launcher's own message comes first.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(15);
/// The server drops the session (and so the migration lock) of a client that vanished
/// without closing it (a machine that lost power) after about idle + interval * count
/// seconds, instead of the system's default of hours.
const KEEPALIVES: &str =
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3";

/// How the launcher logs in.
pub struct Login<'a> {
    /// BITPOLL_DB_PASSWORD, when configured.
    pub password: Option<&'a SecretValue>,
    /// The service user's identity, to connect a Unix socket as (peer authentication);
    /// None to connect as this process is.
    pub peer: Option<Ids>,
    /// The session's application_name (launcher_plan::postgres::instance_name).
    pub name: String,
}

/// A failed connection attempt.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub failure: Failure,
    /// The server's or the system's words; never the password.
    pub message: String,
}

/// An open session. Dropping it closes the connection, which ends every session-level
/// lock it holds.
pub struct Session {
    client: Client,
    pub server: Server,
}

/// Connect once, within `limit`.
pub async fn connect<K: Kernel>(
    ids: &mut Identity<K>,
    server: &Server,
    login: &Login<'_>,
    limit: Duration,
) -> Result<Session, ConnectError> {
    match tokio::time::timeout(limit, connect_inner(ids, server, login)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError {
            failure: Failure::Unreachable,
            message: format!("no answer within {} s", limit.as_secs()),
        }),
    }
}

async fn connect_inner<K: Kernel>(
    ids: &mut Identity<K>,
    server: &Server,
    login: &Login<'_>,
) -> Result<Session, ConnectError> {
    let mut config = PgConfig::new();
    config
        .user(&server.role)
        .dbname(&server.database)
        .application_name(&login.name)
        .options(KEEPALIVES);
    if let Some(password) = login.password {
        config.password(password.expose().as_bytes());
    }
    let client = match &server.host {
        Host::Socket(_) => {
            let path = server
                .socket_path()
                .expect("a socket host has a socket path");
            // Non-blocking: a full backlog is a refused attempt, never a blocked runtime.
            let std_stream = launcher_sys::net::connect_unix_as(ids, &path, login.peer.clone())
                .map_err(|e| io_failure(&format!("{}", path.display()), e))?;
            let stream = tokio::net::UnixStream::from_std(std_stream)
                .map_err(|e| io_failure("socket", e))?;
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config
                .connect_raw(stream, NoTls)
                .await
                .map_err(|e| classify(&e))?;
            spawn_connection(connection);
            client
        }
        Host::Tcp(host) => {
            let stream = tcp(host, server.port).await?;
            if server.tls() {
                let rootcert = match server.sslmode {
                    SslMode::Disable => None,
                    _ => server.sslrootcert.as_deref(),
                };
                let tls =
                    tls::Tls::new(server.sslmode, rootcert, host).map_err(|e| ConnectError {
                        failure: Failure::Tls,
                        message: e.0,
                    })?;
                config.ssl_mode(match server.sslmode {
                    SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                    _ => tokio_postgres::config::SslMode::Require,
                });
                let (client, connection) = config
                    .connect_raw(stream, tls)
                    .await
                    .map_err(|e| classify(&e))?;
                spawn_connection(connection);
                client
            } else {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = config
                    .connect_raw(stream, NoTls)
                    .await
                    .map_err(|e| classify(&e))?;
                spawn_connection(connection);
                client
            }
        }
    };
    Ok(Session {
        client,
        server: server.clone(),
    })
}

/// The connection task: it carries the session's traffic while the runtime runs.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            debug!(%err, "PostgreSQL connection ended");
        }
    });
}

/// A TCP connection to the first address of `host` that accepts one.
async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, ConnectError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| io_failure(&format!("cannot resolve {host}"), e))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(io_failure(&addr.to_string(), e)),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError {
        failure: Failure::Unreachable,
        message: format!("{host} has no address"),
    }))
}

fn io_failure(what: &str, e: std::io::Error) -> ConnectError {
    ConnectError {
        failure: io_kind(&e),
        message: format!("{what}: {e}"),
    }
}

/// An I/O error of the connection: a server not there (yet) is worth waiting for; what
/// the client itself cannot send (a parameter with a NUL byte, a socket path too long)
/// never gets better by waiting.
fn io_kind(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::Unsupported => Failure::Other,
        _ => Failure::Unreachable,
    }
}

/// A tokio-postgres error by what can fix it, with its words.
fn classify(e: &tokio_postgres::Error) -> ConnectError {
    if let Some(db) = e.as_db_error() {
        return ConnectError {
            failure: Failure::of_sqlstate(db.code().code()),
            message: format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        };
    }
    let mut source = std::error::Error::source(e);
    let mut failure = None;
    while let Some(s) = source {
        if s.is::<tls::TlsFailure>() {
            failure = Some(Failure::Tls);
            break;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            failure = Some(io_kind(io));
            break;
        }
        source = s.source();
    }
    let text = e.to_string();
    let failure = failure.unwrap_or(if e.is_closed() {
        Failure::Unreachable
    } else if text.starts_with("authentication error") {
        Failure::Authentication
    } else if text.contains("TLS") {
        Failure::Tls
    } else {
        Failure::Other
    });
    let message = match std::error::Error::source(e) {
        Some(s) => format!("{text}: {s}"),
        None => text,
    };
    ConnectError { failure, message }
}

/// Why the wait for the server ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(
        "PostgreSQL ({server}) refused the connection: {message}; waiting cannot fix this, so the start fails now: {fix}"
    )]
    Refused {
        server: String,
        failure: Failure,
        message: String,
        fix: String,
    },
    #[error(
        "PostgreSQL ({server}) did not accept a connection within {waited} s ({attempts} attempt(s)); the last one failed: {last}; start PostgreSQL, correct database.host/database.port, or raise database.wait_timeout_sec"
    )]
    TimedOut {
        server: String,
        waited: u64,
        attempts: u32,
        last: String,
    },
    #[error("stopped by signal {} ({signal}) while waiting for PostgreSQL ({server})", .signal.raw())]
    Stopped { signal: StopSignal, server: String },
}

/// Connect, waiting for the server up to its `wait_timeout` with a growing delay (see
/// launcher_plan::postgres::backoff): STATUS says what is awaited, systemd's start
/// timeout is kept beyond the wait's own limit, every failed attempt is logged with its
/// cause. A server that answers with a refusal waiting cannot fix (authentication, no
/// such database, TLS) fails at once.
pub async fn wait<K: Kernel>(
    ids: &mut Identity<K>,
    server: &Server,
    login: &Login<'_>,
    stop: &mut StopSignals,
) -> Result<Session, WaitError> {
    let started = Instant::now();
    let deadline = started + server.wait_timeout;
    let address = server.address();
    notify::status(&format!("Connecting to PostgreSQL at {address}"));
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        notify::extend_timeout(left + CONNECT_TIMEOUT + TIMEOUT_MARGIN);
        let result = tokio::select! {
            biased;
            signal = stop.recv() => return Err(WaitError::Stopped { signal, server: server.to_string() }),
            r = connect(ids, server, login, CONNECT_TIMEOUT) => r,
        };
        let e = match result {
            Ok(session) => {
                if attempt > 1 {
                    info!(
                        phase = "database",
                        attempts = attempt,
                        duration_ms = started.elapsed().as_millis() as u64,
                        "PostgreSQL ({server}) accepted the connection after {attempt} attempts in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(session);
            }
            Err(e) => e,
        };
        if !e.failure.waits() {
            return Err(WaitError::Refused {
                server: server.to_string(),
                failure: e.failure,
                fix: e.failure.fix(server),
                message: e.message,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WaitError::TimedOut {
                server: server.to_string(),
                waited: started.elapsed().as_secs(),
                attempts: attempt,
                last: e.message,
            });
        }
        let delay = backoff(attempt).min(left);
        let status = format!(
            "Waiting for PostgreSQL at {address} (attempt {attempt}, next in {})",
            seconds(delay)
        );
        notify::status(&status);
        info!(phase = "database", attempt, "{status}: {}", e.message);
        tokio::select! {
            biased;
            signal = stop.recv() => return Err(WaitError::Stopped { signal, server: server.to_string() }),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// "0.5 s", "2 s".
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A query error as text (the server's words when it sent any).
fn query_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn limited<T>(
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", query_error(&e))),
        Err(_) => Err(format!(
            "{what}: no answer within {} s",
            QUERY_TIMEOUT.as_secs()
        )),
    }
}

/// The holder of the migration lock, as pg_stat_activity shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// "NAME from ADDR", or "backend PID" when the name is not visible.
    pub label: String,
    /// Time since the holder's session last did anything (its heartbeat); None when this
    /// role may not see it.
    pub silent: Option<Duration>,
}

impl Session {
    /// What the database holds, as facts for the judgements.
    pub async fn observe(&self) -> PostgresFacts {
        let state = match self.read().await {
            Ok(state) => state,
            Err(message) => PostgresState::Connected {
                version: "?".into(),
                tables: 0,
                applied: Err(message),
            },
        };
        PostgresFacts {
            server: self.server.to_string(),
            state,
        }
    }

    async fn read(&self) -> Result<PostgresState, String> {
        // Django finds its tables through the session's search_path, and so does this.
        let row = limited(
            "reading the database",
            self.client.query_one(
                "SELECT current_setting('server_version'), \
                 (SELECT count(*) FROM pg_catalog.pg_tables \
                   WHERE schemaname = ANY (current_schemas(false))), \
                 to_regclass('django_migrations') IS NOT NULL",
                &[],
            ),
        )
        .await?;
        let what = "reading the database";
        let version: String = column(&row, 0, what)?;
        let tables: i64 = column(&row, 1, what)?;
        let exists: bool = column(&row, 2, what)?;
        let applied = if exists {
            self.applied().await
        } else {
            Ok(BTreeSet::new())
        };
        Ok(PostgresState::Connected {
            version,
            tables: tables.max(0) as u64,
            applied,
        })
    }

    /// The set of "app.name" in `django_migrations`; Err(why) when the answer would not be
    /// exact.
    async fn applied(&self) -> Result<BTreeSet<String>, String> {
        let rows = limited(
            "reading django_migrations",
            self.client.query(
                "SELECT app::text, name::text FROM django_migrations LIMIT $1",
                &[&(MAX_ROWS as i64 + 1)],
            ),
        )
        .await?;
        if rows.len() > MAX_ROWS {
            return Err(format!("django_migrations has more than {MAX_ROWS} rows"));
        }
        let mut applied = BTreeSet::new();
        for row in rows {
            // The app's role owns the table: it can drop NOT NULL and store anything.
            let what = "reading django_migrations";
            let app: Option<String> = column(&row, 0, what)?;
            let name: Option<String> = column(&row, 1, what)?;
            let (Some(app), Some(name)) = (app, name) else {
                return Err("django_migrations holds a row without app or name".into());
            };
            if app.len() > MAX_NAME || name.len() > MAX_NAME {
                return Err("django_migrations holds an over-long name".into());
            }
            applied.insert(format!("{app}.{name}"));
        }
        Ok(applied)
    }

    /// Take the session-level advisory lock `key`, waiting for it on the server at most
    /// `patience`: true when taken, false when another session holds it.
    pub async fn try_lock(&self, key: i64, patience: Duration) -> Result<bool, String> {
        // lock_timeout bounds the wait inside the server; a lock released meanwhile is
        // granted at once, without polling.
        let set = format!("SET lock_timeout = {}", patience.as_millis().max(1));
        limited("setting lock_timeout", self.client.batch_execute(&set)).await?;
        match tokio::time::timeout(
            patience + QUERY_TIMEOUT,
            self.client.execute("SELECT pg_advisory_lock($1)", &[&key]),
        )
        .await
        {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e))
                if e.as_db_error()
                    .is_some_and(|db| db.code().code() == "55P03") =>
            {
                Ok(false)
            }
            Ok(Err(e)) => Err(format!("taking the migration lock: {}", query_error(&e))),
            Err(_) => Err("taking the migration lock: no answer".into()),
        }
    }

    /// The session holding lock `key`, if any (pg_locks joined with pg_stat_activity).
    pub async fn holder(&self, key: i64) -> Result<Option<Holder>, String> {
        let rows = limited(
            "looking up the migration lock's holder",
            self.client.query(
                "SELECT l.pid, a.application_name, host(a.client_addr), \
                        extract(epoch FROM clock_timestamp() - a.state_change)::float8 \
                   FROM pg_catalog.pg_locks l \
                   LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
                  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                    AND l.database = (SELECT oid FROM pg_catalog.pg_database \
                                       WHERE datname = current_database()) \
                    AND l.classid::bigint = (($1::bigint >> 32) & 4294967295) \
                    AND l.objid::bigint = ($1::bigint & 4294967295) \
                  LIMIT 1",
                &[&key],
            ),
        )
        .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let what = "looking up the migration lock's holder";
        // pid is NULL for a lock held by a prepared transaction.
        let pid: Option<i32> = column(row, 0, what)?;
        let name: Option<String> = column(row, 1, what)?;
        let addr: Option<String> = column(row, 2, what)?;
        let silent: Option<f64> = column(row, 3, what)?;
        let name = name
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().filter(|c| !c.is_control()).take(63).collect())
            .unwrap_or_else(|| match pid {
                Some(pid) => format!("PostgreSQL backend {pid}"),
                None => "a prepared transaction".into(),
            });
        Ok(Some(Holder {
            label: match addr {
                Some(a) => format!("{name} from {a}"),
                None => name,
            },
            silent: silent.and_then(bounded_seconds),
        }))
    }

    /// Release lock `key`.
    pub async fn unlock(&self, key: i64) -> Result<(), String> {
        limited(
            "releasing the migration lock",
            self.client
                .execute("SELECT pg_advisory_unlock($1)", &[&key]),
        )
        .await
        .map(drop)
    }

    /// A sign of life others waiting for the lock see in pg_stat_activity.state_change.
    pub async fn heartbeat(&self) -> Result<(), String> {
        limited("heartbeat", self.client.batch_execute("SELECT 1")).await
    }
}

/// `check` and `manage`: connect once (no waiting) and read the facts, on a runtime of its
/// own.
pub fn observe_once<K: Kernel>(
    ids: &mut Identity<K>,
    server: &Server,
    login: &Login<'_>,
) -> PostgresFacts {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return PostgresFacts {
                server: server.to_string(),
                state: PostgresState::NotObserved(format!("no runtime: {e}")),
            };
        }
    };
    rt.block_on(async {
        match connect(ids, server, login, CONNECT_TIMEOUT).await {
            Ok(session) => session.observe().await,
            Err(e) => PostgresFacts {
                server: server.to_string(),
                state: PostgresState::Failed {
                    failure: e.failure,
                    message: e.message,
                },
            },
        }
    })
}

/// Column `i` of a row as `T`, or an error naming what was read: a value of another type or
/// a NULL where none is allowed is the server's (or the app role's) doing, never a panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
    what: &str,
) -> Result<T, String> {
    row.try_get(i).map_err(|e| {
        format!(
            "{what}: the server answered with an unexpected value in column {}: {e}",
            i + 1
        )
    })
}

/// A non-negative, finite number of seconds as a Duration (at most a year); None for
/// anything else the server may answer.
fn bounded_seconds(s: f64) -> Option<Duration> {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    (s.is_finite()).then(|| Duration::from_secs_f64(s.clamp(0.0, YEAR)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_number_of_seconds_the_server_answers_becomes_a_duration_or_none() {
        assert_eq!(bounded_seconds(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(bounded_seconds(-3.0), Some(Duration::ZERO));
        assert_eq!(
            bounded_seconds(1e300),
            Some(Duration::from_secs(365 * 24 * 3600))
        );
        assert_eq!(bounded_seconds(f64::NAN), None);
        assert_eq!(bounded_seconds(f64::INFINITY), None);
    }
}
