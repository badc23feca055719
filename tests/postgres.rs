//! Several instances on one PostgreSQL database, and the launcher without systemd.
//!
//! Every test starts its own throw-away PostgreSQL server (tests/util/postgres.rs) and one
//! or more instances of the demo app (each a TestEnv: its own data directory, app copy and
//! port; one service user, created ahead as sysusers or NixOS would). The instances log
//! in over TCP with a scram-sha-256 password (one test: over the Unix socket by peer
//! authentication) and share SECRET_KEY and FIELD_ENCRYPTION_KEY from files, as instances
//! behind one load balancer must. Each
//! scenario asserts that every instance serves its page (which reads the database), that
//! every migration is recorded once, that nothing anywhere says "already exists", and
//! what STATUS said.
//!
//! Run as root, one test at a time, holding the machine-wide test lock:
//! `cargo test --test suite postgres:: -- --test-threads=1`.

use crate::util;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use util::cli::{Run, create_service_account, run_launcher};
use util::postgres::PgServer;
use util::{Launch, NotifyKind, TestEnv, contains, fernet_key, file_secret, write_file};

const DB: &str = "polls";
const ROLE: &str = "bitpoll_app";
/// Migrations of the demo app and the Django apps it uses.
const MIGRATIONS: usize = 17;
const READY: Duration = Duration::from_secs(90);

/// A random password of letters and digits.
fn token() -> String {
    let mut b = [0u8; 18];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    b.iter()
        .map(|x| b"abcdefghijklmnopqrstuvwxyz0123456789"[(*x % 36) as usize] as char)
        .collect()
}

/// The server, and the first instance configured for database `polls` over TCP with a
/// password, shared key files, and the service account created ahead.
fn deployment(name: &str) -> (PgServer, TestEnv, String) {
    let env = TestEnv::new(name);
    let pg = PgServer::start(name);
    let password = token();
    pg.create_database(ROLE, Some(&password), DB);
    let mut env = env;
    let keys = env.dir.join("keys");
    write_file(&keys.join("db-password"), password.as_bytes(), 0o600);
    write_file(
        &keys.join("secret-key"),
        token().repeat(3).as_bytes(),
        0o600,
    );
    write_file(&keys.join("fernet-key"), fernet_key().as_bytes(), 0o600);
    env.config
        .set_str("database", "engine", "postgresql")
        .set_str("database", "name", DB)
        .set_str("database", "user", ROLE)
        .set_str("database", "host", "127.0.0.1")
        .set("database", "port", &pg.port.to_string())
        .set(
            "secrets",
            "BITPOLL_DB_PASSWORD",
            &file_secret(&keys.join("db-password")),
        )
        .set(
            "secrets",
            "BITPOLL_SECRET_KEY",
            &file_secret(&keys.join("secret-key")),
        )
        .set(
            "secrets",
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            &file_secret(&keys.join("fernet-key")),
        );
    create_service_account(&env);
    (pg, env, password)
}

/// The page that lists polls: HTTP 200 only with a migrated database.
fn assert_serves(env: &TestEnv) {
    let r = env.http_get("/");
    assert_eq!(r.status, 200, "GET / on port {}: {}", env.port, r.body);
}

/// Nothing any launcher, app or the server logged says "already exists".
fn assert_nothing_already_exists(pg: &PgServer, envs: &[&TestEnv]) {
    for env in envs {
        assert!(
            !contains(&env.output_bytes(), b"already exists"),
            "{}",
            env.log_context()
        );
    }
    assert!(!pg.log().contains("already exists"), "{}", pg.log());
}

fn has_status(env: &TestEnv, needle: &str) -> bool {
    env.statuses().iter().any(|s| s.contains(needle))
}

fn waiting_for_migration(env: &TestEnv) -> Option<String> {
    env.statuses()
        .into_iter()
        .find(|s| s.starts_with("Waiting for another instance's migration (polls): held by "))
}

fn extends_timeout(env: &TestEnv) -> bool {
    env.notifications
        .iter()
        .any(|n| n.get("EXTEND_TIMEOUT_USEC").is_some())
}

