//! `check` and `run` judge with the same code: for each rule, one real setup, `check
//! --json` first, then `run`, and the two must agree. Where check reports an error, run
//! refuses with exit status 3 and the same words, before it has changed anything; where
//! check reports none, run serves. For each preparation step, what check says the next
//! start does is what run then does.
//!
//! Root only, one test at a time (the global lock of tests/util):
//!
//!     cargo test --test agree -- --test-threads=1

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use util::cli::{Run, config_arg, create_service_account, run_launcher, sync_config};
use util::{TestEnv, file_secret, write_file};

const READY: Duration = Duration::from_secs(60);
const FAIL_FAST: Duration = Duration::from_secs(30);
const STEPS: [&str; 3] = ["migrate", "collectstatic", "compilemessages"];

struct Finding {
    severity: String,
    group: String,
    subject: String,
    message: String,
}

fn check(env: &TestEnv) -> Vec<Finding> {
    sync_config(env);
    let out = run_launcher(
        env,
        &Run::new(&["check", "--config", &config_arg(env), "--json"]),
    );
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json is not JSON ({e})\n{}", out.context()));
    doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| Finding {
            severity: f["severity"].as_str().unwrap().to_string(),
            group: f["group"].as_str().unwrap().to_string(),
            subject: f["subject"].as_str().unwrap().to_string(),
            message: f["message"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn listing(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} [{}] {}: {}\n",
                f.severity, f.group, f.subject, f.message
            )
        })
        .collect()
}

/// check finds errors in `group`; run then refuses with each of them and changes nothing
/// (no user, no data directory entries beyond what was there).
fn both_refuse(env: &mut TestEnv, group: &str, message: &str) {
    let findings = check(env);
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == "error").collect();
    assert!(
        errors
            .iter()
            .any(|f| f.group == group && f.message.contains(message)),
        "check reports no {group} error containing {message:?}\n{}",
        listing(&findings)
    );
    let user_before = env.user_exists();
    env.launch();
    let stderr = env.expect_failure(3, &[], FAIL_FAST);
    for e in &errors {
        assert!(
            stderr.contains(&e.subject) && stderr.contains(&e.message),
            "run does not say what check said: {}: {}\n{stderr}",
            e.subject,
            e.message
        );
    }
    assert_eq!(env.user_exists(), user_before, "run changed the account");
}

/// check finds no error; run serves. Returns check's findings.
fn both_accept(env: &mut TestEnv) -> (Vec<Finding>, String) {
    let findings = check(env);
    assert!(
        !findings.iter().any(|f| f.severity == "error"),
        "check reports errors\n{}",
        listing(&findings)
    );
    env.launch();
    env.wait_ready(READY);
    let log = env.stderr();
    assert_eq!(env.http_get("/").status, 200, "{log}");
    env.stop();
    (findings, log)
}

/// What check says about a step, and that run's log says the same.
fn step_agrees(findings: &[Finding], log: &str, step: &str, check_says: &str, run_says: &str) {
    let f = findings
        .iter()
        .find(|f| f.group == "prepare" && f.subject == format!("step {step}"))
        .unwrap_or_else(|| panic!("no prepare finding for {step}\n{}", listing(findings)));
    assert!(
        f.message.contains(check_says),
        "check says {step}: {:?}, want {check_says:?}",
        f.message
    );
    assert!(
        log.contains(&format!("step {step} {run_says}")),
        "run did not log `step {step} {run_says}`\n{log}"
    );
}

#[test]
fn a_data_dir_owned_by_another_user_is_refused_by_both() {
    let mut env = TestEnv::new("agree_foreign");
    let (nu, ng) = util::cli::nobody();
    fs::create_dir(&env.data).unwrap();
    std::os::unix::fs::chown(&env.data, Some(nu), Some(ng)).unwrap();
    both_refuse(&mut env, "data_dir", "`run` refuses to take it over");
    assert!(!env.user_exists(), "run created the user before refusing");
}

