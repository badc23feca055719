//! What a hostile or careless host tries, and what the launcher does about it: a stop
//! while an account is being created, what a killed start left half-written, backups named
//! from the future, names the server cannot take, descriptors passed as sockets that are
//! not, two starts on one data directory under load, root's groups and core dumps while the
//! launcher acts as the service user.
//!
//! Root only, one test at a time (`cargo test --test suite hostile:: -- --test-threads=1`).

use crate::util;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use util::cli::{READY, launch_once, uid_gid};
use util::{Launch, TestEnv, proc_status, write_file};

const FAIL_FAST: Duration = Duration::from_secs(30);

/// Processes whose command name is `comm`.
fn processes_named(comm: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

fn until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stop_while_the_account_is_created_waits_for_the_tool_and_leaves_nothing_running() {
    crate::util::root_only!();
    let mut env = TestEnv::new("stop_useradd");
    // Every rename of the launcher and its children is held for 2 s: groupadd and useradd
    // write the account database through a rename, so the tools run for seconds.
    let strace = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=rename,renameat,renameat2",
        "-e",
        "inject=rename,renameat,renameat2:delay_enter=2000000",
    ];
    let pid = env.launch_with(Launch::default().wrap(&strace));
    let tool = until(Duration::from_secs(60), "an account tool", || {
        processes_named("useradd")
            .into_iter()
            .chain(processes_named("groupadd"))
            .next()
    });
    // The launcher is the tool's parent (strace's child).
    let launcher = fs::read_to_string(format!("/proc/{tool}/stat"))
        .ok()
        .and_then(|s| {
            s[s.rfind(')')? + 2..]
                .split_whitespace()
                .nth(1)?
                .parse::<u32>()
                .ok()
        })
        .expect("the account tool's parent");
    let comm = fs::read_to_string(format!("/proc/{launcher}/comm")).unwrap_or_default();
    assert!(
        comm.starts_with("bitpoll-launch"),
        "the tool's parent is {comm:?}, not the launcher (strace is {pid})"
    );
    let stopped = Instant::now();
    kill(Pid::from_raw(launcher as i32), Signal::SIGTERM).unwrap();
    let code = env.wait_exit(Duration::from_secs(60));
    let took = stopped.elapsed();
    let log = env.log_context();
    assert!(
        log.contains("stopped by signal 15 (SIGTERM) during creating the account"),
        "exit {code}\n{log}"
    );
    assert!(
        fs::metadata(format!("/proc/{tool}")).is_err()
            && processes_named("useradd").is_empty()
            && processes_named("groupadd").is_empty(),
        "an account tool outlived the launcher\n{log}"
    );
    assert!(
        !log.contains("data directory"),
        "the start went on after the stop\n{log}"
    );
    eprintln!("stopped {took:?} after SIGTERM (the tools' renames are held 2 s each)");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn what_a_killed_start_left_half_written_is_removed_and_nothing_else() {
    crate::util::root_only!();
    let mut env = TestEnv::new("leftovers");
    launch_once(&mut env);
    let (uid, gid) = uid_gid(&env);
    let dead = dead_pid();
    let live = std::process::id();
    let secrets = env.data.join("secrets");
    let backups = env.data.join("backups");
    let state = env.data.join("state");
    let planted = [
        (
            secrets.join(format!(".BITPOLL_SECRET_KEY.tmp-{dead}")),
            true,
        ),
        (state.join(format!(".keys.tmp-{dead}")), true),
        (
            backups.join(format!("db-20261201120000.sqlite3.tmp-{dead}")),
            true,
        ),
        (
            backups.join(format!("db-20261201120000.sqlite3.tmp-{dead}-journal")),
            true,
        ),
        // A writer still running: another launcher at work.
        (secrets.join(format!(".OTHER.tmp-{live}")), false),
        // Not the launcher's naming.
        (secrets.join(format!("notes.tmp-{dead}")), false),
    ];
    for (path, _) in &planted {
        write_file(path, b"partial", 0o600);
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    // A link with a temporary's name is not the launcher's file.
    let link = secrets.join(format!(".LINK.tmp-{dead}"));
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    env.launch();
    env.wait_ready(READY);
    env.stop();
    for (path, removed) in &planted {
        assert_eq!(
            !path.exists(),
            *removed,
            "{} {}\n{}",
            path.display(),
            if *removed { "was kept" } else { "was removed" },
            env.log_context()
        );
    }
    assert!(fs::symlink_metadata(&link).is_ok(), "the link was removed");
    assert!(Path::new("/etc/hostname").exists());
    assert!(
        env.stderr().contains(&format!(
            "removed {}/.BITPOLL_SECRET_KEY.tmp-{dead}, left half-written by a start that was stopped",
            secrets.display()
        )),
        "{}",
        env.log_context()
    );
}

/// A PID no process has.
fn dead_pid() -> u32 {
    (400_000..4_000_000)
        .find(|p| fs::metadata(format!("/proc/{p}")).is_err())
        .unwrap()
}

#[test]
fn a_stop_during_the_backup_before_migrate_removes_the_partial_copy() {
    crate::util::root_only!();
    let mut env = TestEnv::new("backup_stop");
    launch_once(&mut env);
    // A database large enough that its backup takes a while: 300 MiB of rows.
    let db = env.data.join("db.sqlite3");
    let out = Command::new(util::PYTHON)
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute('CREATE TABLE IF NOT EXISTS ballast (b BLOB)')\nc.executemany('INSERT INTO ballast VALUES (zeroblob(1048576))', [()] * 300)\nc.commit()",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    util::add_migration(&env, "0099_backup_stop");
    env.launch();
    let backups = env.data.join("backups");
    until(
        Duration::from_secs(120),
        "the backup's temporary file",
        || {
            fs::read_dir(&backups)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                .then_some(())
        },
    );
    env.signal(Signal::SIGTERM);
    let code = env.wait_exit(FAIL_FAST);
    let left: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n.contains(".tmp-")),
        "exit {code}: the partial backup stayed: {left:?}\n{}",
        env.log_context()
    );
}