#[test]
fn four_launchers_at_once_on_an_empty_database_migrate_it_once_and_all_serve() {
    crate::util::root_only!();
    let (pg, mut a, _) = deployment("pg_four");
    // A migration that takes a while, so the four meet at the lock.
    a.config.set_str("environment", "DEMO_MIGRATION_DELAY", "3");
    let mut others: Vec<TestEnv> = ["b", "c", "d"].iter().map(|n| a.instance(n)).collect();
    a.launch();
    for o in &mut others {
        o.launch();
    }
    {
        let mut all: Vec<&mut TestEnv> = std::iter::once(&mut a).chain(others.iter_mut()).collect();
        TestEnv::wait_all_ready(&mut all, READY);
    }
    let all: Vec<&TestEnv> = std::iter::once(&a).chain(others.iter()).collect();
    for env in &all {
        assert_serves(env);
    }
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS);
    assert_nothing_already_exists(&pg, &all);
    // One instance migrated; the others waited for it, named it, and found nothing to do.
    let migrated: Vec<&&TestEnv> = all
        .iter()
        .filter(|e| e.stderr().contains("Applying poll.0001_initial"))
        .collect();
    assert_eq!(migrated.len(), 1, "instances that applied migrations");
    let holder = migrated[0];
    assert!(has_status(holder, "Preparing: migrate (1/3)"));
    for env in all.iter().filter(|e| e.port != holder.port) {
        let status = waiting_for_migration(env)
            .unwrap_or_else(|| panic!("no waiting STATUS: {:?}", env.statuses()));
        assert!(status.contains("bitpoll-launcher "), "{status}");
        assert!(extends_timeout(env), "{:?}", env.notifications);
        assert!(
            env.stderr()
                .contains("No migrations to apply: the database holds every migration on disk."),
            "{}",
            env.log_context()
        );
    }
}

#[test]
fn a_database_down_at_start_is_waited_for_and_used_once_it_is_up() {
    crate::util::root_only!();
    let (mut pg, mut env, _) = deployment("pg_late");
    pg.stop();
    env.launch();
    let first = env.wait_status(
        &format!("Waiting for PostgreSQL at 127.0.0.1:{}", pg.port),
        READY,
    );
    assert_eq!(
        first,
        format!(
            "Waiting for PostgreSQL at 127.0.0.1:{} (attempt 1, next in 0.5 s)",
            pg.port
        )
    );
    assert!(extends_timeout(&env));
    // Nothing was changed while waiting: the data directory comes after the database.
    assert!(!env.data.exists());
    pg.start_again();
    env.wait_ready(READY);
    assert_serves(&env);
    assert!(
        env.stderr().contains("accepted the connection after"),
        "{}",
        env.log_context()
    );
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS);
    assert_nothing_already_exists(&pg, &[&env]);
}

#[test]
fn a_database_that_never_comes_up_fails_after_the_configured_wait_with_the_last_cause() {
    crate::util::root_only!();
    let (mut pg, mut env, _) = deployment("pg_never");
    pg.stop();
    env.config.set("database", "wait_timeout_sec", "3");
    env.launch();
    env.expect_failure(
        1,
        &[
            &format!("PostgreSQL (role {ROLE} at 127.0.0.1:{}, database {DB}) did not accept a connection within 3 s", pg.port),
            "Connection refused",
            "raise database.wait_timeout_sec",
        ],
        READY,
    );
    assert!(
        has_status(
            &env,
            &format!(
                "Waiting for PostgreSQL at 127.0.0.1:{} (attempt 2, next in 1 s)",
                pg.port
            )
        ),
        "{:?}",
        env.statuses()
    );
    assert!(
        !env.data.exists(),
        "nothing is changed when the database never comes"
    );
}

