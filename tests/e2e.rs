//! End-to-end tests of `bitpoll-launcher run`: the real binary, run as root, creating a
//! real service user, preparing and serving the demo Django app (tests/demo-app) from the
//! venv made by tests/setup-venv.sh, with a NOTIFY_SOCKET the test listens on.
//!
//! They need root and run one at a time (each test takes a global lock; useradd is not
//! safe to run concurrently):
//!
//!     cargo test --test suite e2e:: -- --test-threads=1
//!
//! Every test removes the users, groups, processes and files it made, also when it fails.

use crate::util;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use util::{
    Ids, Launch, NO_CAPS, NotifyKind, TestEnv, children_of, contains, fernet_key, file_secret,
    getent, holds_socket, listening_socket_inode, owner_mode, proc_cmdline, proc_environ_names,
    proc_status, processes_in_group, sha256_hex, status_fields, toml_str, write_file,
};

/// Time from launch to READY=1: Django starts in well under a second here, but the first
/// start after the venv was built compiles bytecode.
const READY: Duration = Duration::from_secs(60);
/// Time for a launch that is expected to fail before preparation.
const FAIL_FAST: Duration = Duration::from_secs(30);
const STEPS: [&str; 3] = ["migrate", "collectstatic", "compilemessages"];

/// Every preparation step's log line says `step <step> <phrase>`.
fn assert_every_step(log: &str, phrase: &str, why: &str) {
    for step in STEPS {
        assert!(
            log.contains(&format!("step {step} {phrase}")),
            "{step} {why}\n{log}"
        );
    }
}

/// The first id of the login.defs range for regular accounts (system ones are below).
fn login_defs_min(key: &str) -> u32 {
    fs::read_to_string("/etc/login.defs")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(key))
                    .then(|| f.next().and_then(|v| v.parse().ok()))
                    .flatten()
            })
        })
        .unwrap_or(1000)
}

/// /proc/PID/status shows a process that runs as the service user and can never regain
/// privilege. `bounding`: also require an empty bounding set (only a root launcher can
/// empty it).
fn assert_unprivileged(pid: u32, ids: &Ids, bounding: bool, what: &str) {
    let st = proc_status(pid);
    let uid = ids.uid.to_string();
    let gid = ids.gid.to_string();
    assert_eq!(
        status_fields(&st, "Uid"),
        vec![uid.as_str(); 4],
        "{what} (pid {pid}): Uid real/effective/saved/fs"
    );
    assert_eq!(
        status_fields(&st, "Gid"),
        vec![gid.as_str(); 4],
        "{what} (pid {pid}): Gid real/effective/saved/fs"
    );
    let mut groups: Vec<u32> = status_fields(&st, "Groups")
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    assert_eq!(
        groups, ids.groups,
        "{what} (pid {pid}): supplementary groups are the user's"
    );
    let mut sets = vec!["CapInh", "CapPrm", "CapEff", "CapAmb"];
    if bounding {
        sets.push("CapBnd");
    }
    for set in sets {
        assert_eq!(st[set], NO_CAPS, "{what} (pid {pid}): {set}");
    }
    assert_eq!(st["NoNewPrivs"], "1", "{what} (pid {pid}): NoNewPrivs");
}

/// Every file and directory below `dir` (and `dir` itself) is owned by `uid`.
fn assert_tree_owned_by(dir: &Path, uid: u32) {
    let m = fs::symlink_metadata(dir).unwrap();
    assert_eq!(
        m.uid(),
        uid,
        "{} is owned by uid {}",
        dir.display(),
        m.uid()
    );
    if m.is_dir() {
        for e in fs::read_dir(dir).unwrap() {
            assert_tree_owned_by(&e.unwrap().path(), uid);
        }
    }
}

fn statuses(env: &TestEnv) -> Vec<String> {
    env.notifications
        .iter()
        .filter_map(|n| n.get("STATUS").map(str::to_string))
        .collect()
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------
// Happy path and invariants
// ---------------------------------------------------------------------------------------

#[test]
fn serves_the_demo_app_as_the_service_user_without_privileges() {
    crate::util::root_only!();
    let mut env = TestEnv::new("serves");
    assert!(!env.user_exists());
    let pid = env.launch();
    let ready = env.wait_ready(READY);
    let ids = env.ids().expect("the launcher created the service user");

    // exec kept the PID: the process that said READY=1 is the one we started, now gunicorn,
    // and it speaks as the service user.
    assert_eq!(ready.pid, pid as i32, "READY=1 sender");
    assert_eq!(ready.uid, ids.uid, "READY=1 was sent as the service user");
    let cmdline = String::from_utf8_lossy(&proc_cmdline(pid)).replace('\0', " ");
    assert!(
        cmdline.contains("gunicorn"),
        "pid {pid} is not gunicorn: {cmdline}"
    );
    let inode = listening_socket_inode(env.port).expect("nothing listens on the port");
    assert!(
        holds_socket(pid, inode),
        "the launched pid {pid} does not hold the listening socket"
    );

    let home = env.http_get("/");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(
        home.body.contains("Willkommen"),
        "German translation missing (compilemessages?): {}",
        home.body
    );
    let health = env.http_get("/healthz");
    assert_eq!((health.status, health.body.trim()), (200, "ok"));

    let who = env.whoami();
    assert_eq!(who.uid, ids.uid);
    assert_eq!(who.gid, ids.gid);
    let mut groups = who.groups.clone();
    groups.sort_unstable();
    assert_eq!(groups, ids.groups);
    let worker = who.pid;
    assert_eq!(who.ppid, pid, "the worker is a child of the launched pid");
    assert_ne!(worker, pid);
    assert_unprivileged(pid, &ids, true, "gunicorn master");
    assert_unprivileged(worker, &ids, true, "gunicorn worker");

    // The data directory tree.
    let (u, g) = (ids.uid, ids.gid);
    assert_eq!(owner_mode(&env.data), (u, g, 0o750), "data dir");
    for d in ["static", "media", "state"] {
        assert_eq!(owner_mode(&env.data.join(d)), (u, g, 0o750), "{d}/");
    }
    assert_eq!(
        owner_mode(&env.data.join("secrets")),
        (u, g, 0o700),
        "secrets/"
    );
    for s in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        assert_eq!(
            owner_mode(&env.data.join("secrets").join(s)),
            (u, g, 0o600),
            "secrets/{s}"
        );
    }
    let db = env.data.join("db.sqlite3");
    assert_eq!(
        fs::metadata(&db)
            .map(|m| (m.uid(), m.gid()))
            .expect("db.sqlite3"),
        (u, g),
        "db.sqlite3"
    );
    assert!(
        env.data.join("static/current/staticfiles.json").is_file(),
        "collectstatic wrote no manifest"
    );
    assert_tree_owned_by(&env.data.join("static"), u);
    for step in STEPS {
        assert_eq!(owner_mode(&env.stamp(step)), (u, g, 0o600), "{step} stamp");
    }
    let mo = env.data.join("locale/de_DE/LC_MESSAGES/django.mo");
    assert_eq!(
        fs::metadata(&mo)
            .expect("django.mo in the data directory")
            .uid(),
        u,
        "compilemessages did not run as the service user"
    );
    assert!(
        !env.app.join("locale/de_DE/LC_MESSAGES/django.mo").exists(),
        "compilemessages wrote into the app source"
    );

    // A system account, home = data_dir, no login shell.
    let pw = getent("passwd", &env.user).expect("getent passwd");
    assert_eq!(pw[2].parse::<u32>().unwrap(), u);
    assert!(u < login_defs_min("UID_MIN"), "uid {u} is not a system uid");
    assert_eq!(pw[5], env.data.display().to_string(), "home");
    assert!(
        pw[6].ends_with("/nologin") || pw[6] == "/bin/false",
        "login shell {}",
        pw[6]
    );
    let gr = getent("group", env.group()).expect("getent group");
    assert_eq!(gr[2].parse::<u32>().unwrap(), g);
    assert!(g < login_defs_min("GID_MIN"), "gid {g} is not a system gid");

    assert_eq!(
        env.stop(),
        0,
        "gunicorn stops cleanly on SIGTERM\n{}",
        env.log_context()
    );
}

#[test]
fn notify_reports_status_for_every_phase() {
    crate::util::root_only!();
    let mut env = TestEnv::new("notify");
    let pid = env.launch();
    let ready = env.wait_ready(READY);
    let ids = env.ids().unwrap();
    let all = env.notifications.clone();
    let position = |prefix: &str| {
        all.iter()
            .position(|n| n.get("STATUS").is_some_and(|s| s.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no STATUS={prefix}...; got {:?}", statuses(&env)))
    };
    let phases = [
        "Reading configuration",
        "Checking the service account",
        "Preparing the data directory",
        "Loading secrets",
        "Preparing the app",
        "Preparing: ",
        "Dropping privileges",
        "Starting the server",
    ];
    let at: Vec<usize> = phases.iter().map(|p| position(p)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "phases out of order: {:?}",
        statuses(&env)
    );
    // Each step is named with its number while it runs (migrate beside the others), all
    // between the start of preparation and the privilege drop.
    for (n, step) in STEPS.iter().enumerate() {
        let named = format!("{step} ({}/3)", n + 1);
        let i = all
            .iter()
            .position(|m| {
                m.get("STATUS")
                    .is_some_and(|s| s.starts_with("Preparing: ") && s.contains(&named))
            })
            .unwrap_or_else(|| panic!("no STATUS naming {named}: {:?}", statuses(&env)));
        assert!(
            (position("Preparing the app")..position("Dropping privileges")).contains(&i),
            "{named} outside preparation: {:?}",
            statuses(&env)
        );
    }

    let extend: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.get("EXTEND_TIMEOUT_USEC")
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|us| us > 0))
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        !extend.is_empty(),
        "no EXTEND_TIMEOUT_USEC during preparation: {all:?}"
    );
    let (prep, drop) = (
        position("Preparing the app"),
        position("Dropping privileges"),
    );
    assert!(
        extend.iter().all(|i| (prep..drop).contains(i)),
        "EXTEND_TIMEOUT_USEC outside preparation: {all:?}"
    );

    // READY=1 comes from gunicorn: after the exec, from the same PID, as the service user;
    // the launcher's own messages before the drop were sent as root.
    let ready_at = all
        .iter()
        .position(|n| n.text.lines().any(|l| l == "READY=1"))
        .unwrap();
    assert!(
        ready_at > position("Starting the server"),
        "READY=1 before the server started: {all:?}"
    );
    assert_eq!(ready.pid, pid as i32);
    assert_eq!(
        ready.uid, ids.uid,
        "READY=1 was not sent by the unprivileged server"
    );
    assert_eq!(
        all[position("Reading configuration")].uid,
        0,
        "the launcher starts as root"
    );
    assert!(
        all.iter().all(|n| n.pid == pid as i32),
        "a notification from another PID: {all:?}"
    );
    env.stop();
}

