//! `check`, `manage` and `run` judge with the same code (launcher_plan::judge::start): for
//! each rule, one real setup, `check --json` first, then `manage`, then `run`, and the
//! three must agree. Where check reports an error, manage and run refuse with exit status
//! 3 and the same words, before anything is changed; where check reports none, run serves
//! and manage runs its command. For each preparation step, what check says the next start
//! does is what run then does. (The "both" in the names below is check and run; manage
//! joins them in every case.)
//!
//! Root only, one test at a time (the global lock of tests/util):
//!
//!     cargo test --test suite agree:: -- --test-threads=1

use crate::util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use util::cli::{Run, config_arg, create_service_account, manage, run_launcher, sync_config};
use util::{TestEnv, fernet_key, file_secret, write_file};

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
    // Errors of the judgements; the app probe's own findings (check only) are not run's.
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity == "error" && !f.subject.starts_with("encrypted data ("))
        .collect();
    assert!(
        errors
            .iter()
            .any(|f| f.group == group && f.message.contains(message)),
        "check reports no {group} error containing {message:?}\n{}",
        listing(&findings)
    );
    let user_before = env.user_exists();
    let out = manage(env, &["check"]);
    assert_eq!(out.code, 3, "manage does not refuse\n{}", out.context());
    for e in &errors {
        assert!(
            out.stderr.contains(&e.subject) && out.stderr.contains(&e.message),
            "manage does not say what check said: {}: {}\n{}",
            e.subject,
            e.message,
            out.context()
        );
    }
    assert_eq!(env.user_exists(), user_before, "manage changed the account");
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
    let out = manage(env, &["showmigrations", "poll"]);
    assert_eq!(
        out.code,
        0,
        "manage refuses what run accepted\n{}",
        out.context()
    );
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
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_foreign");
    let (nu, ng) = util::cli::nobody();
    fs::create_dir(&env.data).unwrap();
    std::os::unix::fs::chown(&env.data, Some(nu), Some(ng)).unwrap();
    both_refuse(&mut env, "data_dir", "`run` refuses to take it over");
    assert!(!env.user_exists(), "run created the user before refusing");
}

#[test]
fn a_data_dir_below_a_directory_others_can_write_is_refused_by_both() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_pub_parent");
    let public = env.dir.join("pub");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o777)).unwrap();
    let data = public.join("bitpoll");
    env.config
        .set_str("service", "data_dir", &data.display().to_string());
    both_refuse(
        &mut env,
        "data_dir",
        "on the way to the data directory is writable by every user (mode 0777) without the sticky bit",
    );
    assert!(!data.exists(), "run created the data directory");
}

#[test]
fn an_app_source_others_can_change_is_refused_by_both() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_pub_source");
    fs::set_permissions(&env.app, fs::Permissions::from_mode(0o777)).unwrap();
    both_refuse(
        &mut env,
        "app",
        "is writable by every user (mode 0777) without the sticky bit",
    );
}

#[test]
fn a_symlink_in_the_layout_is_refused_by_both() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_symlink");
    let (uid, gid) = create_service_account(&env);
    fs::create_dir(&env.data).unwrap();
    std::os::unix::fs::chown(&env.data, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::symlink("/etc", env.data.join("static")).unwrap();
    both_refuse(&mut env, "data_dir", "is a symbolic link");
}

#[test]
fn an_exposed_secret_file_is_refused_by_both() {
    crate::util::root_only!();
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
    crate::util::root_only!();
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
    crate::util::root_only!();
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
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_python");
    let python = env.dir.join("python");
    write_file(&python, b"#!/bin/sh\n", 0o644);
    env.config
        .set_str("app", "python", &python.display().to_string());
    both_refuse(&mut env, "python", "is not an executable file");
}

#[test]
fn a_database_that_is_a_fifo_is_refused_by_both() {
    crate::util::root_only!();
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
    crate::util::root_only!();
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
    crate::util::root_only!();
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

#[test]
fn a_service_user_in_a_privileged_group_is_refused_by_both() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_group");
    create_service_account(&env);
    let status = std::process::Command::new("/usr/sbin/usermod")
        .args(["-aG", "adm", &env.user])
        .status()
        .unwrap();
    assert!(status.success(), "usermod -aG adm");
    both_refuse(
        &mut env,
        "account",
        "is a member of the privileged group(s) adm",
    );
}

#[test]
fn a_persons_login_account_is_refused_by_both_unless_the_config_allows_it() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_login");
    // A regular (non-system) account with a login shell, as useradd makes for a person.
    let status = std::process::Command::new("/usr/sbin/useradd")
        .args(["--shell", "/bin/bash", "--no-create-home", "--home-dir"])
        .arg(&env.data)
        .arg(&env.user)
        .status()
        .unwrap();
    assert!(status.success(), "useradd");
    both_refuse(&mut env, "account", "looks like a person's account");
    env.config.set("service", "allow_login_account", "true");
    both_accept(&mut env);
}

#[test]
fn a_nearly_full_file_system_is_refused_by_both() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_full");
    let mount = env.dir.join("small");
    fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs");
    let _unmount = Unmount(mount.clone());
    let data = mount.join("data");
    env.config
        .set_str("service", "data_dir", &data.display().to_string());
    both_refuse(&mut env, "data_dir", "MiB free");
    assert!(
        !data.exists(),
        "run created the data directory on a full file system"
    );
}