#[test]
fn a_wrong_password_or_a_missing_database_fails_at_once_naming_role_host_port_and_database() {
    crate::util::root_only!();
    let (pg, mut env, password) = deployment("pg_refused");
    let wrong = format!("{password}-but-wrong");
    write_file(&env.dir.join("keys/db-password"), wrong.as_bytes(), 0o600);
    env.launch();
    let stderr = env.expect_failure(
        3,
        &[
            &format!(
                "PostgreSQL (role {ROLE} at 127.0.0.1:{}, database {DB}) refused the connection",
                pg.port
            ),
            "28P01",
            "password authentication failed",
            "waiting cannot fix this",
            "BITPOLL_DB_PASSWORD",
        ],
        READY,
    );
    assert!(!contains(&env.output_bytes(), wrong.as_bytes()), "{stderr}");
    assert!(
        !contains(&env.output_bytes(), password.as_bytes()),
        "{stderr}"
    );
    assert!(
        !env.statuses()
            .iter()
            .any(|s| s.starts_with("Waiting for PostgreSQL")),
        "an authentication failure is not waited for: {:?}",
        env.statuses()
    );
    assert!(!env.data.exists());

    write_file(
        &env.dir.join("keys/db-password"),
        password.as_bytes(),
        0o600,
    );
    env.config.set_str("database", "name", "nosuchdb");
    env.launch();
    env.expect_failure(
        3,
        &[
            &format!("role {ROLE} at 127.0.0.1:{}, database nosuchdb", pg.port),
            "3D000",
            "createdb --owner bitpoll_app nosuchdb",
        ],
        READY,
    );
    assert!(
        !env.statuses()
            .iter()
            .any(|s| s.starts_with("Waiting for PostgreSQL"))
    );
}

#[test]
fn a_second_instance_started_during_a_slow_migration_waits_and_then_skips_it_and_a_third_stops_on_sigterm()
 {
    crate::util::root_only!();
    let (pg, mut a, _) = deployment("pg_slow");
    a.config.set_str("environment", "DEMO_MIGRATION_DELAY", "4");
    let mut b = a.instance("b");
    let a_pid = a.launch();
    a.wait_for_log("demo migration: step 1 of 4", READY);
    b.launch();
    let status = b.wait_status("Waiting for another instance's migration", READY);
    assert!(
        status.contains(&format!(" pid {a_pid} from 127.0.0.1")),
        "the STATUS names the holder: {status}"
    );
    // The lock A holds is the one docs/operations.md says how to compute.
    let held = pg.psql(
        DB,
        "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks \
          WHERE locktype = 'advisory' AND granted",
    );
    assert_eq!(held, pg.psql(DB, DOCUMENTED_LOCK_KEY));
    // A third one, stopped while it waits, stops at once and cleanly.
    let mut c = a.instance("c");
    c.launch();
    c.wait_status("Waiting for another instance's migration", READY);
    c.signal(Signal::SIGTERM);
    c.expect_failure(
        128 + 15,
        &["stopped by signal 15 (SIGTERM) while waiting for the migration lock"],
        Duration::from_secs(20),
    );
    a.wait_ready(READY);
    b.wait_ready(READY);
    assert_serves(&a);
    assert_serves(&b);
    assert!(extends_timeout(&b));
    let b_log = b.stderr();
    assert!(!b_log.contains("Applying "), "{}", b.log_context());
    assert!(b_log.contains("waited "), "{}", b.log_context());
    assert!(
        b_log.contains("No migrations to apply"),
        "{}",
        b.log_context()
    );
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS);
    assert_nothing_already_exists(&pg, &[&a, &b]);
}

/// The migration lock's key for database `polls` and `bitpoll.settings`, as
/// docs/operations.md computes it in SQL.
const DOCUMENTED_LOCK_KEY: &str = r"SELECT ('x' || encode(substr(sha256(
    convert_to('bitpoll-launcher migrate', 'UTF8') || '\x00'::bytea ||
    convert_to('polls', 'UTF8') || '\x00'::bytea ||
    convert_to('bitpoll.settings', 'UTF8') || '\x00'::bytea), 1, 8), 'hex'))::bit(64)::bigint";

/// A new release's migration: a table (applied twice it would fail with "relation
/// already exists") and a few seconds of visible work.
fn add_rolling_migration(app: &Path) {
    let text = r#"
import time

from django.db import migrations


def work(apps, schema_editor):
    for i in range(1, 4):
        print("rolling migration: step %d of 3" % i, flush=True)
        time.sleep(1)


class Migration(migrations.Migration):
    dependencies = [("poll", "0002_demo_delay")]
    operations = [
        migrations.RunSQL("CREATE TABLE poll_rolling (id integer)", "DROP TABLE poll_rolling"),
        migrations.RunPython(work, migrations.RunPython.noop),
    ]
"#;
    write_file(
        &app.join("bitpoll/poll/migrations/0003_rolling.py"),
        text.as_bytes(),
        0o644,
    );
}