/// `[server] ready = "answer"`: every gunicorn worker calls the app once (GET
/// `ready_path`, with a Host from ALLOWED_HOSTS) before it accepts connections, and the
/// arbiter sends READY=1 once the first one has its answer, saying so in STATUS; every
/// notification comes from the main process, so NotifyAccess=main suffices. A warm-up
/// that fails is logged with its status, one without an answer within
/// `ready_timeout_sec` is left behind, and READY=1 comes all the same.
#[test]
fn ready_answer_comes_once_a_worker_answered_its_warm_up_request() {
    crate::util::root_only!();
    let mut env = TestEnv::new("ready_answer");
    env.config.set_str("server", "ready", "answer");
    let pid = env.launch();
    let ready = env.wait_ready(READY);
    let main = pid as i32;
    assert_eq!(ready.pid, main, "READY=1 from another process");
    let status = ready.get("STATUS").unwrap_or_default().to_string();
    assert!(
        status.starts_with("Gunicorn worker ") && status.contains(" answered GET / (200 OK in "),
        "{status}"
    );
    assert!(
        statuses(&env)
            .iter()
            .any(|s| s.starts_with("Warming up: gunicorn worker ") && s.ends_with(" calls GET /")),
        "{:?}",
        statuses(&env)
    );
    assert!(
        env.notifications.iter().all(|n| n.pid == main),
        "a notification from another process: {:?}",
        env.notifications
    );
    let log = env.stderr();
    assert!(
        log.contains("bitpoll-launcher warm-up: GET / answered 200 OK in "),
        "{log}"
    );
    assert_eq!(env.http_get("/").status, 200);
    assert_eq!(env.stop(), 0);

    // A warm-up answered with an error status: logged with it, READY=1 all the same.
    env.config.set_str("server", "ready_path", "/no-such-page");
    env.launch();
    let ready = env.wait_ready(READY);
    let status = ready.get("STATUS").unwrap_or_default().to_string();
    assert!(
        status.ends_with("started; its warm-up GET /no-such-page answered 404 Not Found"),
        "{status}"
    );
    assert!(
        env.stderr()
            .contains("bitpoll-launcher warm-up: GET /no-such-page answered 404 Not Found in "),
        "{}",
        env.log_context()
    );
    assert_eq!(env.http_get("/healthz").status, 200);
    assert_eq!(env.stop(), 0);

    // No answer within ready_timeout_sec: the worker goes on, READY=1 comes.
    env.config
        .set_str("server", "ready_path", "/slow?s=60")
        .set("server", "ready_timeout_sec", "2");
    env.launch();
    let ready = env.wait_ready(READY);
    let took = env.elapsed();
    let status = ready.get("STATUS").unwrap_or_default().to_string();
    assert!(
        status.ends_with("its warm-up GET /slow?s=60 had no answer within 2 s"),
        "{status}"
    );
    assert!(took < Duration::from_secs(40), "READY=1 after {took:?}");
    assert_eq!(env.http_get("/healthz").status, 200);
    env.stop();

    // With --preload the arbiter, which holds the app, calls it first, once, before it
    // forks the workers; each worker's own call then finds it loaded.
    env.config.remove("server", "ready_path");
    env.config.remove("server", "ready_timeout_sec");
    env.config.set(
        "server",
        "command",
        &format!(
            "[{}, \"--bind\", \"127.0.0.1:{}\", \"--workers\", \"2\", \"--no-control-socket\", \"--preload\", \"bitpoll.wsgi:application\"]",
            util::toml_str(&env.gunicorn.display().to_string()),
            env.port
        ),
    );
    let pid = env.launch();
    let ready = env.wait_ready(READY);
    assert_eq!(ready.pid, pid as i32);
    let status = ready.get("STATUS").unwrap_or_default().to_string();
    assert!(
        status.starts_with("Gunicorn worker ") && status.contains(" answered GET / (200 OK in "),
        "{status}"
    );
    let log = env.stderr();
    assert!(
        log.contains("answered 200 OK in ")
            && log.contains("(in the arbiter, before it forks its workers)"),
        "{log}"
    );
    assert!(
        statuses(&env)
            .iter()
            .any(|s| s == "Warming up: gunicorn's arbiter calls GET /"),
        "{:?}",
        statuses(&env)
    );
    assert_eq!(env.http_get("/").status, 200);
    assert_eq!(env.stop(), 0);
}

#[test]
fn abstract_notify_socket_works() {
    crate::util::root_only!();
    let mut env = TestEnv::new("abstract");
    let pid = env.launch_with(Launch::default().notify(NotifyKind::Abstract));
    let ready = env.wait_ready(READY);
    assert_eq!(ready.pid, pid as i32);
    assert!(
        statuses(&env).iter().any(|s| s == "Reading configuration"),
        "{:?}",
        statuses(&env)
    );
    assert!(
        env.notifications
            .iter()
            .any(|n| n.get("EXTEND_TIMEOUT_USEC").is_some())
    );
    assert_eq!(env.http_get("/healthz").status, 200);
    env.stop();
}

#[test]
fn second_start_skips_preparation_and_keeps_the_secret() {
    crate::util::root_only!();
    let mut env = TestEnv::new("second_start");
    env.config.set_str(
        "environment",
        "DEMO_REPORT_ENV",
        "BITPOLL_SECRET_KEY,BITPOLL_FIELD_ENCRYPTION_KEY",
    );
    env.launch();
    env.wait_ready(READY);
    let first_log = env.stderr();
    assert_every_step(&first_log, "runs", "did not run first");
    let who1 = env.whoami();
    let secrets = env.data.join("secrets");
    let key1 = fs::read(secrets.join("BITPOLL_SECRET_KEY")).unwrap();
    let fek1 = fs::read(secrets.join("BITPOLL_FIELD_ENCRYPTION_KEY")).unwrap();
    assert_eq!(
        who1.env_sha256("BITPOLL_SECRET_KEY").as_deref(),
        Some(sha256_hex(&key1).as_str()),
        "the app's SECRET_KEY is the generated file's content"
    );
    env.stop();

    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert!(
        log.contains(&format!(
            "data directory {} ready (0 changes)",
            env.data.display()
        )),
        "the second start changed the data directory\n{log}"
    );
    assert_every_step(&log, "skipped", "was not skipped");
    assert!(
        !log.contains("preparation started"),
        "a preparation process ran\n{log}"
    );
    assert!(log.contains("generated earlier, kept in"), "{log}");
    let key2 = fs::read(secrets.join("BITPOLL_SECRET_KEY")).unwrap();
    let fek2 = fs::read(secrets.join("BITPOLL_FIELD_ENCRYPTION_KEY")).unwrap();
    assert!(
        key1 == key2,
        "BITPOLL_SECRET_KEY file changed between starts"
    );
    assert!(
        fek1 == fek2,
        "BITPOLL_FIELD_ENCRYPTION_KEY file changed between starts"
    );
    let who2 = env.whoami();
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        assert!(who2.env_sha256(name).is_some(), "{name} not set in the app");
        assert_eq!(
            who1.env_sha256(name),
            who2.env_sha256(name),
            "the app saw another {name}"
        );
    }
    assert_eq!(env.http_get("/").status, 200);
    env.stop();
}

#[test]
fn changed_source_or_environment_reruns_preparation() {
    crate::util::root_only!();
    let mut env = TestEnv::new("reruns");
    env.launch();
    env.wait_ready(READY);
    env.stop();

    // A changed source file (its mtime) re-runs every step.
    set_mtime(
        &env.app.join("bitpoll/poll/views.py"),
        SystemTime::now() - Duration::from_secs(3600),
    );
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert_every_step(
        &log,
        "runs: the app, interpreter, settings or environment changed",
        "did not re-run after a source change",
    );
    env.stop();

    // A changed [environment] value re-runs every step.
    env.config
        .set_str("environment", "BITPOLL_SITE_NAME", "Changed Bitpoll");
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert_every_step(
        &log,
        "runs: the app, interpreter, settings or environment changed",
        "did not re-run after an environment change",
    );
    env.stop();

    // A deleted database re-runs migrate only.
    fs::remove_file(env.data.join("db.sqlite3")).unwrap();
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert!(
        log.contains("step migrate runs: its output changed"),
        "migrate did not re-run for a new database\n{log}"
    );
    assert!(log.contains("step collectstatic skipped"), "{log}");
    assert!(log.contains("step compilemessages skipped"), "{log}");
    assert!(env.data.join("db.sqlite3").is_file());
    assert_eq!(
        env.http_get("/").status,
        200,
        "the recreated database is not migrated"
    );
    env.stop();
}