#[test]
fn backups_named_from_the_future_never_push_out_the_one_just_taken() {
    crate::util::root_only!();
    let mut env = TestEnv::new("backup_future");
    env.config.set("prepare", "backups", "2");
    launch_once(&mut env);
    let (uid, gid) = uid_gid(&env);
    let backups = env.data.join("backups");
    // Two backups from a clock that was once ahead: newer by name, older in truth.
    for name in ["db-20990101000000.sqlite3", "db-20990102000000.sqlite3"] {
        let p = backups.join(name);
        write_file(&p, b"SQLite format 3\0", 0o600);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    util::add_migration(&env, "0099_backup_future");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let names: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let now_taken: Vec<&String> = names.iter().filter(|n| !n.starts_with("db-2099")).collect();
    assert_eq!(
        now_taken.len(),
        1,
        "the backup just taken is gone: {names:?}\n{}",
        env.log_context()
    );
    assert_eq!(names.len(), 2, "prepare.backups = 2 is kept: {names:?}");
    assert!(
        names.contains(&"db-20990102000000.sqlite3".to_string()),
        "the newer of the two old ones (by when it was written) stays: {names:?}"
    );
}

#[test]
fn a_database_name_with_a_nul_byte_is_refused_at_once_naming_the_key() {
    crate::util::root_only!();
    let mut env = TestEnv::new("db_name_nul");
    env.config
        .set_str("database", "engine", "postgresql")
        .set("database", "name", "\"bit\\u0000poll\"")
        .set_str("database", "host", "127.0.0.1")
        .set("database", "wait_timeout_sec", "600");
    env.launch();
    let started = Instant::now();
    let stderr = env.expect_failure(
        2,
        &["database.name: must be 1 to 63 bytes without NUL or control characters"],
        FAIL_FAST,
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(!stderr.contains('\0'), "a raw NUL was printed");
}

/// The launcher started through `sh`, which puts `fd3` on descriptor 3 and sets
/// LISTEN_PID to the launcher's own PID (sh execs it) and LISTEN_FDS to `count`.
fn passing(count: &str, fd3: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("LISTEN_PID=$$ LISTEN_FDS={count} exec \"$0\" \"$@\" 3<{fd3}"),
    ]
}

#[test]
fn a_passed_socket_that_is_not_a_listening_socket_is_refused_before_anything_else() {
    crate::util::root_only!();
    let mut env = TestEnv::new("listen_fds");
    for (count, what) in [
        ("1", "not a socket"),
        ("1000", "is not a number of passed sockets"),
    ] {
        env.launch_with(Launch::default().wrap(&passing(count, "/etc/shadow")));
        let stderr = env.expect_failure(2, &[what], FAIL_FAST);
        assert!(
            !stderr.contains("phase=\"preflight\"") && !stderr.contains("preparation"),
            "the start went on before refusing\n{stderr}"
        );
        assert!(!env.user_exists(), "the account was created");
    }
}

#[test]
fn a_second_start_on_the_same_data_directory_never_disturbs_the_first_under_load() {
    crate::util::root_only!();
    let mut env = TestEnv::new("two_starts");
    launch_once(&mut env);
    // The same deployment started again by hand on the same data directory and port.
    let second_config = env.dir.join("second.toml");
    fs::write(&second_config, env.config.render()).unwrap();
    fs::set_permissions(&second_config, fs::Permissions::from_mode(0o600)).unwrap();
    let load: Vec<Child> = (0..3)
        .map(|_| {
            Command::new("/bin/sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        })
        .collect();
    let _load = KillOnDrop(load);
    env.launch();
    env.wait_ready(READY);
    for round in 0..8 {
        let out = util::cli::run_launcher(
            &env,
            &util::cli::Run::new(&["run", "--config", &second_config.display().to_string()]),
        );
        assert_ne!(
            out.code,
            0,
            "round {round}: the second start served: {}",
            out.context()
        );
        for _ in 0..5 {
            let r = env.http_get("/");
            assert_eq!(
                r.status,
                200,
                "round {round}: the first instance stopped answering after the second start\n{}\n{}",
                out.context(),
                env.log_context()
            );
        }
        assert!(
            env.is_running(),
            "round {round}: the first instance is gone\n{}",
            env.log_context()
        );
    }
    env.stop();
}

struct KillOnDrop(Vec<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// fs.suid_dumpable set for the test's duration (2 on some distributions: a process that
/// changed ids becomes dumpable again unless it says otherwise), put back afterwards.
struct SuidDumpable(String);

const SUID_DUMPABLE: &str = "/proc/sys/fs/suid_dumpable";

impl SuidDumpable {
    fn set(value: &str) -> SuidDumpable {
        let old = fs::read_to_string(SUID_DUMPABLE).unwrap();
        fs::write(SUID_DUMPABLE, value).unwrap();
        SuidDumpable(old.trim().to_string())
    }
}

impl Drop for SuidDumpable {
    fn drop(&mut self) {
        let _ = fs::write(SUID_DUMPABLE, &self.0);
    }
}

#[test]
fn while_acting_as_the_user_root_keeps_none_of_its_groups_and_dumps_no_core() {
    crate::util::root_only!();
    let _dumpable = SuidDumpable::set("1");
    let mut env = TestEnv::new("acting_groups");
    env.config
        .set_str("environment", "DEMO_MIGRATION_DELAY", "8");
    // The launcher's working directory takes a core file from anyone.
    fs::set_permissions(&env.dir, fs::Permissions::from_mode(0o1777)).unwrap();
    // Root with the groups an admin's root shell may carry (adm, disk), and room for a core.
    let wrapper = [
        "setpriv",
        "--groups=4,6",
        "--",
        "prlimit",
        "--core=unlimited:unlimited",
        "--",
    ];
    let pid = env.launch_with(Launch::default().wrap(&wrapper));
    env.wait_for_log("demo migration: step 2", READY);
    let (uid, gid) = uid_gid(&env);
    let status = proc_status(pid);
    let groups: Vec<String> = util::status_fields(&status, "Groups");
    assert_eq!(
        groups,
        vec![gid.to_string()],
        "root's groups while acting: {status:?}"
    );
    let uids = util::status_fields(&status, "Uid");
    assert_eq!(uids[0], "0", "real uid root");
    assert_eq!(uids[1], uid.to_string(), "acting as the user");
    // Non-dumpable: /proc/PID belongs to root even while the effective uid is the user's.
    let owner = fs::metadata(format!("/proc/{pid}/status")).unwrap().uid();
    assert_eq!(
        owner, 0,
        "the launcher is dumpable while it acts as the user"
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    // A crash now writes no core file (kernel.core_pattern names a file in the cwd).
    kill(Pid::from_raw(pid as i32), Signal::SIGABRT).unwrap();
    let code = env.wait_exit(FAIL_FAST);
    assert_eq!(code, 128 + 6, "{}", env.log_context());
    let cores: Vec<String> = fs::read_dir(&env.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect();
    assert!(cores.is_empty(), "a core file was written: {cores:?}");
}