#[test]
fn a_rolling_restart_with_a_new_migration_applies_it_once() {
    crate::util::root_only!();
    let (pg, mut a, _) = deployment("pg_rolling");
    let mut b = a.instance("b");
    a.launch();
    a.wait_ready(READY);
    b.launch();
    b.wait_ready(READY);
    // The upgrade reaches both; A restarts first, B while A migrates.
    add_rolling_migration(&a.app);
    add_rolling_migration(&b.app);
    a.stop();
    a.launch();
    a.wait_for_log("rolling migration: step 1 of 3", READY);
    b.stop();
    b.launch();
    b.wait_status("Waiting for another instance's migration", READY);
    a.wait_ready(READY);
    b.wait_ready(READY);
    assert_serves(&a);
    assert_serves(&b);
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS + 1);
    assert!(pg.applied(DB).contains(&"poll.0003_rolling".to_string()));
    assert!(!b.stderr().contains("Applying poll.0003_rolling"));
    assert_nothing_already_exists(&pg, &[&a, &b]);
}

#[test]
fn an_emptied_schema_is_migrated_again_and_check_says_so_first() {
    crate::util::root_only!();
    let (pg, mut env, _) = deployment("pg_emptied");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    pg.psql(
        DB,
        &format!("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION {ROLE}"),
    );
    // check reads the database as run does and judges it the same way.
    env.write_config();
    let out = run_launcher(
        &env,
        &Run::new(&[
            "check",
            "--config",
            &env.config_path().display().to_string(),
            "--json",
        ]),
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("check --json");
    let findings = report["findings"].as_array().expect("findings");
    let migrate = findings
        .iter()
        .find(|f| f["group"] == "prepare" && f["subject"] == "step migrate")
        .unwrap_or_else(|| panic!("no migrate finding: {}", out.context()));
    let message = migrate["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "runs at the next start: the database lacks {MIGRATIONS} migration(s) applied before"
        )),
        "{message}"
    );
    let db = findings
        .iter()
        .find(|f| {
            f["group"] == "database"
                && f["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("postgresql role"))
        })
        .unwrap_or_else(|| panic!("no postgresql finding: {}", out.context()));
    assert_eq!(db["severity"], "ok", "{db}");
    assert!(
        db["message"]
            .as_str()
            .unwrap()
            .contains("0 table(s), no applied migrations")
    );

    env.launch();
    env.wait_ready(READY);
    assert!(
        has_status(&env, "Preparing: migrate (1/1)"),
        "{:?}",
        env.statuses()
    );
    assert!(
        env.stderr().contains(&format!(
            "the database lacks {MIGRATIONS} migration(s) applied before"
        )),
        "{}",
        env.log_context()
    );
    assert_serves(&env);
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS);
    assert_nothing_already_exists(&pg, &[&env]);
}

#[test]
fn killing_the_lock_holder_lets_the_waiting_instance_migrate() {
    crate::util::root_only!();
    let (pg, mut a, _) = deployment("pg_kill");
    a.config
        .set_str("environment", "DEMO_MIGRATION_DELAY", "60");
    let mut b = a.instance("b");
    b.config.set_str("environment", "DEMO_MIGRATION_DELAY", "1");
    let a_pid = a.launch();
    a.wait_for_log("demo migration: step 1 of 60", READY);
    b.launch();
    let status = b.wait_status("Waiting for another instance's migration", READY);
    assert!(status.contains(&format!(" pid {a_pid} ")), "{status}");
    a.signal(Signal::SIGKILL);
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 128 + 9);
    b.wait_ready(READY);
    assert_serves(&b);
    // B applied what A's killed migration (and its killed driver) left undone.
    assert!(
        b.stderr().contains("Applying poll.0002_demo_delay"),
        "{}",
        b.log_context()
    );
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS);
    assert_nothing_already_exists(&pg, &[&a, &b]);
    // The killed launcher's preparation process went with it.
    assert!(
        !a.stderr().contains("demo migration: step 60 of 60"),
        "{}",
        a.log_context()
    );
}