#[test]
fn a_failing_migration_stops_the_launch_with_the_step_name_exit_status_and_output_tail() {
    crate::util::root_only!();
    let mut env = TestEnv::new("failing_migration");
    write_file(
        &env.app.join("bitpoll/poll/migrations/0003_boom.py"),
        b"from django.db import migrations\n\n\ndef boom(apps, schema_editor):\n    raise RuntimeError(\"boom\")\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"poll\", \"0002_demo_delay\")]\n    operations = [migrations.RunPython(boom, migrations.RunPython.noop)]\n",
        0o644,
    );
    env.launch();
    let stderr = env.expect_failure(
        1,
        &["preparation step migrate failed (exit status 3)"],
        READY,
    );
    let error = &stderr[stderr.find("preparation step migrate failed").unwrap()..];
    assert!(
        error.contains("RuntimeError: boom"),
        "the error lacks the output tail\n{stderr}"
    );
    // collectstatic and compilemessages run beside migrate: a stamp for each that
    // finished before the failure, none for the rest.
    assert!(
        !env.stamp("migrate").exists(),
        "migrate stamp written although it failed"
    );
    // The database it was building is gone: the next start builds it from nothing.
    assert!(
        !env.data.join("db.sqlite3").exists(),
        "a half-built database is in place"
    );
    assert_eq!(new_database_leftovers(&env), Vec::<String>::new());
    for step in ["collectstatic", "compilemessages"] {
        assert_eq!(
            env.stamp(step).exists(),
            stderr.contains(&format!("step {step} finished")),
            "{step}: a stamp without its success, or a success without its stamp\n{stderr}"
        );
    }
    assert!(!env.notifications.iter().any(|n| n.text.contains("READY=1")));
    assert!(
        listening_socket_inode(env.port).is_none(),
        "a server was started"
    );
}

/// Files in the data directory left of a database built under a temporary name.
fn new_database_leftovers(env: &TestEnv) -> Vec<String> {
    fs::read_dir(&env.data)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("db.sqlite3.new-"))
                .collect()
        })
        .unwrap_or_default()
}

/// collectstatic and compilemessages run beside migrate, in processes forked from the one
/// Django start: with a slow migration both finish first, each with its own stamp, every
/// output line is logged with its own step, and the start has all three effects.
#[test]
fn collectstatic_and_compilemessages_run_beside_migrate_each_with_its_own_stamp() {
    crate::util::root_only!();
    let mut env = TestEnv::new("side_by_side");
    env.config
        .set_str("environment", "DEMO_MIGRATION_DELAY", "3");
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the log\n{}", env.log_context()))
    };
    assert!(
        log.contains("(migrate | collectstatic, compilemessages side by side)"),
        "{}",
        env.log_context()
    );
    assert_eq!(log.matches("Django started in").count(), 1, "{log}");
    for step in ["collectstatic", "compilemessages"] {
        let done = at(&format!("step {step} finished"));
        assert!(
            at("step migrate started") < done && done < at("step migrate finished"),
            "{step} did not run while migrate ran\n{log}"
        );
    }
    let logged_with = |text: &str, step: &str| {
        log.lines()
            .any(|l| l.contains(text) && l.contains(&format!(" step={step} ")))
    };
    assert!(
        logged_with("demo migration: step 3 of 3", "migrate"),
        "{log}"
    );
    // The new database was built under a temporary name and moved into place.
    assert!(
        logged_with("new database: built as db.sqlite3.new-", "migrate"),
        "{log}"
    );
    assert!(new_database_leftovers(&env).is_empty());
    assert!(logged_with("now serves v-", "collectstatic"), "{log}");
    assert!(
        logged_with("catalog(s) compiled", "compilemessages"),
        "{log}"
    );
    assert!(
        statuses(&env)
            .iter()
            .any(|s| s.contains("migrate (1/3)") && s.contains("collectstatic (2/3)")),
        "no STATUS names the two running steps: {:?}",
        statuses(&env)
    );
    for step in STEPS {
        assert!(env.stamp(step).exists(), "no {step} stamp\n{log}");
    }
    // The three effects: a migrated database, the collected files, the catalogs.
    let r = env.http_get("/");
    assert_eq!(r.status, 200, "{}", env.log_context());
    assert!(env.data.join("static/current/staticfiles.json").is_file());
    assert!(
        env.data
            .join("locale/de_DE/LC_MESSAGES/django.mo")
            .is_file()
    );
    assert!(!log.contains("protocol violation"), "{log}");
    env.stop();
}

/// A step that fails beside another stops it: the error names the failed step with its
/// exit status and output, and the step stopped with it; neither gets a stamp, nor does
/// the step that never began; nothing of the preparation is left running.
#[test]
fn a_failing_collectstatic_stops_the_migration_beside_it_and_names_its_step() {
    crate::util::root_only!();
    let mut env = TestEnv::new("side_by_side_fail");
    env.config
        .set_str("environment", "DEMO_MIGRATION_DELAY", "30")
        .set_str("environment", "DEMO_COLLECTSTATIC_FAIL", "1");
    env.launch();
    let stderr = env.expect_failure(
        1,
        &[
            "preparation step collectstatic failed (exit status 3); migrate ran beside it and was stopped before it finished",
            "RuntimeError: demo collectstatic failed on purpose",
        ],
        READY,
    );
    assert!(
        env.elapsed() < Duration::from_secs(20),
        "the failure waited for the migration: {:?}",
        env.elapsed()
    );
    for step in STEPS {
        assert!(!env.stamp(step).exists(), "{step} stamp written\n{stderr}");
    }
    assert!(!stderr.contains("step compilemessages started"), "{stderr}");
    let error = &stderr[stderr
        .find("preparation step collectstatic failed")
        .unwrap()..];
    assert!(
        !error.contains("demo migration: step"),
        "the error's output tail is not the failed step's\n{stderr}"
    );
    let left = env.processes_of_user();
    assert!(
        left.is_empty(),
        "processes of the service user remain:\n{}",
        util::describe_processes(&left)
    );
    assert!(!env.notifications.iter().any(|n| n.text.contains("READY=1")));
}

/// A stop while collectstatic fills a fresh tree leaves `current` on the tree it served,
/// whole; the interrupted step gets no stamp, and the next start collects again.
#[test]
fn a_stop_in_the_middle_of_collectstatic_leaves_the_previous_static_tree_in_place() {
    crate::util::root_only!();
    let mut env = TestEnv::new("static_stop");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let current = env.data.join("static/current");
    let served = fs::read_link(&current).expect("static/current is a link");
    let manifest = fs::read(current.join("staticfiles.json")).expect("a manifest");

    // A changed environment makes every step run again; collectstatic then takes 30 s.
    env.config
        .set_str("environment", "DEMO_COLLECTSTATIC_DELAY", "30");
    let pid = env.launch();
    env.wait_for_log("demo collectstatic: step 2 of 30", READY);
    env.signal(Signal::SIGTERM);
    let code = env.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 143, "{}", env.log_context());
    let log = env.stderr();
    assert!(
        log.contains("(SIGTERM) during preparation step collectstatic")
            || log.contains("(SIGTERM) during preparation steps migrate and collectstatic"),
        "{log}"
    );
    assert_eq!(
        fs::read_link(&current).unwrap(),
        served,
        "current moved to an unfinished tree\n{log}"
    );
    assert_eq!(
        fs::read(current.join("staticfiles.json")).unwrap(),
        manifest
    );
    assert!(current.join("css").is_dir());
    assert!(!env.stamp("collectstatic").exists(), "{log}");
    assert!(processes_in_group(pid as i32).is_empty());
    let left = env.processes_of_user();
    assert!(left.is_empty(), "{}", util::describe_processes(&left));

    // The next start collects into a fresh tree and serves it.
    env.config.remove("environment", "DEMO_COLLECTSTATIC_DELAY");
    env.launch();
    env.wait_ready(READY);
    assert!(
        env.stderr().contains("step collectstatic runs"),
        "{}",
        env.log_context()
    );
    let now = fs::read_link(&current).unwrap();
    assert_ne!(now, served);
    assert!(current.join("staticfiles.json").is_file());
    assert!(env.stamp("collectstatic").exists());
    env.stop();
}