/// Unmounts when the test ends, also when it fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_data_dir_in_a_system_tree_is_refused_by_both_before_anything_is_touched() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_system_dir");
    env.config
        .set_str("service", "data_dir", "/usr/local/bitpoll-launcher-test");
    let findings = check(&env);
    assert!(
        findings.iter().any(|f| f.severity == "error"
            && f.group == "config"
            && f.message.contains("inside the system tree /usr")),
        "{}",
        listing(&findings)
    );
    env.launch();
    env.expect_failure(2, &["inside the system tree /usr"], FAIL_FAST);
    assert!(!std::path::Path::new("/usr/local/bitpoll-launcher-test").exists());
    assert!(!env.user_exists());
}

#[test]
fn a_changed_field_encryption_key_over_encrypted_data_is_refused_by_both_and_a_rotation_accepted() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_fek");
    let fek = env.dir.join("field-encryption-key");
    let old = fernet_key();
    write_file(&fek, format!("{old}\n").as_bytes(), 0o600);
    env.config.set(
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY",
        &file_secret(&fek),
    );
    create_service_account(&env);
    both_accept(&mut env);
    let store = "from bitpoll.poll.models import CalendarLink\n\
        CalendarLink.objects.create(name='cal', url='https://calendar.example/private')\n";
    let out = manage(&env, &["shell", "-c", store]);
    assert_eq!(out.code, 0, "{}", out.context());

    // Another valid key: run refuses, check says so, also from the stored value itself.
    let new = fernet_key();
    write_file(&fek, format!("{new}\n").as_bytes(), 0o600);
    let findings = check(&env);
    assert!(
        findings.iter().any(|f| f.severity == "error"
            && f.subject == "encrypted data (poll.CalendarLink.url)"),
        "{}",
        listing(&findings)
    );
    both_refuse(
        &mut env,
        "secrets",
        "none of its keys is the one that encrypted the existing data",
    );

    // Rotation: the new key first, the old one after. Both accept, the data reads.
    write_file(&fek, format!("{new},{old}\n").as_bytes(), 0o600);
    both_accept(&mut env);
    let show = "from bitpoll.poll.models import CalendarLink\n\
        print('url', CalendarLink.objects.get(name='cal').url)\n";
    let out = manage(&env, &["shell", "-c", show]);
    assert!(
        out.stdout.contains("url https://calendar.example/private"),
        "{}",
        out.context()
    );
    // The old key back alone is still a key that encrypted the data.
    write_file(&fek, format!("{old}\n").as_bytes(), 0o600);
    both_accept(&mut env);
}

/// A config laid out as NixOS does it: /etc/bitpoll/launcher.toml is a link to
/// /etc/static/..., which leads into a store directory that is sticky and group-writable
/// (1775 root:nixbld) holding a root-owned 0444 file. Both commands accept it; the same
/// chain with the store file owned by someone else is refused by both.
#[test]
fn a_nixos_shaped_config_chain_is_trusted_by_both_and_a_foreign_store_file_is_not() {
    crate::util::root_only!();
    let mut env = TestEnv::new("agree_nixos");
    let root = env.dir.join("nixos");
    let store = root.join("nix/store");
    fs::create_dir_all(&store).unwrap();
    fs::create_dir_all(root.join("etc-static/bitpoll")).unwrap();
    fs::create_dir_all(root.join("etc/bitpoll")).unwrap();
    let (_, nogroup) = util::cli::nobody();
    std::os::unix::fs::chown(&store, Some(0), Some(nogroup)).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o1775)).unwrap();
    let object = store.join("0123456789abcdef-launcher.toml");
    write_file(&object, env.config.render().as_bytes(), 0o444);
    let static_link = root.join("etc-static/bitpoll/launcher.toml");
    std::os::unix::fs::symlink(&object, &static_link).unwrap();
    let config = root.join("etc/bitpoll/launcher.toml");
    std::os::unix::fs::symlink(&static_link, &config).unwrap();

    let run_check = |env: &TestEnv| {
        let out = run_launcher(
            env,
            &Run::new(&["check", "--config", &config.display().to_string(), "--json"]),
        );
        let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["group"] == "config" && f["severity"] == "error")
            .map(|f| f["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(run_check(&env), Vec::<String>::new());
    env.launch_with(util::Launch::default().config(&config));
    env.wait_ready(READY);
    assert_eq!(env.http_get("/").status, 200);
    env.stop();

    // A store object still owned by a build user: refused by both, nothing read.
    let (nobody_uid, _) = util::cli::nobody();
    std::os::unix::fs::lchown(&object, Some(nobody_uid), None).unwrap();
    let errors = run_check(&env);
    assert!(
        errors.iter().any(|m| m.contains("owned by")),
        "check accepted a store file owned by uid {nobody_uid}: {errors:?}"
    );
    env.launch_with(util::Launch::default().config(&config));
    env.expect_failure(2, &["cannot read config file", "owned by"], FAIL_FAST);
}