#[test]
fn a_null_row_in_django_migrations_or_a_lock_held_by_a_prepared_transaction_never_panics_the_launcher()
 {
    crate::util::root_only!();
    let (mut pg, mut env, _) = deployment("pg_hostile_replies");
    env.launch();
    env.wait_ready(READY);
    env.stop();

    // What the app's role may do to its own table: a row without an app.
    pg.psql(
        DB,
        "ALTER TABLE django_migrations ALTER COLUMN app DROP NOT NULL; \
         INSERT INTO django_migrations (app, name, applied) VALUES (NULL, 'x', now())",
    );
    env.launch();
    let code = env.wait_exit_or_ready(READY);
    let log = env.log_context();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("django_migrations holds a row without app or name"),
        "the unreadable table is named as the reason migrate runs\n{log}"
    );
    if code.is_none() {
        env.stop();
    }
    pg.psql(DB, "DELETE FROM django_migrations WHERE app IS NULL");

    // The migration lock held by a prepared transaction: pg_locks shows no pid.
    pg.stop();
    pg.enable_prepared_transactions();
    pg.start_again();
    let key = launcher_plan::postgres::migration_lock_key(DB, "bitpoll.settings");
    pg.psql(
        DB,
        &format!("BEGIN; SELECT pg_advisory_xact_lock({key}); PREPARE TRANSACTION 'blt_holder'"),
    );
    env.launch();
    let status = env.wait_status("Waiting for another instance's migration", READY);
    assert!(
        status.contains("held by a prepared transaction"),
        "{status}"
    );
    pg.psql(DB, "ROLLBACK PREPARED 'blt_holder'");
    env.wait_ready(READY);
    assert!(
        !env.log_context().contains("panicked"),
        "{}",
        env.log_context()
    );
    assert_serves(&env);
    env.stop();
}