/// Launch with a slow migration, send `signal` to the launcher while migrate runs, and
/// check what every stop signal must do: the preparation process is stopped and reaped
/// within the grace period, the launcher dies of the same signal (128+N), says why, and
/// writes no stamp. Returns the env and the launcher's exit status.
fn a_stop_signal_during_preparation(
    name: &str,
    signal: Signal,
    launch: Launch,
) -> (TestEnv, std::process::ExitStatus) {
    let mut env = TestEnv::new(name);
    env.config
        .set_str("environment", "DEMO_MIGRATION_DELAY", "30");
    let pid = env.launch_with(launch);
    env.wait_for_log("demo migration: step", READY);
    let drivers = children_of(pid);
    assert!(
        !drivers.is_empty(),
        "no preparation process under the launcher"
    );

    let sent = Instant::now();
    env.signal(signal);
    let status = loop {
        if let Some(status) = env.try_wait() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the launcher still runs 20 s after {signal}\n{}",
            env.log_context()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sent.elapsed();
    let code = env.wait_exit(Duration::ZERO);
    assert_eq!(
        code,
        128 + signal as i32,
        "exit code after {signal}\n{}",
        env.log_context()
    );
    assert!(took < Duration::from_secs(6), "took {took:?} to stop");
    let why = format!(
        "stopped by signal {} ({signal}) during preparation step migrate",
        signal as i32
    );
    assert!(env.stderr().contains(&why), "{}", env.log_context());
    let left = processes_in_group(pid as i32);
    assert!(
        left.is_empty(),
        "processes of the launch remain:\n{}",
        util::describe_processes(&left)
    );
    let left = env.processes_of_user();
    assert!(
        left.is_empty(),
        "processes of the service user remain:\n{}",
        util::describe_processes(&left)
    );
    for d in drivers {
        assert!(
            !Path::new(&format!("/proc/{d}")).exists(),
            "preparation process {d} still exists"
        );
    }
    assert!(
        !env.stamp("migrate").exists(),
        "migrate stamp written for an interrupted migration"
    );
    // collectstatic ran beside migrate: its stamp only if it finished.
    assert_eq!(
        env.stamp("collectstatic").exists(),
        env.stderr().contains("step collectstatic finished"),
        "{}",
        env.log_context()
    );
    assert!(
        statuses(&env).iter().any(|s| s.starts_with("Stopping")),
        "{:?}",
        statuses(&env)
    );
    (env, status)
}

#[test]
fn sigterm_during_preparation_stops_the_child_and_writes_no_stamp() {
    crate::util::root_only!();
    let (mut env, _) =
        a_stop_signal_during_preparation("sigterm", Signal::SIGTERM, Launch::default());
    // The first migrate was building a new database: nothing of it is in place.
    assert!(
        !env.data.join("db.sqlite3").exists(),
        "{}",
        env.log_context()
    );
    assert_eq!(new_database_leftovers(&env), Vec::<String>::new());
    // What a killed build would leave (the driver killed with SIGKILL) goes at the next.
    write_file(&env.data.join("db.sqlite3.new-4242"), b"half built", 0o640);

    // The interrupted step runs again next time.
    env.config.remove("environment", "DEMO_MIGRATION_DELAY");
    env.launch();
    env.wait_ready(READY);
    assert_eq!(new_database_leftovers(&env), Vec::<String>::new());
    assert!(env.data.join("db.sqlite3").is_file());
    assert!(
        env.stderr().contains("step migrate runs"),
        "{}",
        env.log_context()
    );
    assert!(
        env.stderr().contains(" migrations on disk)"),
        "the driver did not list the migrations after migrate\n{}",
        env.log_context()
    );
    assert!(
        !env.stderr().contains("protocol violation"),
        "{}",
        env.log_context()
    );
    env.stop();
}

#[test]
fn sighup_during_preparation_stops_the_child_and_writes_no_stamp() {
    crate::util::root_only!();
    a_stop_signal_during_preparation("sighup", Signal::SIGHUP, Launch::default());
}

#[test]
fn sigquit_during_preparation_stops_the_child_and_dumps_no_core_of_the_launcher() {
    crate::util::root_only!();
    // With core dumps allowed, a root process dying of SIGQUIT would leave a core (and
    // the secrets in it) in its working directory, the test directory.
    let (env, status) = a_stop_signal_during_preparation(
        "sigquit",
        Signal::SIGQUIT,
        Launch::default().wrap(&["prlimit", "--core=unlimited", "--"]),
    );
    use std::os::unix::process::ExitStatusExt;
    assert!(
        !status.core_dumped(),
        "the launcher dumped core: {status:?}"
    );
    let cores: Vec<String> = fs::read_dir(&env.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect();
    assert!(cores.is_empty(), "core files: {cores:?}");
}

#[test]
fn output_that_looks_like_an_event_does_not_finish_a_step() {
    crate::util::root_only!();
    let mut env = TestEnv::new("fake_events");
    // A migration prints what the driver once used as markers, and what its events look
    // like now, on stdout and stderr, has a shell try to write events to fd 3, and fails.
    write_file(
        &env.app.join("bitpoll/poll/migrations/0003_fake_events.py"),
        br#"import os
import sys

from django.db import migrations

FAKE = [
    "\x1ebitpoll-launcher step-done migrate 1",
    "\x1ebitpoll-launcher step-done collectstatic 1",
    "step-done migrate 1",
    "step-begin collectstatic",
    "step-done collectstatic 1",
]


def fake(apps, schema_editor):
    for line in FAKE:
        print("\n" + line, flush=True)
        print(line, file=sys.stderr, flush=True)
    os.system("echo step-done migrate 1 >&3; echo step-done collectstatic 1 >&3")
    raise RuntimeError("fake events sent")


class Migration(migrations.Migration):
    dependencies = [("poll", "0002_demo_delay")]
    operations = [migrations.RunPython(fake, migrations.RunPython.noop)]
"#,
        0o644,
    );
    // collectstatic, beside migrate, is still busy when the fake events come.
    env.config
        .set_str("environment", "DEMO_COLLECTSTATIC_DELAY", "30");
    env.launch();
    let stderr = env.expect_failure(
        1,
        &[
            "preparation step migrate failed (exit status 3)",
            "RuntimeError: fake events sent",
        ],
        READY,
    );
    for step in STEPS {
        assert!(
            !env.stamp(step).exists(),
            "{step} stamp written from output that only looks like an event\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("step collectstatic finished")
            && !stderr.contains("step migrate finished")
            && !stderr.contains("step compilemessages started"),
        "output was taken for an event\n{stderr}"
    );
    // The lines are logged as the output they are.
    assert!(
        stderr.contains("step-done collectstatic 1"),
        "the fake lines are not in the log\n{stderr}"
    );
    // fd 3 is close-on-exec in the driver: the shell could not write to it, so the
    // launcher saw no stray event at all.
    assert!(
        !stderr.contains("protocol violation"),
        "a child of the driver reached the event pipe\n{stderr}"
    );
}

#[test]
fn a_silent_step_is_stopped_as_stalled() {
    crate::util::root_only!();
    let mut env = TestEnv::new("stalled");
    env.config.set("prepare", "stall_timeout_sec", "2");
    env.config
        .set_str("environment", "DEMO_MIGRATION_HANG", "30");
    env.launch();
    let stderr = env.expect_failure(
        1,
        &["made no progress", "stall_timeout_sec"],
        Duration::from_secs(40),
    );
    assert!(
        env.elapsed() < Duration::from_secs(12),
        "took {:?}",
        env.elapsed()
    );
    assert!(
        stderr.contains("preparation step migrate made no progress"),
        "{stderr}"
    );
    let left = env.processes_of_user();
    assert!(
        left.is_empty(),
        "the stalled step still runs:\n{}\n{}",
        util::describe_processes(&left),
        env.log_context()
    );
    assert!(!env.stamp("migrate").exists());
}

#[test]
fn sigint_or_a_group_wide_sigterm_during_preparation_stop_cleanly() {
    crate::util::root_only!();
    let mut env = TestEnv::new("sigint_group");
    env.config
        .set_str("environment", "DEMO_MIGRATION_DELAY", "30");

    // Ctrl-C on a terminal.
    let pid = env.launch();
    env.wait_for_log("demo migration: step", READY);
    env.signal(Signal::SIGINT);
    let code = env.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 130, "exit code after SIGINT\n{}", env.log_context());
    assert!(
        env.stderr()
            .contains("stopped by signal 2 (SIGINT) during preparation step migrate"),
        "{}",
        env.log_context()
    );
    assert!(processes_in_group(pid as i32).is_empty());
    assert!(!env.stamp("migrate").exists());

    // systemd's stop: SIGTERM to every process of the unit at once, the preparation
    // process included.
    let pid = env.launch();
    env.wait_for_log("demo migration: step", READY);
    let sent = Instant::now();
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let code = env.wait_exit(Duration::from_secs(20));
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "took {:?}",
        sent.elapsed()
    );
    assert_ne!(code, 0, "{}", env.log_context());
    assert!(
        env.stderr().contains("signal 15"),
        "the stop is not explained\n{}",
        env.log_context()
    );
    let left = env.processes_of_user();
    assert!(left.is_empty(), "{}", util::describe_processes(&left));
    assert!(!env.stamp("migrate").exists());
}

#[test]
fn a_broken_settings_module_fails_before_the_first_step() {
    crate::util::root_only!();
    let mut env = TestEnv::new("broken_settings");
    env.config
        .set_str("app", "settings_module", "bitpoll.no_such_settings");
    env.launch();
    env.expect_failure(
        1,
        &[
            "Django could not start before the first preparation step (exit status 3)",
            "No module named 'bitpoll.no_such_settings'",
        ],
        READY,
    );
    for step in STEPS {
        assert!(!env.stamp(step).exists());
    }
}

// ---------------------------------------------------------------------------------------
// Bad input: each refused with its own message and exit code, nothing lost or changed
// ---------------------------------------------------------------------------------------

#[test]
fn config_errors_are_all_reported_at_once_with_did_you_mean_and_nothing_is_created() {
    crate::util::root_only!();
    let mut env = TestEnv::new("config_errors");
    env.raw_config = Some(format!(
        "[service]\nuser = {}\ndata_dir = {}\ncreate_usr = true\n\n[app]\npython = {}\nsource_dir = {}\n\n\
         [prepare]\nmigrat = false\nstall_timeout_sec = 0\n\n[secrets]\nBITPOLL_SECRET_KEY = {{ generate = \"django-secret-key\" }}\n\n\
         [server]\ncommand = [{}]\n",
        toml_str(&env.user),
        toml_str(&env.data.display().to_string()),
        toml_str(util::PYTHON),
        toml_str(&env.app.display().to_string()),
        toml_str(util::GUNICORN),
    ));
    env.launch();
    env.expect_failure(
        2,
        &[
            "4 problems",
            "service.create_usr: unknown key (did you mean `create_user`?)",
            "prepare.migrat: unknown key (did you mean `migrate`?)",
            "prepare.stall_timeout_sec: 0 is out of range",
            "secrets.BITPOLL_FIELD_ENCRYPTION_KEY: is missing",
        ],
        FAIL_FAST,
    );
    env.assert_nothing_created();

    env.raw_config = Some("[service\nuser = 1\n".into());
    env.launch();
    env.expect_failure(2, &["invalid TOML"], FAIL_FAST);
    env.assert_nothing_created();

    let missing = env.dir.join("no-such-config.toml");
    env.launch_with(Launch::default().config(&missing));
    env.expect_failure(
        2,
        &["cannot read config file", "no-such-config.toml"],
        FAIL_FAST,
    );
    env.assert_nothing_created();
}

#[test]
fn a_config_someone_else_could_change_or_a_fifo_is_refused_before_anything_is_done() {
    crate::util::root_only!();
    let mut env = TestEnv::new("config_trust");
    env.write_config();
    let text = fs::read(env.config_path()).unwrap();

    // In a directory another user owns, the file could be swapped under root's feet.
    let theirs = env.dir.join("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let config = theirs.join("launcher.toml");
    write_file(&config, &text, 0o644);
    env.launch_with(Launch::default().config(&config));
    env.expect_failure(
        2,
        &[
            "cannot read config file",
            &format!("directory {} is owned by uid 65534", theirs.display()),
            "move the file to a directory only root can change",
        ],
        FAIL_FAST,
    );
    env.assert_nothing_created();

    // A FIFO is refused at once: nobody ever writes to it, so a read would hang.
    let fifo = env.dir.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    env.launch_with(Launch::default().config(&fifo));
    env.expect_failure(
        2,
        &["is not a regular file (it is a FIFO (named pipe))"],
        FAIL_FAST,
    );
    env.assert_nothing_created();
}

#[test]
fn a_missing_user_with_create_user_false_must_be_declared_ahead() {
    crate::util::root_only!();
    let mut env = TestEnv::new("create_user_false");
    env.config.set("service", "create_user", "false");
    env.launch();
    env.expect_failure(
        3,
        &[
            "does not exist",
            "must be declared ahead",
            "users.users",
            "sysusers",
        ],
        FAIL_FAST,
    );
    env.assert_nothing_created();
}

#[test]
fn read_only_etc_explains_protect_system_and_how_to_declare_the_user() {
    crate::util::root_only!();
    let mut env = TestEnv::new("readonly_etc");
    env.launch_with(Launch::default().wrap(util::READ_ONLY_ETC));
    env.expect_failure(
        3,
        &[
            "/etc is read-only",
            "ProtectSystem",
            "sysusers",
            "users.users",
            "create_user = false",
        ],
        FAIL_FAST,
    );
    env.assert_nothing_created();
}

#[test]
fn a_data_dir_owned_by_another_user_is_refused_and_left_alone() {
    crate::util::root_only!();
    let mut env = TestEnv::new("foreign_data_dir");
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let (nu, ng) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    fs::create_dir(&env.data).unwrap();
    let precious = env.data.join("precious");
    write_file(&precious, b"belongs to nobody\n", 0o640);
    std::os::unix::fs::chown(&precious, Some(nu), Some(ng)).unwrap();
    std::os::unix::fs::chown(&env.data, Some(nu), Some(ng)).unwrap();
    fs::set_permissions(&env.data, fs::Permissions::from_mode(0o711)).unwrap();
    let before = fs::metadata(&precious).unwrap();

    env.launch();
    env.expect_failure(3, &["owned by nobody", "refusing"], FAIL_FAST);
    assert_eq!(
        owner_mode(&env.data),
        (nu, ng, 0o711),
        "the data dir was changed"
    );
    let entries: Vec<_> = fs::read_dir(&env.data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("precious")],
        "the data dir's contents changed"
    );
    let after = fs::metadata(&precious).unwrap();
    assert_eq!(owner_mode(&precious), (nu, ng, 0o640));
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec()),
        (before.ino(), before.mtime(), before.mtime_nsec())
    );
    assert_eq!(fs::read(&precious).unwrap(), b"belongs to nobody\n");
}