#[test]
fn a_symlink_in_the_layout_is_refused_by_both() {
    let mut env = TestEnv::new("agree_symlink");
    let (uid, gid) = create_service_account(&env);
    fs::create_dir(&env.data).unwrap();
    std::os::unix::fs::chown(&env.data, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::symlink("/etc", env.data.join("static")).unwrap();
    both_refuse(&mut env, "data_dir", "is a symbolic link");
}

#[test]
fn an_exposed_secret_file_is_refused_by_both() {
    let mut env = TestEnv::new("agree_secret");
    let key = env.dir.join("secret-key");
    write_file(
        &key,
        b"a-secret-key-that-is-long-enough-for-django-xyz\n",
        0o644,
    );
    env.config
        .set("secrets", "BITPOLL_SECRET_KEY", &file_secret(&key));
    both_refuse(&mut env, "secrets", "is readable by every user");
}

#[test]
fn a_fernet_key_over_an_existing_database_is_refused_by_both() {
    let mut env = TestEnv::new("agree_fernet");
    fs::create_dir(&env.data).unwrap();
    fs::set_permissions(&env.data, fs::Permissions::from_mode(0o750)).unwrap();
    write_file(
        &env.data.join("db.sqlite3"),
        b"SQLite format 3\0restored from a backup",
        0o600,
    );
    both_refuse(
        &mut env,
        "secrets",
        "refusing to generate a new Fernet key because the database already exists",
    );
}

#[test]
fn a_missing_account_that_must_be_declared_is_refused_by_both() {
    let mut env = TestEnv::new("agree_account");
    env.config.set("service", "create_user", "false");
    both_refuse(
        &mut env,
        "account",
        "does not exist and service.create_user = false",
    );
}

#[test]
fn an_interpreter_that_is_not_executable_is_refused_by_both() {
    let mut env = TestEnv::new("agree_python");
    let python = env.dir.join("python");
    write_file(&python, b"#!/bin/sh\n", 0o644);
    env.config
        .set_str("app", "python", &python.display().to_string());
    both_refuse(&mut env, "python", "is not an executable file");
}

#[test]
fn a_database_that_is_a_fifo_is_refused_by_both() {
    let mut env = TestEnv::new("agree_fifo");
    fs::create_dir(&env.data).unwrap();
    nix::unistd::mkfifo(
        &env.data.join("db.sqlite3"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    both_refuse(&mut env, "database", "is not a regular file");
}

#[test]
fn catalogs_of_a_read_only_source_are_compiled_into_the_data_dir_by_both_accounts() {
    let mut env = TestEnv::new("agree_catalogs");
    for d in ["locale", "locale/de_DE", "locale/de_DE/LC_MESSAGES"] {
        fs::set_permissions(env.app.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    create_service_account(&env);
    let into = env.data.join("locale");
    let findings = check(&env);
    let f = findings
        .iter()
        .find(|f| f.subject == format!("translations in {}", env.app.display()))
        .expect("a translations finding");
    assert_eq!(f.severity, "info", "{}", listing(&findings));
    assert!(
        f.message
            .contains(&format!("`run` compiles them into {}", into.display())),
        "{}",
        f.message
    );
    let (findings, log) = both_accept(&mut env);
    step_agrees(
        &findings,
        &log,
        "compilemessages",
        "runs at the next start",
        "runs",
    );
    assert!(
        into.join("de_DE/LC_MESSAGES/django.mo").is_file(),
        "no catalog in the data directory\n{log}"
    );
    // The app serves German from the catalogs in the data directory.
    env.launch();
    env.wait_ready(READY);
    let page = env.http_get("/");
    assert!(page.body.contains("Willkommen"), "{}", page.body);
    env.stop();
    let findings = check(&env);
    let f = findings
        .iter()
        .find(|f| f.subject == format!("translations in {}", env.app.display()))
        .unwrap();
    assert_eq!(f.severity, "ok", "{}", listing(&findings));
}

#[test]
fn each_step_decision_of_check_is_what_the_next_start_does() {
    let mut env = TestEnv::new("agree_steps");
    create_service_account(&env);
    // Fresh: every step runs.
    let (findings, log) = both_accept(&mut env);
    for step in STEPS {
        step_agrees(
            &findings,
            &log,
            step,
            "runs at the next start: no record",
            "runs: no record",
        );
    }
    // Warm: every step is skipped.
    let (findings, log) = both_accept(&mut env);
    for step in STEPS {
        step_agrees(
            &findings,
            &log,
            step,
            "skipped: nothing changed",
            "skipped: nothing changed",
        );
    }
    // The database emptied in place (same file, same inode): migrate runs again, and the
    // app serves afterwards.
    let db = env.data.join("db.sqlite3");
    let conn = fs::OpenOptions::new().write(true).open(&db).unwrap();
    conn.set_len(0).unwrap();
    drop(conn);
    let (findings, log) = both_accept(&mut env);
    step_agrees(
        &findings,
        &log,
        "migrate",
        "runs at the next start: the database lacks",
        "runs: the database lacks",
    );
    step_agrees(&findings, &log, "collectstatic", "skipped", "skipped");
    // A changed [environment] value: every step runs, and both name the variable.
    env.config
        .set_str("environment", "BITPOLL_SITE_NAME", "Agreeing Bitpoll");
    let (findings, log) = both_accept(&mut env);
    for step in STEPS {
        step_agrees(&findings, &log, step, "$BITPOLL_SITE_NAME", "runs: the app");
    }
    assert!(log.contains("$BITPOLL_SITE_NAME"), "{log}");
}