#[test]
fn tls_verify_full_connects_with_the_right_ca_and_fails_at_once_with_another() {
    crate::util::root_only!();
    let (mut pg, mut env, _) = deployment("pg_tls");
    let certs = env.dir.join("certs");
    make_certs(&certs);
    pg.stop();
    pg.enable_tls(&certs.join("server.pem"), &certs.join("server.key"));
    pg.start_again();
    env.config
        .set_str("database", "sslmode", "verify-full")
        .set_str(
            "database",
            "sslrootcert",
            &certs.join("ca.pem").display().to_string(),
        );
    env.launch();
    env.wait_ready(READY);
    assert_serves(&env);
    let log = pg.log();
    assert!(
        log.lines()
            .any(|l| l.contains("application_name=bitpoll-launcher") && l.contains("SSL enabled")),
        "the launcher's session is encrypted:\n{log}"
    );
    env.stop();

    env.config.set_str(
        "database",
        "sslrootcert",
        &certs.join("other-ca.pem").display().to_string(),
    );
    env.launch();
    env.expect_failure(3, &["TLS handshake", "database.sslrootcert"], READY);
    assert!(
        !env.statuses()
            .iter()
            .any(|s| s.starts_with("Waiting for PostgreSQL"))
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it (owned by postgres, as the
/// server wants its key), and an unrelated CA.
fn make_certs(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let sh = format!(
        r#"set -e; cd {d}
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other-ca.key -out other-ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
printf 'subjectAltName=IP:127.0.0.1\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.pem
chmod 0644 ca.pem other-ca.pem; chmod 0600 server.key; chown postgres server.key server.pem"#,
        d = dir.display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(sh)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes (host PIDs) in the PID namespace of host PID `pid`, with their state and
/// command line.
fn namespace_processes(pid: u32) -> Vec<(u32, char, u32, String)> {
    let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).expect("the namespace");
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap().chars().next().unwrap();
        let ppid = f.next().unwrap().parse().unwrap();
        let cmd =
            String::from_utf8_lossy(&fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default())
                .replace('\0', " ");
        out.push((p, state, ppid, cmd));
    }
    out
}

/// The launcher under `unshare --fork`: the only child of the unshare process.
fn child_of(pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = util::children_of(pid).first() {
            return *c;
        }
        assert!(Instant::now() < deadline, "unshare started no child");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const AS_PID_1: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc"];

#[test]
fn as_pid_1_without_systemd_a_stop_ends_the_wait_for_the_database() {
    crate::util::root_only!();
    let (mut pg, mut env, _) = deployment("pg_pid1_stop");
    pg.stop();
    let unshare = env.launch_with(Launch::default().wrap(AS_PID_1).notify(NotifyKind::None));
    let launcher = child_of(unshare);
    env.wait_for_log("Waiting for PostgreSQL at", READY);
    assert!(
        env.stderr().contains("running as PID 1"),
        "{}",
        env.log_context()
    );
    // The kernel drops a signal to a namespace's init that has no handler for it: this
    // one is handled.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(launcher as i32), Signal::SIGTERM).unwrap();
    env.expect_failure(
        128 + 15,
        &["stopped by signal 15 (SIGTERM) while waiting for PostgreSQL"],
        Duration::from_secs(20),
    );
}

#[test]
fn as_pid_1_without_systemd_it_reaps_orphans_serves_and_stops_on_sigterm() {
    crate::util::root_only!();
    let (pg, mut env, _) = deployment("pg_pid1");
    // Orphans of the preparation: one ends while the launcher prepares, one after the
    // server took over PID 1.
    env.config
        .set_str("environment", "DEMO_MIGRATION_ORPHANS", "1,6")
        .set_str("environment", "DEMO_MIGRATION_DELAY", "3");
    let unshare = env.launch_with(Launch::default().wrap(AS_PID_1).notify(NotifyKind::None));
    let pid1 = child_of(unshare);
    until(READY, "HTTP 200", || {
        (std::net::TcpStream::connect(("127.0.0.1", env.port)).is_ok()
            && env.http_get("/").status == 200)
            .then_some(())
    });
    assert!(
        env.stderr().contains("running as PID 1"),
        "{}",
        env.log_context()
    );
    // The first orphan ended during the migration: the launcher reaped it.
    assert!(
        env.stderr().contains("reaped exited orphan process"),
        "{}",
        env.log_context()
    );
    // The second orphan was handed to PID 1, which is the server now.
    let procs = namespace_processes(pid1);
    assert!(
        procs
            .iter()
            .any(|(_, _, ppid, cmd)| *ppid == pid1 && cmd.starts_with("sleep 6")),
        "no orphan of PID 1: {procs:?}"
    );
    // Until it ends and a bit after, nothing in the namespace is a zombie.
    let deadline = Instant::now() + Duration::from_secs(9);
    while Instant::now() < deadline {
        let procs = namespace_processes(pid1);
        let zombies: Vec<_> = procs.iter().filter(|p| p.1 == 'Z').collect();
        assert!(zombies.is_empty(), "zombies: {zombies:?}\nall: {procs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !namespace_processes(pid1)
            .iter()
            .any(|(_, _, _, cmd)| cmd.starts_with("sleep")),
        "the orphans ended"
    );
    assert_serves(&env);
    assert_eq!(pg.assert_applied_once(DB), MIGRATIONS);
    // gunicorn, as PID 1, stops on SIGTERM.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1 as i32), Signal::SIGTERM).unwrap();
    assert_eq!(
        env.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        env.log_context()
    );
}

#[test]
fn a_unix_socket_with_peer_authentication_admits_the_launcher_as_the_service_user() {
    crate::util::root_only!();
    // The usual local setup (NixOS's ensureDBOwnership): no password, the role named like
    // the user the app runs as. The launcher, root, connects with that user's ids.
    let (pg, mut env, _) = deployment("pg_peer");
    pg.create_database(&env.user, None, "peerdb");
    env.config
        .set_str("database", "name", "peerdb")
        .set_str("database", "host", &pg.socket_dir().display().to_string())
        .remove("database", "user")
        .remove("secrets", "BITPOLL_DB_PASSWORD");
    env.launch();
    env.wait_ready(READY);
    assert_serves(&env);
    assert!(
        env.stderr().contains(&format!(
            "connected to PostgreSQL (role {} at {}:{}, database peerdb)",
            env.user,
            pg.socket_dir().display(),
            pg.port
        )),
        "{}",
        env.log_context()
    );
    let log = pg.log();
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "connection authorized: user={} database=peerdb application_name=bitpoll-launcher",
            env.user
        ))),
        "the launcher logged in as the service user:\n{log}"
    );
    assert_eq!(pg.assert_applied_once("peerdb"), MIGRATIONS);
}