#[test]
fn a_symlink_planted_in_the_data_dir_is_refused_and_its_target_untouched() {
    crate::util::root_only!();
    let mut env = TestEnv::new("symlinks");
    let target_dir = env.dir.join("target-dir");
    fs::create_dir(&target_dir).unwrap();
    fs::set_permissions(&target_dir, fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&target_dir.join("keep"), b"keep me\n", 0o644);
    let target_file = env.dir.join("target-file");
    write_file(&target_file, b"not a secret nor a database\n", 0o644);

    // (what, link path relative to the data dir ("" = the data dir itself), target)
    let cases: [(&str, &str, &Path); 6] = [
        ("the data dir itself", "", &target_dir),
        ("static/", "static", &target_dir),
        ("secrets/", "secrets", &target_dir),
        ("state/", "state", &target_dir),
        (
            "a generated secret file",
            "secrets/BITPOLL_SECRET_KEY",
            &target_file,
        ),
        ("the database file", "db.sqlite3", &target_file),
    ];
    for (what, link, target) in cases {
        let _ = fs::remove_dir_all(&env.data);
        let _ = fs::remove_file(&env.data);
        let link_path = if link.is_empty() {
            env.data.clone()
        } else {
            env.data.join(link)
        };
        if !link.is_empty() {
            fs::create_dir_all(link_path.parent().unwrap()).unwrap();
        }
        std::os::unix::fs::symlink(target, &link_path).unwrap();
        env.launch();
        let stderr = env.expect_failure(3, &["symbolic link"], FAIL_FAST);
        assert!(
            stderr.contains(&link_path.display().to_string()),
            "{what}: the error does not name {}\n{stderr}",
            link_path.display()
        );
        assert_eq!(
            owner_mode(&target_dir),
            (0, 0, 0o755),
            "{what}: the link target dir was changed"
        );
        let names: Vec<_> = fs::read_dir(&target_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("keep")],
            "{what}: something was written through the link"
        );
        assert_eq!(
            owner_mode(&target_dir.join("keep")),
            (0, 0, 0o644),
            "{what}"
        );
        assert_eq!(
            owner_mode(&target_file),
            (0, 0, 0o644),
            "{what}: the link target file was changed"
        );
        assert_eq!(
            fs::read(&target_file).unwrap(),
            b"not a secret nor a database\n",
            "{what}"
        );
        assert!(
            fs::symlink_metadata(&link_path)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{what}: the link was replaced"
        );
    }
}

#[test]
fn secret_files_with_problems_are_refused_without_showing_their_content() {
    crate::util::root_only!();
    enum Content {
        Bytes(Vec<u8>, u32),
        Directory,
        Missing,
    }
    let marker = |case: &str| format!("S3CRET-MARKER-{case}-x9q");
    let cases: Vec<(&str, Content, &str)> = vec![
        (
            "world_readable",
            Content::Bytes(marker("world_readable").into_bytes(), 0o644),
            "is readable by every user",
        ),
        (
            "world_writable",
            Content::Bytes(marker("world_writable").into_bytes(), 0o602),
            "is writable by every user",
        ),
        ("empty", Content::Bytes(Vec::new(), 0o600), "is empty"),
        (
            "only_a_newline",
            Content::Bytes(b"\n".to_vec(), 0o600),
            "is empty",
        ),
        (
            "too_large",
            Content::Bytes(
                marker("too_large").repeat(64 * 1024 / 20 + 10).into_bytes(),
                0o600,
            ),
            "is larger than 65536 bytes",
        ),
        (
            "not_utf8",
            Content::Bytes(
                [b"\xff\xfe".as_slice(), marker("not_utf8").as_bytes()].concat(),
                0o600,
            ),
            "is not valid UTF-8",
        ),
        (
            "nul_byte",
            Content::Bytes(
                [marker("nul_byte").as_bytes(), b"\0", b"tail"].concat(),
                0o600,
            ),
            "contains a NUL byte",
        ),
        (
            "known_sample",
            Content::Bytes(
                b"this+is+an+example+key+please+generate+one+=\n".to_vec(),
                0o600,
            ),
            "is a publicly known sample value",
        ),
        ("directory", Content::Directory, "is not a regular file"),
        ("missing", Content::Missing, "does not exist"),
    ];
    let mut env = TestEnv::new("secret_files");
    let keys = env.dir.join("keys");
    fs::create_dir(&keys).unwrap();
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o700)).unwrap();
    let path = keys.join("fek");
    env.config.set(
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY",
        &file_secret(&path),
    );
    for (case, content, want) in cases {
        let _ = fs::remove_file(&path);
        let _ = fs::remove_dir(&path);
        match &content {
            Content::Bytes(bytes, mode) => write_file(&path, bytes, *mode),
            Content::Directory => {
                fs::create_dir(&path).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
            }
            Content::Missing => {}
        }
        env.launch();
        let code = env.wait_exit(FAIL_FAST);
        let stderr = env.stderr();
        assert_eq!(code, 3, "{case}: exit code\n{stderr}");
        assert!(
            stderr.contains(want),
            "{case}: stderr lacks {want:?}\n{stderr}"
        );
        assert!(
            stderr.contains("BITPOLL_FIELD_ENCRYPTION_KEY"),
            "{case}: the secret is not named\n{stderr}"
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "{case}: the path is not named\n{stderr}"
        );
        let out = env.output_bytes();
        assert!(
            !contains(&out, b"S3CRET-MARKER"),
            "{case}: the file's content appeared in the output"
        );
        assert!(
            !contains(&out, b"this+is+an+example+key"),
            "{case}: the sample key appeared in the output"
        );
        // Nothing was done to the file.
        if let Content::Bytes(bytes, mode) = &content {
            assert_eq!(
                owner_mode(&path),
                (0, 0, *mode),
                "{case}: the file's owner or mode changed"
            );
            assert!(
                fs::read(&path).unwrap() == *bytes,
                "{case}: the file's content changed"
            );
        }
        assert!(
            !env.data
                .join("secrets/BITPOLL_FIELD_ENCRYPTION_KEY")
                .exists(),
            "{case}: a key was generated instead"
        );
        assert!(!env.stamp("migrate").exists(), "{case}: preparation ran");
    }
}

#[test]
fn one_trailing_newline_is_stripped_from_a_file_secret() {
    crate::util::root_only!();
    let mut env = TestEnv::new("newline");
    let keys = env.dir.join("keys");
    let fek = fernet_key();
    write_file(&keys.join("fek"), format!("{fek}\n").as_bytes(), 0o600);
    write_file(&keys.join("one"), b"file-secret-one\n", 0o600);
    write_file(&keys.join("two"), b"file-secret-two\n\n", 0o640);
    env.config
        .set(
            "secrets",
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            &file_secret(&keys.join("fek")),
        )
        .set(
            "secrets",
            "DEMO_FILE_SECRET",
            &file_secret(&keys.join("one")),
        )
        .set(
            "secrets",
            "DEMO_FILE_SECRET_TWO",
            &file_secret(&keys.join("two")),
        )
        .set_str(
            "environment",
            "DEMO_REPORT_ENV",
            "BITPOLL_FIELD_ENCRYPTION_KEY,DEMO_FILE_SECRET,DEMO_FILE_SECRET_TWO",
        );
    env.launch();
    env.wait_ready(READY);
    let who = env.whoami();
    assert_eq!(
        who.env_sha256("BITPOLL_FIELD_ENCRYPTION_KEY"),
        Some(sha256_hex(fek.as_bytes()))
    );
    assert_eq!(
        who.env_sha256("DEMO_FILE_SECRET"),
        Some(sha256_hex(b"file-secret-one")),
        "the newline was not stripped"
    );
    assert_eq!(
        who.env_sha256("DEMO_FILE_SECRET_TWO"),
        Some(sha256_hex(b"file-secret-two\n")),
        "only one newline is stripped"
    );
    assert!(
        !env.data
            .join("secrets/BITPOLL_FIELD_ENCRYPTION_KEY")
            .exists(),
        "a file-sourced secret was copied into the data dir"
    );
    env.stop();
}

