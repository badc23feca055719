//! A throw-away PostgreSQL server for tests/postgres.rs: Debian's server binaries
//! (/usr/lib/postgresql/<version>/bin, installed by .ci/run and scripts/test.sh), a
//! cluster made with initdb in a directory of its own under /tmp, run by the `postgres`
//! system user the package creates, listening on 127.0.0.1 at a spare port and on a Unix
//! socket in that directory. Over TCP every role logs in with a scram-sha-256 password;
//! over the socket by peer authentication. Dropping it stops the server (immediately) and
//! removes the directory, also when a test failed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::free_port;

/// The newest installed server version's binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL's server is not installed (/usr/lib/postgresql is missing): apt-get install postgresql",
        )
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
}

/// One server. See the module documentation.
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    running: bool,
}

impl PgServer {
    /// initdb and start a fresh server; `name` only makes the directory recognizable.
    pub fn start(name: &str) -> PgServer {
        assert!(
            nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .is_some(),
            "no `postgres` system user: apt-get install postgresql"
        );
        let dir = PathBuf::from(format!("/tmp/blt-pg-{}-{name}", std::process::id()));
        if dir.exists() {
            // A leftover of a killed run of this PID: stop its server first.
            let _ = runuser(
                &bin_dir().join("pg_ctl"),
                &[
                    "-D",
                    &dir.join("data").display().to_string(),
                    "-m",
                    "immediate",
                    "stop",
                ],
            );
            fs::remove_dir_all(&dir).expect("remove a stale server directory");
        }
        fs::create_dir(&dir).expect("create the server directory");
        let mut server = PgServer {
            dir,
            port: free_port(),
            bin: bin_dir(),
            running: false,
        };
        // The socket lives here: every service user must reach it.
        fs::set_permissions(&server.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        chown_postgres(&server.dir);
        let pwfile = server.dir.join("superuser-password");
        fs::write(&pwfile, "unused-superuser-password\n").expect("write the pwfile");
        chown_postgres(&pwfile);
        let out = runuser(
            &server.bin.join("initdb"),
            &[
                "-D",
                &server.data().display().to_string(),
                "-U",
                "postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed:\n{}", text(&out));
        server.start_again();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Start the (stopped) server again, on the same port.
    pub fn start_again(&mut self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=16MB -c log_connections=on",
            self.port,
            self.dir.display()
        );
        let out = runuser(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed:\n{}\n{}",
            text(&out),
            self.log()
        );
        self.running = true;
    }

    /// Serve TLS with this certificate and key (both readable by the postgres user) from
    /// the next start on.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        let conf = self.data().join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        ));
        fs::write(&conf, text).expect("write postgresql.conf");
    }

    /// Allow prepared transactions (PREPARE TRANSACTION) from the next start on.
    pub fn enable_prepared_transactions(&self) {
        let conf = self.data().join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str("\nmax_prepared_transactions = 4\n");
        fs::write(&conf, text).expect("write postgresql.conf");
    }

    /// Stop the server (fast shutdown: sessions are ended).
    pub fn stop(&mut self) {
        let out = runuser(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop failed:\n{}", text(&out));
        self.running = false;
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Run `sql` in database `db` as the superuser; its output (unaligned, tuples only).
    /// Fails the test when psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.try_psql(db, sql);
        assert!(out.status.success(), "psql {sql:?} failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn try_psql(&self, db: &str, sql: &str) -> Output {
        runuser(
            &self.bin.join("psql"),
            &[
                "-X",
                "-q",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.dir.display().to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        )
    }

    /// A login role with `password` (None: peer authentication over the socket only) and
    /// a database it owns.
    pub fn create_database(&self, role: &str, password: Option<&str>, db: &str) {
        let login = match password {
            Some(p) => format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{p}'"),
            None => format!("CREATE ROLE \"{role}\" LOGIN"),
        };
        self.psql("postgres", &login);
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""),
        );
    }

    /// Every (app, name) of `django_migrations` in `db`, in insertion order.
    pub fn applied(&self, db: &str) -> Vec<String> {
        let exists = self.psql(db, "SELECT to_regclass('django_migrations') IS NOT NULL");
        if exists != "t" {
            return Vec::new();
        }
        self.psql(
            db,
            "SELECT app || '.' || name FROM django_migrations ORDER BY id",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Assert every migration is recorded once, and return how many there are.
    pub fn assert_applied_once(&self, db: &str) -> usize {
        let applied = self.applied(db);
        let mut seen = std::collections::BTreeSet::new();
        let dups: Vec<&String> = applied.iter().filter(|m| !seen.insert(*m)).collect();
        assert!(
            dups.is_empty(),
            "django_migrations records {dups:?} more than once: {applied:?}"
        );
        applied.len()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let out = runuser(
                &self.bin.join("pg_ctl"),
                &[
                    "-D",
                    &self.data().display().to_string(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
            if !out.status.success() {
                eprintln!("cleanup: pg_ctl stop failed:\n{}", text(&out));
                // The postmaster's PID is the first line of postmaster.pid.
                if let Some(pid) = fs::read_to_string(self.data().join("postmaster.pid"))
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Run a server binary as the `postgres` user, with a clean environment.
fn runuser(program: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .arg("-u")
        .arg("postgres")
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn chown_postgres(path: &Path) {
    let u = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres user");
    nix::unistd::chown(path, Some(u.uid), Some(u.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