#[test]
fn a_credential_is_read_from_credentials_directory() {
    crate::util::root_only!();
    let mut env = TestEnv::new("credential");
    let creds = env.dir.join("credentials");
    fs::create_dir(&creds).unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o500)).unwrap();
    write_file(&creds.join("democred"), b"credential-value\n", 0o400);
    env.config
        .set(
            "secrets",
            "DEMO_CREDENTIAL",
            r#"{ credential = "democred" }"#,
        )
        .set_str(
            "environment",
            "DEMO_REPORT_ENV",
            "DEMO_CREDENTIAL,CREDENTIALS_DIRECTORY",
        );
    env.launch_with(Launch::default().env("CREDENTIALS_DIRECTORY", &creds.display().to_string()));
    env.wait_ready(READY);
    let who = env.whoami();
    assert_eq!(
        who.env_sha256("DEMO_CREDENTIAL"),
        Some(sha256_hex(b"credential-value"))
    );
    assert_eq!(
        who.env_sha256("CREDENTIALS_DIRECTORY"),
        None,
        "CREDENTIALS_DIRECTORY reached the server"
    );
    assert!(env.stderr().contains("credential"), "{}", env.log_context());
    env.stop();
}

#[test]
fn a_credential_without_credentials_directory_is_refused_with_the_load_credential_hint() {
    crate::util::root_only!();
    let mut env = TestEnv::new("credential_unset");
    env.config.set(
        "secrets",
        "DEMO_CREDENTIAL",
        r#"{ credential = "democred" }"#,
    );
    env.launch();
    env.expect_failure(
        3,
        &[
            "DEMO_CREDENTIAL",
            "CREDENTIALS_DIRECTORY is not set",
            "LoadCredential=democred:",
        ],
        FAIL_FAST,
    );
    assert!(!env.stamp("migrate").exists());
}

#[test]
fn fernet_key_is_not_generated_when_a_database_exists() {
    crate::util::root_only!();
    let mut env = TestEnv::new("fernet_guard");
    let key_file = env.dir.join("keys/fek");
    write_file(&key_file, fernet_key().as_bytes(), 0o600);
    env.config.set(
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY",
        &file_secret(&key_file),
    );
    env.launch();
    env.wait_ready(READY);
    env.stop();

    let db = env.data.join("db.sqlite3");
    let snapshot = |db: &Path| {
        let m = fs::metadata(db).expect("db.sqlite3");
        (
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            sha256_hex(&fs::read(db).unwrap()),
        )
    };
    let before = snapshot(&db);
    let generated = env.data.join("secrets/BITPOLL_FIELD_ENCRYPTION_KEY");

    env.config.set(
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY",
        r#"{ generate = "fernet-key" }"#,
    );
    env.launch();
    env.expect_failure(
        3,
        &[
            "refusing to generate a new Fernet key because the database already exists",
            "unreadable",
        ],
        FAIL_FAST,
    );
    assert_eq!(snapshot(&db), before, "the database was touched");
    assert!(!generated.exists(), "a Fernet key was generated anyway");

    // Also without the migrate stamp: the database file alone is evidence.
    fs::remove_file(env.stamp("migrate")).unwrap();
    env.launch();
    env.expect_failure(
        3,
        &["refusing to generate a new Fernet key", "db.sqlite3 exists"],
        FAIL_FAST,
    );
    assert_eq!(snapshot(&db), before, "the database was touched");
    assert!(!generated.exists(), "a Fernet key was generated anyway");
}

#[test]
fn not_root_mode_verifies_skips_root_work_and_serves() {
    crate::util::root_only!();
    let mut env = TestEnv::new("not_root");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let ids = env.ids().unwrap();

    // A changed environment makes the unprivileged launcher run the steps itself.
    env.config
        .set_str("environment", "BITPOLL_SITE_NAME", "Unprivileged");
    let pid = env.launch_with(Launch::default().wrap(&[
        "setpriv".to_string(),
        format!("--reuid={}", ids.uid),
        format!("--regid={}", ids.gid),
        "--init-groups".to_string(),
        "--".to_string(),
    ]));
    let ready = env.wait_ready(READY);
    assert_eq!((ready.pid, ready.uid), (pid as i32, ids.uid));
    let log = env.stderr();
    assert!(log.contains("not running as root"), "{log}");
    assert!(log.contains("step migrate runs"), "{log}");
    assert!(!log.contains("created system"), "{log}");
    assert_eq!(env.http_get("/healthz").status, 200);
    // The bounding set cannot be emptied without CAP_SETPCAP; everything else must be.
    assert_unprivileged(pid, &ids, false, "unprivileged launch");
    for step in STEPS {
        assert_eq!(owner_mode(&env.stamp(step)).0, ids.uid, "{step} stamp");
    }
    env.stop();

    // Another unprivileged user is not the configured one.
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    env.launch_with(Launch::default().wrap(&[
        "setpriv".to_string(),
        format!("--reuid={}", nobody.uid),
        format!("--regid={}", nobody.gid),
        "--clear-groups".to_string(),
        "--".to_string(),
    ]));
    env.expect_failure(
        3,
        &[&format!(
            "runs as uid {}, not as the configured user",
            nobody.uid
        )],
        FAIL_FAST,
    );
}

#[test]
fn secrets_never_appear_in_argv_or_logs() {
    crate::util::root_only!();
    let mut env = TestEnv::new("no_leaks");
    let keys = env.dir.join("keys");
    write_file(&keys.join("file"), b"file-secret-value-Zq81\n", 0o600);
    env.config
        .set(
            "secrets",
            "DEMO_FILE_SECRET",
            &file_secret(&keys.join("file")),
        )
        .set_str("environment", "DEMO_MIGRATION_DELAY", "2");
    let pid = env.launch_with(Launch::default().env("BITPOLL_LAUNCHER_LOG", "trace"));
    env.wait_for_log("demo migration: step", READY);
    let mut cmdlines = vec![proc_cmdline(pid)];
    let drivers = children_of(pid);
    assert!(!drivers.is_empty(), "no preparation process");
    cmdlines.extend(drivers.iter().map(|p| proc_cmdline(*p)));
    env.wait_ready(READY);
    cmdlines.push(proc_cmdline(pid));
    cmdlines.extend(children_of(pid).into_iter().map(proc_cmdline));
    env.stop();

    let mut secrets = vec![b"file-secret-value-Zq81".to_vec()];
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        secrets.push(fs::read(env.data.join("secrets").join(name)).unwrap());
    }
    let output = env.output_bytes();
    assert!(
        output.len() > 1000,
        "suspiciously little output at trace level"
    );
    let stamps: Vec<Vec<u8>> = STEPS
        .iter()
        .map(|s| fs::read(env.stamp(s)).unwrap())
        .collect();
    for (i, secret) in secrets.iter().enumerate() {
        assert!(secret.len() >= 16);
        assert!(
            !contains(&output, secret),
            "secret #{i} appeared in the launcher's output"
        );
        for c in &cmdlines {
            assert!(
                !contains(c, secret),
                "secret #{i} appeared in a command line"
            );
        }
        for s in &stamps {
            assert!(!contains(s, secret), "secret #{i} appeared in a stamp");
        }
    }
}

#[test]
fn server_environment_is_built_from_scratch() {
    crate::util::root_only!();
    let mut env = TestEnv::new("clean_env");
    let leaks = [
        "FOO_LEAK",
        "PYTHONSTARTUP",
        "LD_LIBRARY_PATH",
        "SUDO_USER",
        "CREDENTIALS_DIRECTORY",
    ];
    env.config
        .set_str(
            "environment",
            "DEMO_REPORT_ENV",
            "FOO_LEAK,PYTHONSTARTUP,LD_LIBRARY_PATH,SUDO_USER,CREDENTIALS_DIRECTORY,BITPOLL_DATA_DIR,PYTHONPATH,HOME",
        )
        .set_str("environment", "DEMO_MIGRATION_DELAY", "2");
    let pid = env.launch_with(
        Launch::default()
            .env("FOO_LEAK", "1")
            .env("PYTHONSTARTUP", "/nonexistent/pythonrc")
            .env("LD_LIBRARY_PATH", "/nonexistent/lib")
            .env("SUDO_USER", "admin")
            .env("CREDENTIALS_DIRECTORY", "/nonexistent/credentials")
            .env("PYTHONPATH", "/nonexistent/pythonpath")
            .env("BITPOLL_DATA_DIR", "/nonexistent/data"),
    );
    env.wait_for_log("demo migration: step", READY);
    let drivers = children_of(pid);
    assert!(!drivers.is_empty(), "no preparation process");
    for d in &drivers {
        let names = proc_environ_names(*d);
        for bad in leaks.iter().chain(&["NOTIFY_SOCKET"]) {
            assert!(
                !names.iter().any(|n| n == bad),
                "{bad} reached the preparation process: {names:?}"
            );
        }
    }
    env.wait_ready(READY);

    let who = env.whoami();
    for name in leaks {
        assert_eq!(who.env_sha256(name), None, "{name} reached the app");
    }
    assert_eq!(
        who.env_sha256("BITPOLL_DATA_DIR"),
        Some(sha256_hex(env.data.display().to_string().as_bytes()))
    );
    assert_eq!(
        who.env_sha256("PYTHONPATH"),
        Some(sha256_hex(env.app.display().to_string().as_bytes()))
    );
    assert_eq!(
        who.env_sha256("HOME"),
        Some(sha256_hex(env.data.display().to_string().as_bytes()))
    );

    // The environment the server was exec'd with, as the kernel recorded it.
    let names = proc_environ_names(pid);
    let required = [
        "PATH",
        "LANG",
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "PYTHONPATH",
        "DJANGO_SETTINGS_MODULE",
        "PYTHONUNBUFFERED",
        "PYTHONNOUSERSITE",
        "BITPOLL_DATA_DIR",
        // The demo source carries no compiled catalogs: they are in the data directory.
        "BITPOLL_LOCALE_PATHS",
        "BITPOLL_STATIC_ROOT",
        "BITPOLL_DB_ENGINE",
        "BITPOLL_DB_PATH",
        "BITPOLL_SECRET_KEY",
        "BITPOLL_FIELD_ENCRYPTION_KEY",
        "BITPOLL_ALLOWED_HOSTS",
        "DEMO_REPORT_ENV",
        "DEMO_MIGRATION_DELAY",
        "NOTIFY_SOCKET",
        // Every Python the launcher starts ignores the user's site directory.
        "PYTHONNOUSERSITE",
    ];
    for r in required {
        assert!(
            names.iter().any(|n| n == r),
            "{r} missing from the server's environment: {names:?}"
        );
    }
    let unexpected: Vec<&String> = names
        .iter()
        .filter(|n| !required.contains(&n.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected variables in the server's environment: {unexpected:?}"
    );
    env.stop();
}

#[test]
fn a_data_dir_whose_parent_is_missing_is_refused() {
    crate::util::root_only!();
    let mut env = TestEnv::new("parent_missing");
    let data = env.dir.join("missing-parent/data");
    env.config
        .set_str("service", "data_dir", &data.display().to_string());
    env.launch();
    env.expect_failure(
        3,
        &[&format!(
            "its parent {} does not exist",
            data.parent().unwrap().display()
        )],
        FAIL_FAST,
    );
    assert!(
        !data.parent().unwrap().exists(),
        "the launcher created the parent"
    );
}

/// The service user owns the data directory, so it can replace the database with a hard
/// link to a file elsewhere on the same file system (any file where
/// fs.protected_hardlinks = 0; a file it can read and write otherwise). Planted here by the
/// test as root. The launcher, as root, must not hand that file to the service user.
#[test]
fn a_hard_link_planted_as_the_database_does_not_hand_its_target_to_the_service_user() {
    crate::util::root_only!();
    let mut env = TestEnv::new("hardlink_db");
    let victim = env.dir.join("victim");
    write_file(&victim, b"a root-owned file outside the data dir\n", 0o644);
    fs::create_dir(&env.data).unwrap();
    fs::hard_link(&victim, env.data.join("db.sqlite3")).unwrap();
    env.launch();
    let outcome = env.wait_exit_or_ready(READY);
    if outcome.is_none() {
        env.stop();
    }
    assert_eq!(
        owner_mode(&victim),
        (0, 0, 0o644),
        "the launcher changed the owner or mode of a file outside the data dir through a hard link (outcome {outcome:?})\n{}",
        env.log_context()
    );
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"a root-owned file outside the data dir\n"
    );
}

/// Like the database: a hard link to a root-only file planted as a generated secret must
/// not be read as root and handed to the app (the service user would learn its content).
#[test]
fn a_hard_link_planted_as_a_generated_secret_is_not_read_as_root() {
    crate::util::root_only!();
    let mut env = TestEnv::new("hardlink_secret");
    let victim = env.dir.join("victim-key");
    let content = b"root-only-private-key-material-4f9c2e7d";
    write_file(&victim, content, 0o600);
    let secrets = env.data.join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    fs::hard_link(&victim, secrets.join("BITPOLL_SECRET_KEY")).unwrap();
    env.config
        .set_str("environment", "DEMO_REPORT_ENV", "BITPOLL_SECRET_KEY");
    env.launch();
    let outcome = env.wait_exit_or_ready(READY);
    if outcome.is_none() {
        let who = env.whoami();
        env.stop();
        assert_ne!(
            who.env_sha256("BITPOLL_SECRET_KEY"),
            Some(sha256_hex(content)),
            "the content of a root-only file outside the data dir, hard-linked into secrets/, was read as root and given to the app\n{}",
            env.log_context()
        );
    }
    assert_eq!(owner_mode(&victim), (0, 0, 0o600));
}

#[test]
fn files_the_app_writes_inside_its_source_do_not_count_as_source_changes() {
    crate::util::root_only!();
    // Upstream Bitpoll's defaults put collected static files into the source tree
    // (src/_static): those are outputs of collectstatic, not inputs of any step.
    let mut env = TestEnv::new("static_in_source");
    let static_root = env.app.join("_static");
    fs::create_dir(&static_root).unwrap();
    fs::set_permissions(&static_root, fs::Permissions::from_mode(0o777)).unwrap();
    env.config.set_str(
        "environment",
        "BITPOLL_STATIC_ROOT",
        &static_root.display().to_string(),
    );
    env.launch();
    env.wait_ready(READY);
    assert!(
        static_root.join("staticfiles.json").is_file(),
        "collectstatic wrote into the source tree\n{}",
        env.stderr()
    );
    env.stop();
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert_every_step(
        &log,
        "skipped",
        "ran again although only its own output changed",
    );
}

/// A descriptor the caller left open (here a root-only file on fd 9, without
/// close-on-exec) reaches neither the preparation child nor the server.
#[test]
fn descriptors_the_caller_left_open_reach_neither_the_preparation_nor_the_server() {
    crate::util::root_only!();
    let mut env = TestEnv::new("leaked_fd");
    let secret = env.dir.join("root-only");
    write_file(&secret, b"root only\n", 0o600);
    // The demo app's migration lists its open descriptors when asked.
    env.config.set_str("environment", "DEMO_REPORT_FDS", "1");
    let open_9 = format!("exec 9<{}; exec \"$0\" \"$@\"", secret.display());
    let pid = env.launch_with(Launch::default().wrap(&["sh", "-c", &open_9]));
    env.wait_ready(READY);
    let log = env.stderr();
    let fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for fd in &fds {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default();
        assert_ne!(target, secret, "the server holds the caller's fd {fd}");
    }
    let report = log
        .lines()
        .find(|l| l.contains("demo migration: open fds"))
        .unwrap_or_else(|| panic!("no fd report from the preparation\n{log}"));
    assert!(
        !report.contains(&secret.display().to_string()),
        "the preparation child holds the caller's file: {report}"
    );
    env.stop();
}

/// Before a migrate that has work, the SQLite database is backed up (online, by SQLite's
/// backup API) into data_dir/backups; the backup holds the database as it was, only the
/// newest prepare.backups are kept, and a start with nothing to migrate takes none.
#[test]
fn the_database_is_backed_up_before_a_migrate_with_work_and_old_backups_are_pruned() {
    crate::util::root_only!();
    let mut env = TestEnv::new("backup");
    env.config.set("prepare", "backups", "1");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let backups = env.data.join("backups");
    let list = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(
        list().is_empty(),
        "a fresh database was backed up: {:?}",
        list()
    );
    assert_eq!(owner_mode(&backups).2, 0o700);

    // An upgrade brings a migration: the backup holds the database before it.
    util::add_migration(&env, "0003_upgrade");
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    env.stop();
    let first = list();
    assert_eq!(first.len(), 1, "{log}");
    assert!(log.contains("database backed up to"), "{log}");
    let copy = backups.join(&first[0]);
    let applied = |db: &Path| {
        let out = std::process::Command::new(util::PYTHON)
            .args([
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(sorted(n for (n,) in c.execute(\"select name from django_migrations where app='poll'\")))",
            ])
            .arg(db)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(applied(&copy), "['0001_initial', '0002_demo_delay']");
    assert_eq!(
        applied(&env.data.join("db.sqlite3")),
        "['0001_initial', '0002_demo_delay', '0003_upgrade']"
    );

    // Nothing to migrate: no backup.
    env.launch();
    env.wait_ready(READY);
    env.stop();
    assert_eq!(list(), first);

    // The backup restored in place (same file, older content): the database decides,
    // migrate runs again and the app serves.
    let db = env.data.join("db.sqlite3");
    let ino = fs::metadata(&db).unwrap().ino();
    fs::write(&db, fs::read(&copy).unwrap()).unwrap();
    assert_eq!(fs::metadata(&db).unwrap().ino(), ino, "restored in place");
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert!(
        log.contains("step migrate runs: the database lacks 1 migration(s) applied before (poll.0003_upgrade)"),
        "{log}"
    );
    assert_eq!(env.http_get("/").status, 200);
    env.stop();
    assert_eq!(
        applied(&db),
        "['0001_initial', '0002_demo_delay', '0003_upgrade']"
    );
    // That migrate had work: a backup of the restored database was taken too.
    let first = list();

    // Another migration, one second later at least: a new backup replaces the old one.
    std::thread::sleep(Duration::from_millis(1100));
    util::add_migration(&env, "0004_upgrade");
    fs::write(
        env.app.join("bitpoll/poll/migrations/0004_upgrade.py"),
        b"from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"poll\", \"0003_upgrade\")]\n    operations = []\n",
    )
    .unwrap();
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    env.stop();
    let second = list();
    assert_eq!(second.len(), 1, "prepare.backups = 1 keeps one\n{log}");
    assert_ne!(second, first);
    assert!(log.contains("removed the old backup"), "{log}");
}

/// Set every file of the app copy to mtime 1, as in a Nix store.
fn nix_mtimes(root: &Path) {
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            nix_mtimes(&path);
        } else if meta.is_file() {
            set_mtime(&path, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        }
    }
}

/// An upgrade in a Nix-style store (every mtime 1) changes a static file: the new content
/// is collected and served (collectstatic alone would keep the older copy, whose mtime is
/// newer), into a fresh tree that `current` switches to; the tree before stays, older
/// ones go.
#[test]
fn an_upgraded_static_file_with_mtime_1_is_collected_into_a_fresh_tree() {
    crate::util::root_only!();
    let mut env = TestEnv::new("static_upgrade");
    let css = env.app.join("bitpoll/static/css/demo.css");
    nix_mtimes(&env.app);
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let current = env.data.join("static/current");
    let first = fs::read_link(&current).expect("static/current is a link");
    assert!(current.join("css/demo.css").is_file());

    for round in 1..=2 {
        fs::write(
            &css,
            format!("/* upgraded, round {round} */\nbody {{ color: #{round}{round}{round}; }}\n"),
        )
        .unwrap();
        nix_mtimes(&env.app);
        env.launch();
        env.wait_ready(READY);
        let log = env.stderr();
        env.stop();
        let served = fs::read_to_string(current.join("css/demo.css")).unwrap();
        assert!(
            served.contains(&format!("round {round}")),
            "the old static file is still served after the upgrade: {served}\n{log}"
        );
    }
    let trees: Vec<String> = fs::read_dir(env.data.join("static"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("v-"))
        .collect();
    assert_eq!(
        trees.len(),
        2,
        "the served tree and the one before it: {trees:?}"
    );
    assert!(
        !trees.contains(&first.display().to_string()),
        "the oldest tree was kept: {trees:?}"
    );
}

/// A start as the service manager makes it and one from an admin's root shell give the
/// server the same environment, byte for byte (order included), but for the notify socket
/// the service manager hands to the one start: nothing of the caller's shell (PATH,
/// locale, TZ, HOME, terminal, agent sockets) reaches the app.
#[test]
fn the_server_environment_does_not_depend_on_the_callers_shell() {
    crate::util::root_only!();
    let mut env = TestEnv::new("caller_env");
    let environ = |env: &mut TestEnv, launch: Launch| -> Vec<String> {
        let pid = env.launch_with(launch);
        env.wait_ready(READY);
        let raw = fs::read(format!("/proc/{pid}/environ")).unwrap();
        env.stop();
        raw.split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8(e.to_vec()).expect("UTF-8 environment"))
            .collect()
    };
    let service_manager = Launch::default()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
        .env("LANG", "C.UTF-8");
    let root_shell = Launch::default()
        .env(
            "PATH",
            "/root/.cargo/bin:/root/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("LANGUAGE", "de")
        .env("TZ", "America/New_York")
        .env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", "/bin/bash")
        .env("TERM", "xterm-256color")
        .env("PWD", "/root")
        .env("SSH_AUTH_SOCK", "/tmp/ssh-XXXXabcd/agent.4242")
        .env("MAIL", "/var/mail/root");
    let by_service_manager = environ(&mut env, service_manager);
    let from_root_shell = environ(&mut env, root_shell);
    let per_start = |e: &[String]| -> Vec<String> {
        e.iter()
            .filter(|v| !v.starts_with("NOTIFY_SOCKET="))
            .cloned()
            .collect()
    };
    assert_eq!(
        per_start(&by_service_manager),
        per_start(&from_root_shell),
        "the server's environment differs between the two callers"
    );
    assert_eq!(
        by_service_manager.len(),
        per_start(&by_service_manager).len() + 1,
        "the notify socket is the only per-start variable here: {by_service_manager:?}"
    );
    let path = format!("PATH={}/bin:/usr/local/bin:/usr/bin:/bin", util::VENV);
    assert!(from_root_shell.contains(&path), "{from_root_shell:?}");
    assert!(from_root_shell.contains(&"LANG=C.UTF-8".to_string()));
    eprintln!(
        "server environment: {} variables, identical from both callers but NOTIFY_SOCKET",
        from_root_shell.len()
    );
}

/// A start from an admin's root shell (another PATH, LANG, HOME) between two starts by
/// the service manager changes nothing the app sees: every step stays skipped, before
/// and after.
#[test]
fn a_start_from_a_root_shell_environment_does_not_rerun_preparation() {
    crate::util::root_only!();
    let mut env = TestEnv::new("root_shell_env");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let shell = Launch::default()
        .env(
            "PATH",
            "/root/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("HOME", "/root")
        .env("TZ", "Europe/Berlin");
    env.launch_with(shell);
    env.wait_ready(READY);
    let log = env.stderr();
    env.stop();
    assert_every_step(&log, "skipped", "re-ran for the caller's environment");
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    env.stop();
    assert_every_step(&log, "skipped", "re-ran after a start from a root shell");
}

#[test]
fn a_foreign_host_header_gets_400_and_one_log_line_without_a_traceback() {
    crate::util::root_only!();
    let mut env = TestEnv::new("foreign_host");
    env.launch();
    env.wait_ready(READY);
    for _ in 0..2 {
        let resp = util::http_get_host(env.port, "/healthz", "foreign.example");
        assert_eq!(resp.status, 400, "{}", resp.body);
    }
    env.wait_for_log("foreign.example", READY);
    // The second request's line too (both are logged by the same worker, in order).
    let deadline = Instant::now() + READY;
    while env.stderr().matches("foreign.example").count() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = env.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("foreign.example"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per request:\n{log}");
    for line in &lines {
        assert!(
            line.starts_with(
                "ERROR django.security.DisallowedHost: Invalid HTTP_HOST header: 'foreign.example'."
            ),
            "{line}"
        );
    }
    assert!(!log.contains("Traceback"), "{log}");
    assert_eq!(env.http_get("/healthz").status, 200);
    env.stop();
}

#[test]
fn the_documented_tryout_runs_as_an_unprivileged_person_and_serves() {
    crate::util::root_only!();
    let env = TestEnv::new("tryout");
    // A person's account: a regular uid with a login shell and a group of its own.
    let out = std::process::Command::new("useradd")
        .args(["--user-group", "--no-create-home", "--shell", "/bin/bash"])
        .arg("--home-dir")
        .arg(&env.dir)
        .arg(&env.user)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = env.ids().unwrap();
    // What the user runs, where any user can run it (the checkout may be under /root).
    let launcher = env.dir.join("bitpoll-launcher");
    let script = env.dir.join("tryout.sh");
    fs::copy(util::LAUNCHER, &launcher).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tryout.sh"),
        &script,
    )
    .unwrap();
    let tmp = env.dir.join("tmp");
    fs::create_dir(&tmp).unwrap();
    nix::unistd::chown(
        &tmp,
        Some(nix::unistd::Uid::from_raw(ids.uid)),
        Some(nix::unistd::Gid::from_raw(ids.gid)),
    )
    .unwrap();
    let as_user = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.arg(format!("--reuid={}", ids.uid))
            .arg(format!("--regid={}", ids.gid))
            .args(["--init-groups", "--", "env", "-i"])
            .arg(format!("PATH={}", util::PATH))
            .arg(format!("HOME={}", env.dir.display()))
            .arg(format!("TMPDIR={}", tmp.display()))
            .arg(format!("BITPOLL_TRYOUT_PYTHON={}", util::PYTHON))
            .arg(format!("BITPOLL_TRYOUT_SOURCE={}", env.app.display()))
            .arg(format!("BITPOLL_TRYOUT_LAUNCHER={}", launcher.display()))
            .arg(format!("BITPOLL_TRYOUT_PORT={}", env.port))
            .arg("bash")
            .arg(&script)
            .args(args)
            .current_dir(&env.dir);
        cmd
    };

    let log = env.dir.join("tryout.log");
    let mut server = as_user(&["server"])
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = server.id() as i32;
    let deadline = Instant::now() + READY;
    let served = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break Err(format!("the try-out exited: {status}"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", env.port)).is_ok() {
            break Ok(env.http_get("/healthz").status);
        }
        if Instant::now() >= deadline {
            break Err("no server within the deadline".to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = || fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(served, Ok(200), "{}", text());
    assert_eq!(env.http_get("/").status, 200, "{}", text());
    let whoami = env.whoami();
    assert_eq!((whoami.uid, whoami.gid), (ids.uid, ids.gid));
    assert!(text().contains("not running as root"), "{}", text());

    // The data is the user's, in the throw-away directory.
    let data = tmp.join(format!("bitpoll-tryout-{}/data", ids.uid));
    assert_eq!(owner_mode(&data).0, ids.uid);
    assert!(data.join("db.sqlite3").is_file(), "{}", text());
    for key in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        let (uid, _, mode) = owner_mode(&data.join("secrets").join(key));
        assert_eq!((uid, mode & 0o777), (ids.uid, 0o600), "{key}");
    }

    // manage runs against the same data.
    let out = as_user(&["manage", "showmigrations", "poll"])
        .output()
        .unwrap();
    let manage = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{manage}");
    assert!(manage.contains("[X] 0001_initial"), "{manage}");

    util::kill_group(pgid);
    let _ = server.wait();

    // As root it refuses, pointing at install instead.
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("server")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not as root"));
}

#[test]
fn two_launchers_on_one_data_directory_prepare_one_after_the_other() {
    crate::util::root_only!();
    // Two starts of one SQLite deployment at once (two units, or a start by hand beside
    // the service): the second waits for the first's data directory lock, names it, then
    // finds every step done.
    let mut a = TestEnv::new("dir_lock");
    a.config.set_str("environment", "DEMO_MIGRATION_DELAY", "3");
    let mut b = a.instance("b");
    b.config
        .set_str("service", "data_dir", &a.data.display().to_string())
        .set_str("app", "source_dir", &a.app.display().to_string());
    let a_pid = a.launch();
    a.wait_for_log("demo migration: step 1 of 3", READY);
    b.launch();
    let status = b.wait_status(
        &format!(
            "Waiting for the data directory {}: held by bitpoll-launcher ",
            a.data.display()
        ),
        READY,
    );
    assert!(status.contains(&format!(" pid {a_pid} ")), "{status}");
    a.wait_ready(READY);
    b.wait_ready(READY);
    assert_eq!(a.http_get("/").status, 200);
    assert_eq!(b.http_get("/").status, 200);
    let b_log = b.stderr();
    assert_eq!(
        b_log.matches("skipped=true").count(),
        3,
        "{}",
        b.log_context()
    );
    assert!(
        b_log.contains("preparation: nothing to do"),
        "{}",
        b.log_context()
    );
    assert!(
        b.notifications
            .iter()
            .any(|n| n.get("EXTEND_TIMEOUT_USEC").is_some()),
        "the waiting start keeps systemd's timeout alive"
    );
}
