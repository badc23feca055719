//! End-to-end tests of `bitpoll-launcher check`: the real binary, run against real broken
//! setups (a real file with mode 0644, a real missing user, a real unimportable settings
//! module, a real port held by another process...), checking each finding's group,
//! subject, severity and text in the `--json` output, the human output and the exit status
//! (docs/check.md). The tests of `manage` are in tests/manage.rs.
//!
//! They need root (they create users and run check as other users) and run one at a time
//! (each test takes the global lock of tests/util):
//!
//!     cargo test --test suite check:: -- --test-threads=1
//!
//! Every test removes the users, groups, processes and files it made, also when it fails.

use crate::util;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use util::cli::{
    Output, READY, Run, config_arg, create_account, create_service_account, generated_value,
    launch_once, manage, nobody, run_launcher, setpriv_as, sync_config, uid_gid,
};
use util::{
    GUNICORN, LAUNCHER, PATH, PYTHON, TestEnv, contains, fernet_key, file_secret, sha256_hex,
    toml_str, write_file,
};

/// The allowed values of `findings[].group` (docs/check.md).
const GROUPS: &[&str] = &[
    "config", "check", "account", "data_dir", "secrets", "python", "app", "prepare", "database",
    "server", "systemd",
];

/// Django's warnings about HTTPS settings, which a test host served over plain HTTP accepts.
const HTTP_ONLY: &str = "[\"django:security.W004\", \"django:security.W008\", \"django:security.W012\", \"django:security.W016\"]";

/// The finding ids docs/check.md lists (`| `group.name` | ...` rows of its id table).
fn documented_ids() -> Vec<String> {
    let text = include_str!("../docs/check.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(id, _)| id.to_string())
        .filter(|id| launcher_config::is_finding_id(id))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Running check
// ---------------------------------------------------------------------------------------

/// `check --config F [extra]` as root, human output.
fn check_human(env: &TestEnv, extra: &[&str]) -> Output {
    sync_config(env);
    let mut args = vec!["check".to_string(), "--config".into(), config_arg(env)];
    args.extend(extra.iter().map(|s| s.to_string()));
    run_launcher(env, &Run::new(&args))
}

/// The parsed result of `check --json`.
struct Report {
    out: Output,
    doc: Value,
    findings: Vec<Finding>,
}

#[derive(Debug, Clone)]
struct Finding {
    id: String,
    severity: String,
    accepted: bool,
    group: String,
    subject: String,
    message: String,
    fix: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<7} [{}] {}: {} [{}{}]",
            self.severity,
            self.group,
            self.subject,
            self.message,
            self.id,
            if self.accepted { ", accepted" } else { "" }
        )?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

impl Report {
    fn listing(&self) -> String {
        let mut s = format!("exit {}; findings:\n", self.out.code);
        for f in &self.findings {
            s.push_str(&format!("  {f}\n"));
        }
        if !self.out.stderr.trim().is_empty() {
            s.push_str(&format!("--- stderr ---\n{}\n", self.out.stderr));
        }
        s
    }

    fn code(&self) -> i32 {
        self.out.code
    }

    /// The findings with this id.
    fn by_id(&self, id: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.id == id).collect()
    }

    /// Findings of `group` whose subject contains `subject`.
    fn matching(&self, group: &str, subject: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.group == group && f.subject.contains(subject))
            .collect()
    }

    /// The one finding of `group` whose subject contains `subject` and whose message
    /// contains `message`; asserts its severity.
    fn expect(&self, severity: &str, group: &str, subject: &str, message: &str) -> &Finding {
        self.expect_where(severity, group, |s| s.contains(subject), subject, message)
    }

    /// Like [`Report::expect`], for a subject that must be exactly `subject`.
    fn expect_exact(&self, severity: &str, group: &str, subject: &str, message: &str) -> &Finding {
        self.expect_where(severity, group, |s| s == subject, subject, message)
    }

    fn expect_where(
        &self,
        severity: &str,
        group: &str,
        subject_matches: impl Fn(&str) -> bool,
        subject: &str,
        message: &str,
    ) -> &Finding {
        let found: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.group == group && subject_matches(&f.subject))
            .filter(|f| f.message.contains(message))
            .collect();
        assert!(
            !found.is_empty(),
            "no finding in group {group:?} with subject {subject:?} and message containing {message:?}\n{}",
            self.listing()
        );
        assert_eq!(
            found.len(),
            1,
            "more than one finding {group:?}/{subject:?}/{message:?}\n{}",
            self.listing()
        );
        let f = found[0];
        assert_eq!(f.severity, severity, "severity of {f}\n{}", self.listing());
        f
    }

    fn absent(&self, group: &str, subject: &str, why: &str) {
        let found = self.matching(group, subject);
        assert!(
            found.is_empty(),
            "{why}: unexpected finding(s) {group:?}/{subject:?}\n{}",
            self.listing()
        );
    }

    fn count(&self, severity: &str) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(self.code(), code, "exit status\n{}", self.listing());
    }
}

/// Run `check --json` and validate the document against the schema of docs/check.md.
fn check_json_run(env: &TestEnv, run: Run) -> Report {
    let config = config_arg(env);
    let out = run_launcher(env, &run);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON document ({e})\n{}",
            out.context()
        )
    });
    // The schema.
    assert_eq!(doc["version"], 1, "version\n{}", out.context());
    assert_eq!(doc["config"], config.as_str(), "config\n{}", out.context());
    assert!(
        doc["checked_as_uid"].is_u64(),
        "checked_as_uid\n{}",
        out.context()
    );
    let list = doc["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("findings is not an array\n{}", out.context()));
    let mut findings = Vec::new();
    for f in list {
        let obj = f.as_object().expect("a finding is an object");
        for key in obj.keys() {
            assert!(
                [
                    "id", "severity", "accepted", "group", "subject", "message", "fix"
                ]
                .contains(&key.as_str()),
                "undocumented field {key} in {f}"
            );
        }
        let s = |k: &str| -> String {
            f[k].as_str()
                .unwrap_or_else(|| panic!("{k} of {f} is not a string"))
                .to_string()
        };
        let finding = Finding {
            id: s("id"),
            severity: s("severity"),
            accepted: f["accepted"]
                .as_bool()
                .unwrap_or_else(|| panic!("accepted of {f} is not a boolean")),
            group: s("group"),
            subject: s("subject"),
            message: s("message"),
            fix: f
                .get("fix")
                .map(|v| v.as_str().expect("fix is a string").to_string()),
        };
        assert!(
            ["ok", "info", "warning", "error"].contains(&finding.severity.as_str()),
            "severity of {finding}"
        );
        assert!(
            GROUPS.contains(&finding.group.as_str()),
            "undocumented group in {finding}"
        );
        assert_eq!(
            finding.fix.is_some(),
            finding.severity == "warning" || finding.severity == "error" || finding.accepted,
            "`fix` is present exactly on warnings, errors and accepted warnings: {finding}"
        );
        assert!(
            !finding.accepted || finding.severity == "info",
            "an accepted finding is info: {finding}"
        );
        // Every id is documented (a Django id under its prefix).
        let documented =
            finding.id.starts_with("django:") || documented_ids().contains(&finding.id);
        assert!(documented, "id not listed in docs/check.md: {finding}");
        assert!(!finding.message.is_empty(), "empty message: {finding}");
        findings.push(finding);
    }
    let report = Report { out, doc, findings };
    let summary = report.doc["summary"]
        .as_object()
        .unwrap_or_else(|| panic!("summary is not an object\n{}", report.listing()));
    assert_eq!(summary.len(), 4, "summary keys\n{}", report.listing());
    for sev in ["ok", "info", "warning", "error"] {
        assert_eq!(
            summary[sev].as_u64(),
            Some(report.count(sev) as u64),
            "summary.{sev}\n{}",
            report.listing()
        );
    }
    // The exit status follows the worst severity.
    let expected = if report.count("error") > 0 {
        2
    } else if report.count("warning") > 0 {
        1
    } else {
        0
    };
    assert_eq!(
        report.code(),
        expected,
        "exit status vs. findings\n{}",
        report.listing()
    );
    report
}

/// `check --json --config F [extra]` as root.
fn check_json(env: &TestEnv, extra: &[&str]) -> Report {
    sync_config(env);
    let mut args = vec![
        "check".to_string(),
        "--json".into(),
        "--config".into(),
        config_arg(env),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    check_json_run(env, Run::new(&args))
}

fn check_args(env: &TestEnv) -> Vec<String> {
    vec![
        "check".into(),
        "--json".into(),
        "--config".into(),
        config_arg(env),
    ]
}

// ---------------------------------------------------------------------------------------
// Setting up worlds
// ---------------------------------------------------------------------------------------

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    chmod(path, mode);
}

/// 16 random hex digits: a marker no output contains by chance.
fn token() -> String {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// The "check writes nothing" snapshot
// ---------------------------------------------------------------------------------------

/// What a file system entry looks like, without its access time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// sha256 of a file's content, a link's target.
    content: Option<String>,
}

/// Every entry below `root` (and `root` itself), by relative path. Never follows links.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let m =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = m.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                "symlink",
                Some(fs::read_link(&path).unwrap().display().to_string()),
            )
        } else if ft.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            ("dir", None)
        } else if ft.is_file() {
            ("file", Some(sha256_hex(&fs::read(&path).unwrap())))
        } else {
            ("other", None)
        };
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            Entry {
                kind,
                size: m.len(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                ino: m.ino(),
                nlink: m.nlink(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                content,
            },
        );
    }
    out
}

fn assert_same_tree(
    before: &BTreeMap<PathBuf, Entry>,
    after: &BTreeMap<PathBuf, Entry>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (p, e) in before {
        match after.get(p) {
            None => diffs.push(format!("removed: {}", p.display())),
            Some(a) if a != e => diffs.push(format!(
                "changed: {}\n    before {e:?}\n    after  {a:?}",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("created: {}", p.display()));
    }
    assert!(
        diffs.is_empty(),
        "check changed the tree ({what}):\n{}",
        diffs.join("\n")
    );
}

fn pycache_dirs(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| p.file_name().is_some_and(|n| n == "__pycache__"))
        .collect()
}

/// Every line of the human output is a group header ("name:"), a finding ("  severity
/// subject: message"), a fix ("          fix: ...") or the summary (last).
fn assert_human_well_formed(out: &Output) {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (summary, body) = lines.split_last().expect("some output");
    assert!(
        summary.ends_with(" ok") && summary.contains(" error(s), "),
        "the summary is last\n{}",
        out.context()
    );
    for line in body {
        let header =
            !line.starts_with(' ') && line.strip_suffix(':').is_some_and(|g| GROUPS.contains(&g));
        let finding = ["ok", "info", "warning", "error"]
            .iter()
            .any(|sev| line.starts_with(&format!("  {sev:<7} ")))
            && line.ends_with(']');
        let fix = line.starts_with("          fix: ");
        assert!(
            header || finding || fix,
            "not one line per finding: {line:?}\n{}",
            out.context()
        );
    }
}

// =======================================================================================
// config
// =======================================================================================

#[test]
fn config_problems_are_all_reported_at_once_with_their_key_paths() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_config");
    env.config
        .set("service", "create_usr", "true") // unknown key
        .set("prepare", "migrate", "\"yes\"") // wrong type
        .remove("app", "python") // missing required key
        .set(
            "secrets",
            "BITPOLL_SECRET_KEY",
            r#"{ file = "/etc/bitpoll/key", generate = "django-secret-key" }"#,
        ) // conflicting sources
        .set_str("app", "source_dir", "app"); // relative path
    let r = check_json(&env, &[]);
    r.assert_code(2);

    let f = r.expect_exact("error", "config", "service.create_usr", "unknown key");
    assert_eq!(
        f.fix.as_deref(),
        Some("did you mean `create_user`?"),
        "did-you-mean\n{}",
        r.listing()
    );
    let f = r.expect_exact(
        "error",
        "config",
        "prepare.migrate",
        "must be true or false, not a string",
    );
    assert!(f.fix.as_deref().unwrap().contains("without quotes"), "{f}");
    let f = r.expect_exact("error", "config", "app.python", "is missing");
    assert!(f.fix.as_deref().unwrap().contains("python"), "{f}");
    r.expect_exact(
        "error",
        "config",
        "secrets.BITPOLL_SECRET_KEY",
        "has 2 sources (file, generate)",
    );
    let f = r.expect_exact(
        "error",
        "config",
        "app.source_dir",
        "\"app\" is not an absolute path",
    );
    assert!(f.fix.as_deref().unwrap().contains("full path"), "{f}");
    assert_eq!(
        r.count("error"),
        5,
        "exactly the five problems\n{}",
        r.listing()
    );
    assert!(
        r.findings.iter().all(|f| f.group == "config"),
        "nothing but config is checked with an invalid config\n{}",
        r.listing()
    );

    // The same in the human output: every problem, then the summary.
    let h = check_human(&env, &[]);
    assert_eq!(h.code, 2, "{}", h.context());
    for needle in [
        "config:\n",
        "  error   service.create_usr: unknown key [config.invalid]\n          fix: did you mean `create_user`?",
        "  error   prepare.migrate: must be true or false",
        "  error   app.python: is missing",
        "  error   secrets.BITPOLL_SECRET_KEY: has 2 sources",
        "  error   app.source_dir: \"app\" is not an absolute path",
        "5 error(s), 0 warning(s), 0 info, 0 ok\n",
    ] {
        assert!(
            h.stdout.contains(needle),
            "lacks {needle:?}\n{}",
            h.context()
        );
    }

    // Invalid TOML: one error about the file itself.
    env.raw_config = Some("[service\nuser = 1\n".into());
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect_exact("error", "config", &config_arg(&env), "invalid TOML");

    // A config file that cannot be read.
    let missing = env.dir.join("no-such.toml").display().to_string();
    let out = run_launcher(
        &env,
        &Run::new(&["check", "--json", "--config", missing.as_str()]),
    );
    assert_eq!(out.code, 2, "{}", out.context());
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let f = &doc["findings"][0];
    assert_eq!(f["subject"], missing.as_str(), "{doc}");
    assert_eq!(f["severity"], "error", "{doc}");
    assert!(
        f["message"].as_str().unwrap().contains("cannot read"),
        "{doc}"
    );
}

// =======================================================================================
// account
// =======================================================================================

#[test]
fn a_missing_user_is_an_error_without_create_user_and_info_with_it() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_account_missing");
    env.config.set("service", "create_user", "false");
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let user = format!("user {}", env.user);
    let group = format!("group {}", env.user);
    for subject in [&user, &group] {
        let f = r.expect_exact(
            "error",
            "account",
            subject,
            "does not exist and service.create_user = false",
        );
        let fix = f.fix.as_deref().unwrap();
        assert!(
            fix.contains("bitpoll-launcher sysusers") && fix.contains("systemd-sysusers"),
            "the sysusers hint: {f}"
        );
        assert!(fix.contains("users.users"), "the NixOS hint: {f}");
    }
    r.expect_exact(
        "info",
        "app",
        "probe",
        "the service account does not exist yet",
    );

    env.config.set("service", "create_user", "true");
    env.config.set("check", "accept", HTTP_ONLY);
    let r = check_json(&env, &[]);
    r.assert_code(0);
    r.expect_exact(
        "info",
        "account",
        &user,
        "does not exist yet; `run` creates it as a system user",
    );
    r.expect_exact(
        "info",
        "account",
        &group,
        "does not exist yet; `run` creates it",
    );
    assert!(!env.user_exists(), "check created the user");
}

#[test]
fn a_missing_user_that_cannot_be_created_because_etc_is_read_only_is_an_error() {
    crate::util::root_only!();
    let env = TestEnv::new("check_account_ro_etc");
    sync_config(&env);
    let run = Run::new(&check_args(&env)).wrap(util::READ_ONLY_ETC);
    let r = check_json_run(&env, run);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "account",
        &format!("user {}", env.user),
        "/etc is read-only",
    );
    assert!(f.fix.as_deref().unwrap().contains("sysusers"), "{f}");
}

#[test]
fn an_existing_user_with_a_login_shell_and_another_home_is_warned_about() {
    crate::util::root_only!();
    let env = TestEnv::new("check_account_shell_home");
    let home = env.dir.join("elsewhere");
    let (uid, gid) = create_account(&env, &home, "/bin/bash");
    let r = check_json(&env, &[]);
    let user = format!("user {}", env.user);
    r.expect_exact(
        "ok",
        "account",
        &user,
        &format!("exists (uid {uid}, primary gid {gid})"),
    );
    r.expect_exact(
        "ok",
        "account",
        &format!("group {}", env.user),
        &format!("exists (gid {gid})"),
    );
    let f = r.expect_exact("warning", "account", &user, "has a login shell (/bin/bash)");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("usermod -s /usr/sbin/nologin"),
        "{f}"
    );
    let f = r.expect_exact(
        "warning",
        "account",
        &user,
        &format!(
            "home is {}, not the data directory {}",
            home.display(),
            env.data.display()
        ),
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains(&format!("usermod -d {}", env.data.display())),
        "{f}"
    );
    assert!(r.code() >= 1, "{}", r.listing());
}

// =======================================================================================
// data_dir
// =======================================================================================

#[test]
fn data_dir_missing_or_without_parent() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_data_dir_missing");
    env.config.set("check", "accept", HTTP_ONLY);
    let r = check_json(&env, &[]);
    r.expect_exact(
        "info",
        "data_dir",
        &env.data.display().to_string(),
        "does not exist yet; `run` creates it (0750)",
    );
    r.expect(
        "ok",
        "data_dir",
        &format!("free space at {}", env.dir.display()),
        "MiB free",
    );
    r.assert_code(0);
    assert!(!env.data.exists(), "check created the data directory");

    // A file where the data directory should be.
    write_file(&env.data, b"not a directory\n", 0o644);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect_exact(
        "error",
        "data_dir",
        &env.data.display().to_string(),
        "is not a directory",
    );
    fs::remove_file(&env.data).unwrap();

    let data = env.dir.join("no-parent/data");
    env.config
        .set_str("service", "data_dir", &data.display().to_string());
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "data_dir",
        &data.display().to_string(),
        &format!(
            "its parent {} does not exist",
            env.dir.join("no-parent").display()
        ),
    );
    assert!(
        f.fix.as_deref().unwrap().contains("service.data_dir"),
        "{f}"
    );
    assert!(
        !env.dir.join("no-parent").exists(),
        "check created the parent"
    );
}

#[test]
fn data_dir_owned_by_another_user_is_an_error_and_not_looked_into() {
    crate::util::root_only!();
    let env = TestEnv::new("check_data_dir_foreign");
    let (nu, ng) = nobody();
    mkdir(&env.data, 0o750);
    mkdir(&env.data.join("secrets"), 0o777);
    chown(&env.data, nu, ng);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "data_dir",
        &env.data.display().to_string(),
        &format!(
            "is owned by nobody, not {}; `run` refuses to take it over",
            env.user
        ),
    );
    assert!(f.fix.as_deref().unwrap().contains("chown -R"), "{f}");
}

#[test]
fn data_dir_owned_by_root_or_with_a_wrong_mode_is_info_because_run_fixes_it() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_data_dir_root_mode");
    env.config.set("check", "accept", HTTP_ONLY);
    mkdir(&env.data, 0o755);
    let r = check_json(&env, &[]);
    r.assert_code(0);
    r.expect_exact(
        "info",
        "data_dir",
        &env.data.display().to_string(),
        &format!(
            "owned by root; `run` gives it to {}; mode 0755; `run` sets 0750",
            env.user
        ),
    );
    // The subdirectories do not exist yet: each is created by run.
    for sub in ["static", "media", "state", "secrets"] {
        r.expect_exact(
            "info",
            "data_dir",
            &env.data.join(sub).display().to_string(),
            "does not exist yet; `run` creates it",
        );
    }

    // Owned by the service user, only the mode is wrong.
    let (uid, gid) = create_service_account(&env);
    chown(&env.data, uid, gid);
    let r = check_json(&env, &[]);
    let f = r.expect_exact(
        "info",
        "data_dir",
        &env.data.display().to_string(),
        "mode 0755; `run` sets 0750",
    );
    assert!(!f.message.contains("root"), "{f}");
    assert_eq!(
        fs::metadata(&env.data).unwrap().mode() & 0o7777,
        0o755,
        "check changed the mode"
    );
}

#[test]
fn a_symlink_planted_in_the_data_dir_is_an_error_and_never_followed() {
    crate::util::root_only!();
    let env = TestEnv::new("check_data_dir_symlink");
    let (uid, gid) = create_service_account(&env);
    mkdir(&env.data, 0o750);
    chown(&env.data, uid, gid);
    let link = env.data.join("static");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let etc_before = snapshot_shallow(Path::new("/etc"));
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "data_dir",
        &link.display().to_string(),
        "is a symbolic link; the launcher refuses to follow links here",
    );
    assert!(f.fix.as_deref().unwrap().contains("real directory"), "{f}");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/etc"));
    assert_eq!(
        snapshot_shallow(Path::new("/etc")),
        etc_before,
        "/etc changed"
    );
    // Nothing was reported about what lies behind the link: no write probe, no
    // manifest looked up through it.
    let behind: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| {
            f.subject.contains(&format!("{}/", link.display()))
                || f.message.contains(&format!("{}/", link.display()))
                || f.subject == format!("write access to {}", link.display())
        })
        .collect();
    assert!(
        behind.is_empty(),
        "check looked through the planted link {} -> /etc: {:?}\n{}",
        link.display(),
        behind.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        r.listing()
    );
}

/// Names, types and mtimes of a directory's entries (not recursive).
fn snapshot_shallow(dir: &Path) -> BTreeMap<String, (u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let m = fs::symlink_metadata(dir).unwrap();
    out.insert(".".into(), (m.mode(), m.mtime(), m.mtime_nsec()));
    for e in fs::read_dir(dir).unwrap().flatten() {
        if let Ok(m) = fs::symlink_metadata(e.path()) {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                (m.mode(), m.mtime(), m.mtime_nsec()),
            );
        }
    }
    out
}

#[test]
fn little_free_disk_space_is_a_warning_and_almost_none_an_error() {
    crate::util::root_only!();
    // The data directory's parent on a small tmpfs, mounted in a private mount namespace
    // of the check only.
    let mut env = TestEnv::new("check_disk");
    let mnt = env.dir.join("small");
    mkdir(&mnt, 0o755);
    let data = mnt.join("data");
    env.config
        .set_str("service", "data_dir", &data.display().to_string());
    sync_config(&env);
    let subject = format!("free space at {}", mnt.display());
    let on_tmpfs = |size: &str| {
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs {} && exec \"$0\" \"$@\"",
            mnt.display()
        );
        Run::new(&check_args(&env)).wrap(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script.as_str(),
        ])
    };
    let r = check_json_run(&env, on_tmpfs("16m"));
    r.assert_code(2);
    let f = r.expect_exact("error", "data_dir", &subject, "16 MiB free");
    assert!(f.fix.as_deref().unwrap().contains("free disk space"), "{f}");
    let r = check_json_run(&env, on_tmpfs("100m"));
    r.assert_code(1);
    r.expect_exact("warning", "data_dir", &subject, "only 100 MiB free");
}

// =======================================================================================
// secrets
// =======================================================================================

#[test]
fn broken_secret_files_are_errors_and_values_are_never_printed() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_secrets");
    let t = token();
    let keys = env.dir.join("keys");
    mkdir(&keys, 0o755);
    let value = |what: &str| format!("v{t}-{what}");
    let world = keys.join("world");
    write_file(&world, value("world").as_bytes(), 0o644);
    let world_w = keys.join("world-writable");
    write_file(&world_w, value("ww").as_bytes(), 0o602);
    let empty = keys.join("empty");
    write_file(&empty, b"\n", 0o600);
    let big = keys.join("big");
    write_file(&big, value("big").repeat(5000).as_bytes(), 0o600);
    assert!(fs::metadata(&big).unwrap().len() > 64 * 1024);
    let latin1 = keys.join("latin1");
    let mut bytes = value("latin1").into_bytes();
    bytes.extend_from_slice(b"\xe9\xff");
    write_file(&latin1, &bytes, 0o600);
    let nul = keys.join("nul");
    let mut bytes = value("nul").into_bytes();
    bytes.extend_from_slice(b"\0tail");
    write_file(&nul, &bytes, 0o600);
    let sample = keys.join("sample");
    write_file(
        &sample,
        b"this+is+an+example+key+please+generate+one+=\n",
        0o600,
    );
    let good = keys.join("good");
    write_file(&good, format!("{}\n", value("good")).as_bytes(), 0o600);
    let missing = keys.join("missing");

    env.config
        .set("secrets", "BITPOLL_SECRET_KEY", &file_secret(&world))
        .set(
            "secrets",
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            &file_secret(&sample),
        )
        .set("secrets", "CHK_WORLD_WRITABLE", &file_secret(&world_w))
        .set("secrets", "CHK_EMPTY", &file_secret(&empty))
        .set("secrets", "CHK_BIG", &file_secret(&big))
        .set("secrets", "CHK_LATIN1", &file_secret(&latin1))
        .set("secrets", "CHK_NUL", &file_secret(&nul))
        .set("secrets", "CHK_MISSING", &file_secret(&missing))
        .set("secrets", "CHK_GOOD", &file_secret(&good))
        .set(
            "secrets",
            "CHK_GENERATED",
            r#"{ generate = "django-secret-key" }"#,
        )
        .set(
            "secrets",
            "CHK_CREDENTIAL",
            r#"{ credential = "chk-cred" }"#,
        );
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let subject = |name: &str, p: &Path| format!("{name} (file {})", p.display());
    let f = r.expect_exact(
        "error",
        "secrets",
        &subject("BITPOLL_SECRET_KEY", &world),
        "is readable by every user (mode 0644)",
    );
    assert_eq!(
        f.fix.as_deref(),
        Some("chmod 0600 the file (see the message)")
    );
    r.expect_exact(
        "error",
        "secrets",
        &subject("CHK_WORLD_WRITABLE", &world_w),
        "is writable by every user (mode 0602)",
    );
    r.expect_exact(
        "error",
        "secrets",
        &subject("CHK_EMPTY", &empty),
        "is empty",
    );
    r.expect_exact(
        "error",
        "secrets",
        &subject("CHK_BIG", &big),
        "is larger than 65536 bytes",
    );
    r.expect_exact(
        "error",
        "secrets",
        &subject("CHK_LATIN1", &latin1),
        "is not valid UTF-8",
    );
    r.expect_exact(
        "error",
        "secrets",
        &subject("CHK_NUL", &nul),
        "contains a NUL byte",
    );
    let f = r.expect_exact(
        "error",
        "secrets",
        &subject("BITPOLL_FIELD_ENCRYPTION_KEY", &sample),
        "is a publicly known sample value (upstream Bitpoll's sample FIELD_ENCRYPTION_KEY)",
    );
    assert!(
        f.fix.as_deref().unwrap().contains("generate a fresh key"),
        "{f}"
    );
    let f = r.expect_exact(
        "error",
        "secrets",
        &subject("CHK_MISSING", &missing),
        "does not exist",
    );
    assert!(f.fix.as_deref().unwrap().contains("create the file"), "{f}");
    r.expect_exact(
        "ok",
        "secrets",
        &subject("CHK_GOOD", &good),
        &format!(
            "usable: file {}, {} bytes",
            good.display(),
            value("good").len()
        ),
    );
    r.expect_exact(
        "info",
        "secrets",
        "CHK_GENERATED (generate django-secret-key)",
        "not generated yet; the first `run` generates and keeps it",
    );
    r.expect_exact(
        "info",
        "secrets",
        "CHK_CREDENTIAL (credential chk-cred)",
        "not visible outside the running unit",
    );
    assert_eq!(
        r.matching("secrets", "").len(),
        11,
        "one finding per secret\n{}",
        r.listing()
    );

    // No value, in no form, in either output.
    let h = check_human(&env, &[]);
    assert_eq!(h.code, 2, "{}", h.context());
    for out in [&r.out, &h] {
        assert!(
            !contains(&out.raw, t.as_bytes()),
            "a secret value was printed:\n{}",
            out.context()
        );
        assert!(
            !contains(&out.raw, b"this+is+an+example"),
            "the sample key was printed:\n{}",
            out.context()
        );
    }
    for needle in [
        "secrets:\n",
        "is readable by every user (mode 0644)",
        "fix: chmod 0600 the file",
    ] {
        assert!(
            h.stdout.contains(needle),
            "lacks {needle:?}\n{}",
            h.context()
        );
    }
}

#[test]
fn secret_values_are_never_printed_when_everything_loads_and_the_app_is_probed() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_secrets_values");
    let t = token();
    let keys = env.dir.join("keys");
    mkdir(&keys, 0o700);
    let secret_key = keys.join("secret-key");
    // A Django SECRET_KEY that Django's check --deploy would look at (it warns about
    // short or "django-insecure-" keys; this one is neither).
    let secret_value = format!("{t}-{}", "k".repeat(60));
    write_file(&secret_key, secret_value.as_bytes(), 0o600);
    let fek = keys.join("fek");
    let fek_value = fernet_key();
    write_file(&fek, fek_value.as_bytes(), 0o600);
    env.config
        .set("secrets", "BITPOLL_SECRET_KEY", &file_secret(&secret_key))
        .set(
            "secrets",
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            &file_secret(&fek),
        );
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.expect_exact(
        "ok",
        "app",
        "bitpoll.settings",
        "imports and Django starts with the app's environment",
    );
    let h = check_human(&env, &[]);
    for out in [&r.out, &h] {
        for v in [t.as_str(), fek_value.as_str()] {
            assert!(
                !contains(&out.raw, v.as_bytes()),
                "a secret value was printed:\n{}",
                out.context()
            );
        }
    }
}

/// A directory this test creates outside its TestEnv (under /run), removed on drop with
/// every parent it had to create.
struct Planted {
    created: Vec<PathBuf>,
}

impl Planted {
    fn dir(path: &Path) -> Planted {
        let mut missing = Vec::new();
        let mut p = path.to_path_buf();
        while !p.exists() {
            missing.push(p.clone());
            p = p.parent().expect("a parent").to_path_buf();
        }
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        // Outermost last: removed in this order.
        Planted { created: missing }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        if let Some(innermost) = self.created.first() {
            let _ = fs::remove_dir_all(innermost);
        }
        for p in &self.created {
            let _ = fs::remove_dir(p);
        }
    }
}

#[test]
fn credentials_are_read_from_credentials_directory_or_the_running_units_directory() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_credentials");
    let t = token();
    // Inside the unit: $CREDENTIALS_DIRECTORY.
    let creds = env.dir.join("creds");
    mkdir(&creds, 0o700);
    let value = format!("v{t}-credential-{}", "c".repeat(50));
    write_file(&creds.join("secret-key"), value.as_bytes(), 0o400);
    write_file(&creds.join("world"), value.as_bytes(), 0o644);
    env.config
        .set(
            "secrets",
            "BITPOLL_SECRET_KEY",
            r#"{ credential = "secret-key" }"#,
        )
        .set("secrets", "CHK_WORLD", r#"{ credential = "world" }"#);
    sync_config(&env);
    let inside = |run: Run| run.env("CREDENTIALS_DIRECTORY", &creds.display().to_string());
    let r = check_json_run(&env, inside(Run::new(&check_args(&env))));
    r.expect_exact(
        "ok",
        "secrets",
        "BITPOLL_SECRET_KEY (credential secret-key)",
        &format!("usable: credential {}/secret-key", creds.display()),
    );
    r.expect_exact(
        "error",
        "secrets",
        "CHK_WORLD (credential world)",
        "is readable by every user (mode 0644)",
    );
    assert!(!contains(&r.out.raw, t.as_bytes()), "{}", r.listing());

    // Outside the unit, as root: the running unit's /run/credentials/<unit>.service.
    env.config.remove("secrets", "CHK_WORLD");
    let unit = format!("{}-check", env.user);
    let run_creds = PathBuf::from(format!("/run/credentials/{unit}.service"));
    let _planted = Planted::dir(&run_creds);
    chmod(&run_creds, 0o700);
    write_file(&run_creds.join("secret-key"), value.as_bytes(), 0o400);
    let r = check_json(&env, &["--unit", &unit]);
    r.expect_exact(
        "ok",
        "secrets",
        "BITPOLL_SECRET_KEY (credential secret-key)",
        &format!("usable: credential {}/secret-key", run_creds.display()),
    );
    // Without --unit (and not inside a unit): not visible, said as info.
    let r = check_json(&env, &[]);
    r.expect_exact(
        "info",
        "secrets",
        "BITPOLL_SECRET_KEY (credential secret-key)",
        "not visible outside the running unit",
    );

    // manage reads it the same way and hands it to the app.
    launch_once_with_creds(&mut env, &creds);
    sync_config(&env);
    let argv = [
        "manage",
        "--config",
        &config_arg(&env),
        "--unit",
        &unit,
        "--",
        "shell",
        "-c",
        "import os, hashlib; print('sha', hashlib.sha256(os.environ['BITPOLL_SECRET_KEY'].encode()).hexdigest())",
    ];
    let out = run_launcher(&env, &Run::new(&argv));
    assert_eq!(out.code, 0, "{}", out.context());
    assert!(
        out.stdout
            .contains(&format!("sha {}", sha256_hex(value.as_bytes()))),
        "{}",
        out.context()
    );
    // Without --unit the default unit "bitpoll" has no credentials here.
    let out = manage(&env, &["showmigrations"]);
    assert_eq!(out.code, 3, "{}", out.context());
    assert!(
        out.stderr
            .contains("is a systemd credential and the unit bitpoll is not running"),
        "{}",
        out.context()
    );
}

/// Start the service once with $CREDENTIALS_DIRECTORY set (as systemd would).
fn launch_once_with_creds(env: &mut TestEnv, creds: &Path) {
    env.launch_with(
        util::Launch::default().env("CREDENTIALS_DIRECTORY", &creds.display().to_string()),
    );
    env.wait_ready(READY);
    env.stop();
}

#[test]
fn check_help_documents_the_exit_status() {
    let out = Command::new(LAUNCHER)
        .args(["check", "--help"])
        .output()
        .expect("run check --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needle in [
        "Exit status:",
        "0  no problems: only ok and info findings (a warning accepted in check.accept is info)",
        "1  warnings, no errors",
        "2  errors",
        "--json",
        "--unit",
    ] {
        assert!(
            help.contains(needle),
            "check --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn generated_secrets_replaced_by_links_are_errors() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_secret_links");
    launch_once(&mut env);
    let t = token();
    let secrets = env.data.join("secrets");
    // A symbolic link to a private file.
    let elsewhere = env.dir.join("elsewhere");
    write_file(&elsewhere, format!("v{t}-symlinked").as_bytes(), 0o600);
    let sk = secrets.join("BITPOLL_SECRET_KEY");
    fs::remove_file(&sk).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &sk).unwrap();
    // A hard link to a file of someone else (same file system).
    let victim = env.dir.join("victim");
    write_file(&victim, fernet_key().as_bytes(), 0o600);
    let fek = secrets.join("BITPOLL_FIELD_ENCRYPTION_KEY");
    fs::remove_file(&fek).unwrap();
    fs::hard_link(&victim, &fek).unwrap();
    let victim_key = fs::read(&victim).unwrap();

    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect_exact(
        "error",
        "secrets",
        "BITPOLL_SECRET_KEY (generate django-secret-key)",
        "is a symbolic link inside the data directory, which the launcher never follows",
    );
    r.expect_exact(
        "error",
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY (generate fernet-key)",
        "has 2 hard links",
    );
    assert!(!contains(&r.out.raw, t.as_bytes()), "{}", r.listing());
    assert!(!contains(&r.out.raw, &victim_key), "{}", r.listing());
}

#[test]
fn a_fernet_key_to_be_generated_although_the_database_exists_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_fernet_guard");
    create_service_account(&env);
    launch_once(&mut env);
    let generated = env.data.join("secrets/BITPOLL_FIELD_ENCRYPTION_KEY");
    fs::remove_file(&generated).unwrap();
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY (generate fernet-key)",
        "although the database exists",
    );
    assert!(
        f.message.contains("refusing to generate a new Fernet key"),
        "{f}\n{}",
        r.listing()
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .starts_with("restore the key that encrypted the existing data"),
        "{f}"
    );
    // Without the migrate stamp: the database file alone is evidence.
    fs::remove_file(env.stamp("migrate")).unwrap();
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect_exact(
        "error",
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY (generate fernet-key)",
        "db.sqlite3 exists",
    );
    assert!(!generated.exists(), "check generated a key");
}

#[test]
fn a_fernet_key_to_be_generated_next_to_a_restored_database_without_secrets_dir_is_an_error() {
    crate::util::root_only!();
    // An admin restores db.sqlite3 from a backup into a fresh data directory (no
    // secrets/ yet) and forgets the key. `run` refuses to start; check must say so.
    let mut env = TestEnv::new("check_fernet_restored_db");
    mkdir(&env.data, 0o750);
    write_file(
        &env.data.join("db.sqlite3"),
        b"SQLite format 3\0restored from a backup",
        0o600,
    );
    let r = check_json(&env, &[]);
    // What run does with the same setup (it creates the user, then refuses).
    env.launch();
    env.expect_failure(
        3,
        &["refusing to generate a new Fernet key", "db.sqlite3 exists"],
        Duration::from_secs(30),
    );
    r.assert_code(2);
    r.expect_exact(
        "error",
        "secrets",
        "BITPOLL_FIELD_ENCRYPTION_KEY (generate fernet-key)",
        "database exists",
    );
}

// =======================================================================================
// python and app
// =======================================================================================

#[test]
fn a_python_that_is_not_executable_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_python_noexec");
    let python = env.dir.join("python3");
    write_file(&python, b"#!/bin/sh\nexit 0\n", 0o644);
    env.config
        .set_str("app", "python", &python.display().to_string());
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "python",
        &python.display().to_string(),
        "is not an executable file",
    );
    assert!(f.fix.as_deref().unwrap().contains("app.python"), "{f}");
}

#[test]
fn a_python_that_is_not_executable_is_an_error_also_before_the_account_exists() {
    crate::util::root_only!();
    // First deploy on a fresh host: create_user = true, the user does not exist yet. run
    // would create the user and then fail on the interpreter; check must say so.
    let mut env = TestEnv::new("check_python_noexec_nouser");
    let python = env.dir.join("python3");
    write_file(&python, b"#!/bin/sh\nexit 0\n", 0o644);
    env.config
        .set_str("app", "python", &python.display().to_string());
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect_exact(
        "error",
        "python",
        &python.display().to_string(),
        "is not an executable file",
    );
    // What could not be checked without an interpreter is named.
    let f = r.expect_exact(
        "info",
        "app",
        "probe",
        "the app was not probed: app.python cannot be run",
    );
    assert_eq!(f.id, "app.not_probed");
    for unchecked in [
        "Django's start with the settings",
        "check --deploy",
        "gunicorn's version",
    ] {
        assert!(f.message.contains(unchecked), "{f}");
    }
}

/// Before the first start (no account yet) check probes the app all the same: as a
/// uid/gid no account or process holds, with a throw-away data directory that is gone
/// afterwards, so Django's start, the settings, check --deploy and gunicorn are judged
/// before anything is created, and nothing is written anywhere else.
#[test]
fn before_the_first_start_the_app_is_probed_as_a_stand_in_and_nothing_is_left() {
    crate::util::root_only!();
    let env = TestEnv::new("check_first_start");
    assert!(!env.user_exists());
    sync_config(&env);
    let before = snapshot(&env.dir);
    let r = check_json_run(&env, Run::new(&check_args(&env)));
    assert_same_tree(&before, &snapshot(&env.dir), "before the first start");
    assert!(
        !env.user_exists() && !env.group_exists(),
        "check created the account"
    );
    assert!(!env.data.exists(), "check created the data directory");
    r.assert_code(1);

    let stand_in = r.by_id("app.stand_in");
    assert_eq!(stand_in.len(), 1, "{}", r.listing());
    let message = &stand_in[0].message;
    assert_eq!(stand_in[0].severity, "info");
    let id: u32 = message
        .split("probed as uid and gid ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {message:?}"));
    assert!((61184..=65519).contains(&id), "{id}");
    assert!(nix::unistd::User::from_uid(id.into()).unwrap().is_none());
    let dir = message
        .split("throw-away data directory ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no directory in {message:?}"));
    assert!(dir.starts_with("/tmp/bitpoll-launcher-probe-"), "{dir}");
    assert!(!Path::new(dir).exists(), "{dir} is left");
    let left: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| {
            status.lines().any(|l| {
                l.starts_with("Uid:") && l.split_whitespace().skip(1).any(|u| u == id.to_string())
            })
        })
        .collect();
    assert!(
        left.is_empty(),
        "processes of the stand-in are left: {left:?}"
    );

    // The app as the first start will meet it.
    r.expect_exact("ok", "python", PYTHON, "Python 3.");
    r.expect_exact("ok", "app", "django", "Django 5.");
    r.expect_exact(
        "ok",
        "app",
        "bitpoll.settings",
        "imports and Django starts with the app's environment",
    );
    for w in ["W004", "W008", "W012", "W016"] {
        let f = r.expect_exact(
            "warning",
            "app",
            &format!("check --deploy security.{w}"),
            "",
        );
        assert_eq!(f.id, format!("django:security.{w}"));
    }
    r.expect_exact("ok", "server", "gunicorn", "version 27.");
    r.expect_exact("ok", "app", "msgfmt", "found at /usr/bin/msgfmt");
    r.expect_exact(
        "info",
        "app",
        "static files",
        &format!(
            "no manifest at {}/static/current/staticfiles.json yet",
            env.data.display()
        ),
    );
    r.expect_exact(
        "info",
        "database",
        &format!("sqlite {}/db.sqlite3", env.data.display()),
        "not probed as Django sees it before the first start",
    );

    // A broken settings file shows up now, not at the first start.
    let settings = env.app.join("bitpoll/settings_local.py");
    let mut text = fs::read_to_string(&settings).unwrap();
    text.push_str("\nBROKEN = (\n");
    fs::write(&settings, text).unwrap();
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect(
        "error",
        "app",
        "bitpoll.settings",
        "the app does not start: SyntaxError",
    );
    assert!(!env.user_exists(), "check created the user");
}

#[test]
fn an_interpreter_without_django_or_gunicorn_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_no_django");
    // The system's Python: no Django, no gunicorn.
    let python = "/usr/bin/python3";
    let probe = Command::new(python)
        .args(["-c", "import django"])
        .output()
        .expect("run /usr/bin/python3");
    assert!(
        !probe.status.success(),
        "this test needs a system python without Django"
    );
    env.config.set_str("app", "python", python);
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect("ok", "python", python, "Python 3.");
    let f = r.expect_exact(
        "error",
        "app",
        "django",
        "cannot be imported: ModuleNotFoundError",
    );
    assert!(f.fix.as_deref().unwrap().contains("install Django"), "{f}");
    r.expect_exact(
        "error",
        "server",
        "gunicorn",
        "not installed in the app's Python environment",
    );
}

#[test]
fn a_source_dir_without_manage_py_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_no_manage_py");
    let src = env.dir.join("empty-src");
    mkdir(&src, 0o755);
    env.config
        .set_str("app", "source_dir", &src.display().to_string());
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "app",
        &src.display().to_string(),
        "has no manage.py",
    );
    assert!(f.fix.as_deref().unwrap().contains("app.source_dir"), "{f}");
}

#[test]
fn postgresql_that_is_down_is_an_error_of_the_launcher_and_of_django_and_generated_keys_a_warning()
{
    crate::util::root_only!();
    // Nothing listens on the port: the launcher's own connection and Django's both fail,
    // and `run` would wait for it, then fail.
    let mut env = TestEnv::new("check_pg");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.config
        .set_str("database", "engine", "postgresql")
        .set_str("database", "name", "bitpoll")
        .set_str("database", "host", "127.0.0.1")
        .set("database", "port", &closed.to_string())
        .set("database", "wait_timeout_sec", "30");
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "database",
        &format!(
            "postgresql role {} at 127.0.0.1:{closed}, database bitpoll",
            env.user
        ),
        "not reachable (127.0.0.1:",
    );
    assert!(
        f.message
            .contains("`run` waits up to 30 s for it, then fails"),
        "{f}"
    );
    assert!(
        f.fix.as_deref().unwrap().contains("start PostgreSQL"),
        "{f}"
    );
    r.expect_exact(
        "error",
        "database",
        "postgresql",
        "not reachable: OperationalError",
    );
    // Instances on one database must share their keys: generated ones are warned about.
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        r.expect(
            "warning",
            "secrets",
            name,
            "every instance that serves the same database",
        );
    }
    r.absent("python", "probe", "the probe itself worked");
}

#[test]
fn a_corrupt_sqlite_database_is_not_reachable() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_db_corrupt");
    let (uid, gid) = create_service_account(&env);
    mkdir(&env.data, 0o750);
    chown(&env.data, uid, gid);
    let db = env.data.join("db.sqlite3");
    write_file(&db, &[0x5a; 4096], 0o600);
    chown(&db, uid, gid);
    // File sources, so the Fernet guard (a database exists) does not interfere.
    let keys = env.dir.join("keys");
    mkdir(&keys, 0o700);
    write_file(&keys.join("sk"), token().repeat(4).as_bytes(), 0o600);
    write_file(&keys.join("fek"), fernet_key().as_bytes(), 0o600);
    env.config
        .set(
            "secrets",
            "BITPOLL_SECRET_KEY",
            &file_secret(&keys.join("sk")),
        )
        .set(
            "secrets",
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            &file_secret(&keys.join("fek")),
        );
    let before = fs::read(&db).unwrap();
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "database",
        &format!("sqlite {}", db.display()),
        "not reachable: DatabaseError: file is not a database",
    );
    assert!(f.fix.is_some());
    r.absent("database", "migrations", "no migrations without a database");
    assert_eq!(fs::read(&db).unwrap(), before, "check changed the database");
}

#[test]
fn an_unimportable_settings_module_means_the_app_does_not_start() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_settings");
    env.config
        .set_str("app", "settings_module", "bitpoll.nosuch");
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "app",
        "bitpoll.nosuch",
        "the app does not start: ModuleNotFoundError",
    );
    assert!(f.message.contains("bitpoll.nosuch"), "{f}");
    assert!(f.fix.as_deref().unwrap().contains("settings"), "{f}");
    r.expect("ok", "app", "django", "Django 5.");
    r.expect("ok", "python", PYTHON, "Python 3.");
    assert!(
        pycache_dirs(&env.app).is_empty(),
        "the probe wrote bytecode into the app"
    );
}

#[test]
fn a_healthy_app_probe_passes_django_check_deploy_through_and_finds_msgfmt() {
    crate::util::root_only!();
    let env = TestEnv::new("check_deploy");
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.assert_code(1);
    r.expect("ok", "python", PYTHON, "Python 3.");
    r.expect_exact("ok", "app", "django", "Django 5.");
    r.expect_exact(
        "ok",
        "app",
        "bitpoll.settings",
        "imports and Django starts with the app's environment",
    );
    let f = r.expect_exact(
        "warning",
        "app",
        "check --deploy security.W004",
        "SECURE_HSTS_SECONDS",
    );
    assert!(f.fix.is_some());
    for (id, text) in [
        ("security.W008", "SECURE_SSL_REDIRECT"),
        ("security.W012", "SESSION_COOKIE_SECURE"),
        ("security.W016", "CSRF_COOKIE_SECURE"),
    ] {
        let f = r.expect_exact("warning", "app", &format!("check --deploy {id}"), text);
        if id != "security.W008" {
            assert!(
                f.fix.as_deref().unwrap().contains("BITPOLL_SECURE_COOKIES"),
                "{f}"
            );
        }
    }
    r.expect_exact("ok", "app", "msgfmt", "found at /usr/bin/msgfmt");
    r.expect_exact(
        "info",
        "app",
        "static files",
        &format!(
            "no manifest at {}/static/current/staticfiles.json yet; `run` collects static files",
            env.data.display()
        ),
    );
    r.expect_exact(
        "info",
        "app",
        &format!("translations in {}", env.app.display()),
        "1 of 1 catalog(s) are not compiled yet",
    );
    r.expect_exact(
        "info",
        "prepare",
        "step compilemessages",
        "runs at the next start: no record of an earlier success",
    );
    r.expect_exact(
        "info",
        "database",
        &format!("sqlite {}/db.sqlite3", env.data.display()),
        "does not exist yet; migrate creates it",
    );
    r.expect_exact("ok", "server", GUNICORN, "is executable");
    r.expect_exact("ok", "server", "gunicorn", "version 27.");
    assert_eq!(
        r.matching("server", "gunicorn")
            .iter()
            .filter(|f| f.severity == "warning")
            .count(),
        0,
        "{}",
        r.listing()
    );
    r.expect_exact(
        "ok",
        "server",
        &format!("--bind 127.0.0.1:{}", env.port),
        "the address is free",
    );
    assert!(!env.data.exists(), "check created the data directory");
    assert!(
        r.out.elapsed < Duration::from_secs(20),
        "check took {:?}",
        r.out.elapsed
    );
}

/// Warnings the admin accepts ([check] accept) are info and leave the exit status alone;
/// an accepted id that does not occur, or names no rule, is a warning of its own.
#[test]
fn accepted_warnings_are_info_and_entries_that_do_not_apply_are_warnings() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_accept");
    create_service_account(&env);
    env.config.set("check", "accept", HTTP_ONLY);
    let r = check_json(&env, &[]);
    r.assert_code(0);
    for w in ["W004", "W008", "W012", "W016"] {
        let f = r.by_id(&format!("django:security.{w}"));
        assert_eq!(f.len(), 1, "{}", r.listing());
        assert_eq!(
            (f[0].severity.as_str(), f[0].accepted),
            ("info", true),
            "{}",
            f[0]
        );
        assert!(f[0].fix.is_some(), "{}", f[0]);
    }
    assert!(r.by_id("check.accept").is_empty(), "{}", r.listing());
    let h = check_human(&env, &[]);
    assert_eq!(h.code, 0, "{}", h.context());
    assert!(
        h.stdout.contains("[django:security.W004, accepted]\n"),
        "{}",
        h.context()
    );
    assert!(
        h.stdout
            .contains(" (4 of the info accepted in check.accept)\n"),
        "{}",
        h.context()
    );

    env.config.set(
        "check",
        "accept",
        &HTTP_ONLY.replace(
            ']',
            ", \"server.control_socket\", \"secrets.shared_by_instance\"]",
        ),
    );
    let r = check_json(&env, &[]);
    r.assert_code(1);
    let unused = r.by_id("check.accept");
    assert_eq!(unused.len(), 2, "{}", r.listing());
    assert!(
        unused
            .iter()
            .all(|f| f.severity == "warning" && f.group == "check")
    );
    assert!(
        unused[0]
            .message
            .contains("\"server.control_socket\" did not occur in this check"),
        "{}",
        unused[0]
    );
    assert!(
        unused[1]
            .message
            .contains("did you mean `secrets.shared_by_instances`?"),
        "{}",
        unused[1]
    );
}

#[test]
fn pending_migrations_are_listed() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_pending");
    create_service_account(&env);
    launch_once(&mut env);
    let db = format!("sqlite {}/db.sqlite3", env.data.display());
    let r = check_json(&env, &[]);
    r.expect_exact("ok", "database", &db, "reachable");
    r.expect_exact("ok", "database", "migrations", "all applied");
    r.expect_exact(
        "ok",
        "app",
        "static files",
        &format!(
            "manifest {}/static/current/staticfiles.json present",
            env.data.display()
        ),
    );
    r.expect_exact(
        "ok",
        "app",
        &format!("translations in {}", env.app.display()),
        "1 catalog(s), all compiled and up to date",
    );

    let name = util::add_migration(&env, "0003_check_pending");
    let r = check_json(&env, &[]);
    r.expect_exact(
        "info",
        "database",
        "migrations",
        &format!("1 pending (poll.{name}); `run` applies them"),
    );
    env.config.set("prepare", "migrate", "false");
    let r = check_json(&env, &[]);
    let f = r.expect_exact(
        "warning",
        "database",
        "migrations",
        &format!("1 pending (poll.{name}) and prepare.migrate = false"),
    );
    assert!(f.fix.as_deref().unwrap().contains("-- migrate"), "{f}");
    let r2 = check_json(&env, &[]);
    assert_eq!(r2.findings.len(), r.findings.len());
    // Nothing was applied by check.
    let out = manage(&env, &["showmigrations", "poll"]);
    assert!(
        out.stdout.contains(&format!("[ ] {name}")),
        "{}",
        out.context()
    );
}

#[test]
fn a_missing_static_manifest_without_collectstatic_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_manifest");
    env.config.set("prepare", "collectstatic", "false");
    create_service_account(&env);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "app",
        "static files",
        &format!(
            "no manifest at {}/static/staticfiles.json and prepare.collectstatic = false",
            env.data.display()
        ),
    );
    assert!(f.fix.as_deref().unwrap().contains("collectstatic"), "{f}");
}

#[test]
fn uncompiled_or_stale_catalogs_without_compilemessages_are_a_warning() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_catalogs");
    env.config.set("prepare", "compilemessages", "false");
    let subject = format!("translations in {}", env.app.display());
    let r = check_json(&env, &[]);
    r.assert_code(1);
    let f = r.expect_exact(
        "warning",
        "app",
        &subject,
        "1 of 1 catalog(s) are not compiled (or older than their .po) and prepare.compilemessages = false",
    );
    assert!(f.fix.as_deref().unwrap().contains("compilemessages"), "{f}");
    r.absent(
        "app",
        "msgfmt",
        "msgfmt is not needed without compilemessages",
    );

    // A compiled catalog older than its .po is stale.
    let po = env.app.join("locale/de_DE/LC_MESSAGES/django.po");
    let mo = po.with_extension("mo");
    write_file(&mo, b"\xde\x12\x04\x95", 0o644);
    let r = check_json(&env, &[]);
    r.expect_exact(
        "ok",
        "app",
        &subject,
        "1 catalog(s), all compiled and up to date",
    );
    fs::File::options()
        .write(true)
        .open(&mo)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
        .unwrap();
    let r = check_json(&env, &[]);
    r.expect_exact(
        "warning",
        "app",
        &subject,
        "1 of 1 catalog(s) are not compiled",
    );
}

#[test]
fn msgfmt_missing_from_the_apps_path_with_compilemessages_is_an_error() {
    crate::util::root_only!();
    // The app's PATH is the interpreter's directory and a fixed system path, whatever
    // PATH the launcher got (launcher_plan::env::build): msgfmt is found even when the
    // caller's PATH has nothing; an [environment] PATH without gettext's directory hides it.
    let mut env = TestEnv::new("check_msgfmt");
    create_service_account(&env);
    sync_config(&env);
    let r = check_json_run(&env, Run::new(&check_args(&env)).path("/nonexistent"));
    r.expect_exact("ok", "app", "msgfmt", "found at /usr/bin/msgfmt");
    env.config.set_str(
        "environment",
        "PATH",
        &format!("{}/bin:/nonexistent", util::VENV),
    );
    sync_config(&env);
    let r = check_json_run(&env, Run::new(&check_args(&env)).path("/nonexistent"));
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "app",
        "msgfmt",
        "GNU gettext's msgfmt is not on the app's PATH, and prepare.compilemessages = true",
    );
    assert!(f.fix.as_deref().unwrap().contains("install gettext"), "{f}");
    // The rest of the probe still worked.
    r.expect_exact("ok", "app", "bitpoll.settings", "imports and Django starts");
}

// =======================================================================================
// server
// =======================================================================================

#[test]
fn a_server_program_that_is_not_executable_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_server_noexec");
    let program = env.dir.join("server-program");
    write_file(&program, b"#!/bin/sh\n", 0o644);
    env.config.set(
        "server",
        "command",
        &format!(
            "[{}, \"--bind\", \"127.0.0.1:{}\"]",
            toml_str(&program.display().to_string()),
            env.port
        ),
    );
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "server",
        &program.display().to_string(),
        "is not an executable file",
    );
    assert_eq!(f.fix.as_deref(), Some("fix server.command[0]"));
    let missing = env.dir.join("no-such-server");
    env.config.set(
        "server",
        "command",
        &format!("[{}]", toml_str(&missing.display().to_string())),
    );
    let r = check_json(&env, &[]);
    r.expect_exact(
        "error",
        "server",
        &missing.display().to_string(),
        "is not an executable file",
    );
}

#[test]
fn a_bind_port_held_by_another_process_is_an_error_naming_it() {
    crate::util::root_only!();
    let env = TestEnv::new("check_port_busy");
    let listener = TcpListener::bind(("127.0.0.1", env.port)).expect("bind the test port");
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "server",
        &format!("--bind 127.0.0.1:{}", env.port),
        "already in use by ",
    );
    assert!(
        f.message.contains(&format!("(pid {})", std::process::id())),
        "names this test process as the holder: {f}"
    );
    drop(listener);
    let r = check_json(&env, &[]);
    r.expect_exact(
        "ok",
        "server",
        &format!("--bind 127.0.0.1:{}", env.port),
        "the address is free",
    );
}

#[test]
fn a_bind_port_held_by_the_running_service_is_ok() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_port_own");
    let pid = env.launch();
    env.wait_ready(READY);
    let r = check_json(&env, &[]);
    let f = r.expect_exact(
        "ok",
        "server",
        &format!("--bind 127.0.0.1:{}", env.port),
        "held by this service (",
    );
    let holder: u32 = f
        .message
        .rsplit("pid ")
        .next()
        .and_then(|s| s.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {f}"));
    assert!(
        holder == pid || util::children_of(pid).contains(&holder),
        "the holder {holder} is the server {pid} or one of its workers: {f}"
    );
    // While it runs, everything it made is fine.
    r.expect_exact("ok", "database", "migrations", "all applied");
    r.expect(
        "ok",
        "secrets",
        "BITPOLL_SECRET_KEY",
        "usable: generated earlier",
    );
    env.stop();
}

#[test]
fn gunicorn_25_1_or_newer_without_no_control_socket_is_a_warning() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_gunicorn27");
    env.config.set(
        "server",
        "command",
        &format!(
            "[{}, \"--bind\", \"127.0.0.1:{}\", \"bitpoll.wsgi:application\"]",
            toml_str(GUNICORN),
            env.port
        ),
    );
    create_service_account(&env);
    let r = check_json(&env, &[]);
    let f = r.expect_exact(
        "warning",
        "server",
        "gunicorn",
        "gunicorn 25.1 or newer creates a control socket in the home directory by default",
    );
    assert_eq!(
        f.fix.as_deref(),
        Some("add \"--no-control-socket\" to server.command")
    );
}

// =======================================================================================
// database
// =======================================================================================

#[test]
fn a_database_the_service_user_cannot_write_is_an_error() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_db_readonly");
    launch_once(&mut env);
    let (uid, _) = uid_gid(&env);
    let db = env.data.join("db.sqlite3");
    let subject = format!("write access to {}", db.display());
    let r = check_json(&env, &[]);
    r.expect_exact("ok", "data_dir", &subject, &format!("uid {uid} can write"));
    chown(&db, 0, 0);
    chmod(&db, 0o644);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    let f = r.expect_exact(
        "error",
        "data_dir",
        &subject,
        &format!("uid {uid} cannot write"),
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains(&format!("chown {}", env.user)),
        "{f}"
    );
    assert_eq!(
        util::owner_mode(&db),
        (0, 0, 0o644),
        "check changed the database file"
    );
}

// =======================================================================================
// systemd
// =======================================================================================

#[test]
fn a_unit_that_systemd_cannot_be_asked_about_is_a_warning() {
    crate::util::root_only!();
    // This test host does not run systemd as PID 1, so systemctl cannot answer. (On a
    // host with systemd, `--unit nosuch` gives an error "is not loaded" instead.)
    let env = TestEnv::new("check_unit");
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    let r = check_json(&env, &["--unit", "nosuch"]);
    if systemd_runs {
        r.expect_exact("error", "systemd", "nosuch", "is not loaded");
        return;
    }
    let f = r.expect_exact("warning", "systemd", "nosuch", "cannot query systemd: ");
    assert_eq!(
        f.fix.as_deref(),
        Some("run check on the host that runs the unit")
    );
    r.assert_code(1);

    // Run inside a unit (INVOCATION_ID set), the unit "bitpoll" is checked.
    let run = Run::new(&check_args(&env)).env("INVOCATION_ID", "0123456789abcdef");
    let r = check_json_run(&env, run);
    r.expect_exact("warning", "systemd", "bitpoll", "cannot query systemd: ");
    // Without either, no systemd findings.
    let r = check_json(&env, &[]);
    r.absent("systemd", "", "no --unit and not inside a unit");
    // systemctl's multi-line complaint stays on the finding's line.
    assert_human_well_formed(&check_human(&env, &["--unit", "nosuch"]));
}

// =======================================================================================
// who runs check
// =======================================================================================

#[test]
fn check_as_the_service_user_sees_its_own_data() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_as_service_user");
    launch_once(&mut env);
    let (uid, gid) = uid_gid(&env);
    sync_config(&env);
    let run = Run::new(&check_args(&env)).wrap(&setpriv_as(uid, gid, true));
    let r = check_json_run(&env, run);
    assert_eq!(r.doc["checked_as_uid"], uid, "{}", r.listing());
    r.absent("check", "", "the service user is a complete viewer");
    r.expect_exact(
        "ok",
        "data_dir",
        &env.data.display().to_string(),
        &format!("owner {uid}:{gid}, mode 0750"),
    );
    r.expect_exact(
        "ok",
        "data_dir",
        &env.data.join("secrets").display().to_string(),
        "mode 0700",
    );
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        r.expect("ok", "secrets", name, "usable: generated earlier");
    }
    r.expect_exact("ok", "app", "bitpoll.settings", "imports and Django starts");
    r.expect_exact("ok", "database", "migrations", "all applied");
    assert_eq!(
        r.count("error"),
        0,
        "a healthy deployment has no errors\n{}",
        r.listing()
    );
    // The secret values were read and never printed.
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        let v = generated_value(&env, name);
        assert!(
            !contains(&r.out.raw, v.as_bytes()),
            "{name}'s value was printed"
        );
    }
}

#[test]
fn check_as_another_user_says_what_it_could_not_see() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_as_nobody");
    launch_once(&mut env);
    let (nu, ng) = nobody();
    sync_config(&env);
    let run = Run::new(&check_args(&env)).wrap(&setpriv_as(nu, ng, false));
    let r = check_json_run(&env, run);
    assert_eq!(r.doc["checked_as_uid"], nu, "{}", r.listing());
    let f = r.expect_exact(
        "warning",
        "check",
        &format!("uid {nu}"),
        &format!(
            "running as neither root nor {}: files only they can read were not checked",
            env.user
        ),
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("sudo bitpoll-launcher check"),
        "{f}"
    );
    r.expect_exact(
        "warning",
        "data_dir",
        &env.data.display().to_string(),
        "cannot be inspected as this user",
    );
    // What this viewer cannot see or do is not the deployment's fault: the deployment is
    // healthy (as root: no errors), so nothing here may be an error either; in
    // particular not "uid <service uid> cannot write" (the probe ran as nobody) and not
    // "the app does not start" (it starts as the service user).
    assert_eq!(
        r.count("error"),
        0,
        "a viewer's limits are reported as errors of the deployment\n{}",
        r.listing()
    );
    // The generated secrets exist; nobody cannot see them. Saying they are "not
    // generated yet" would be false: they are reported as not visible instead.
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        for f in r.matching("secrets", name) {
            assert!(
                !f.message.contains("not generated yet"),
                "an existing generated secret is reported as missing to a viewer who cannot see it: {f}\n{}",
                r.listing()
            );
        }
    }
    // As root, the same deployment is seen completely.
    let r = check_json(&env, &[]);
    r.absent("check", "", "root is a complete viewer");
    assert_eq!(r.doc["checked_as_uid"], 0);
    assert_eq!(r.count("error"), 0, "{}", r.listing());
}

// =======================================================================================
// check writes nothing
// =======================================================================================

#[test]
fn check_writes_nothing_fresh_after_a_launch_and_broken() {
    crate::util::root_only!();
    let mut env = TestEnv::new("check_read_only");
    create_service_account(&env);
    sync_config(&env);

    // Fresh: the data directory does not exist.
    let before = snapshot(&env.dir);
    let r = check_json(&env, &[]);
    assert!(r.count("ok") > 5, "{}", r.listing());
    check_human(&env, &[]);
    assert_same_tree(&before, &snapshot(&env.dir), "fresh");
    assert!(!env.data.exists(), "check created the data directory");
    assert!(
        pycache_dirs(&env.app).is_empty(),
        "check wrote bytecode into the app source"
    );

    // After a launch (and the server stopped).
    launch_once(&mut env);
    let pycache = pycache_dirs(&env.app);
    let before = snapshot(&env.dir);
    check_json(&env, &[]);
    check_human(&env, &[]);
    assert_same_tree(&before, &snapshot(&env.dir), "after a launch");
    assert_eq!(pycache_dirs(&env.app), pycache);

    // Broken: a world-readable generated secret, a planted link, a database the user
    // cannot write, a pending migration, a stale catalog.
    let secret = env.data.join("secrets/BITPOLL_SECRET_KEY");
    chmod(&secret, 0o644);
    let media = env.data.join("media");
    fs::remove_dir(&media).unwrap();
    std::os::unix::fs::symlink(env.app.join("bitpoll"), &media).unwrap();
    let db = env.data.join("db.sqlite3");
    chown(&db, 0, 0);
    util::add_migration(&env, "0003_check_pending");
    let po = env.app.join("locale/de_DE/LC_MESSAGES/django.po");
    fs::File::options()
        .write(true)
        .open(&po)
        .and_then(|f| f.set_modified(SystemTime::now() + Duration::from_secs(3600)))
        .unwrap();
    sync_config(&env);
    let before = snapshot(&env.dir);
    let r = check_json(&env, &[]);
    r.assert_code(2);
    r.expect(
        "error",
        "secrets",
        "BITPOLL_SECRET_KEY",
        "is accessible to other users (mode 0644)",
    );
    r.expect_exact(
        "error",
        "data_dir",
        &media.display().to_string(),
        "is a symbolic link",
    );
    check_human(&env, &[]);
    check_json(&env, &["--unit", "bitpoll"]);
    assert_same_tree(&before, &snapshot(&env.dir), "broken");
    assert_eq!(pycache_dirs(&env.app), pycache);

    // Broken settings as well (the probe fails in Django's setup).
    chmod(&secret, 0o600);
    env.config
        .set_str("app", "settings_module", "bitpoll.nosuch");
    sync_config(&env);
    let before = snapshot(&env.dir);
    let r = check_json(&env, &[]);
    r.expect("error", "app", "bitpoll.nosuch", "the app does not start");
    assert_same_tree(&before, &snapshot(&env.dir), "broken settings");
}

// =======================================================================================
// human output
// =======================================================================================

#[test]
fn human_output_is_grouped_plain_off_a_terminal_and_ends_with_a_summary() {
    crate::util::root_only!();
    let env = TestEnv::new("check_human");
    create_service_account(&env);
    let h = check_human(&env, &[]);
    let r = check_json(&env, &[]);
    assert_eq!(h.code, r.code(), "same exit status with and without --json");
    assert!(
        !h.stdout.contains('\x1b'),
        "ANSI escapes off a terminal:\n{}",
        h.context()
    );
    // Group headers in the documented order, each once, each followed by its findings.
    let headers: Vec<&str> = h
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
        .map(|l| l.trim_end_matches(':'))
        .collect();
    let mut expected: Vec<&str> = Vec::new();
    for g in GROUPS {
        if r.findings.iter().any(|f| f.group == *g) {
            expected.push(g);
        }
    }
    assert_eq!(headers, expected, "group headers\n{}", h.stdout);
    // The findings in print order: by group, in JSON order within a group.
    let ordered: Vec<&Finding> = expected
        .iter()
        .flat_map(|g| r.findings.iter().filter(move |f| f.group == *g))
        .collect();
    let mut current = "";
    let mut seen = 0;
    for line in h.stdout.lines() {
        if let Some(g) = line.strip_suffix(':').filter(|l| !l.starts_with(' ')) {
            current = g;
        } else if let Some(fix) = line.strip_prefix("          fix: ") {
            let f = ordered[seen - 1];
            assert_eq!(Some(fix), f.fix.as_deref(), "the fix under {f}");
        } else if line.starts_with("  ") {
            let f = ordered[seen];
            assert_eq!(f.group, current, "{line:?} is under its group");
            let expected = format!(
                "  {:<7} {}: {} [{}]",
                f.severity, f.subject, f.message, f.id
            );
            if f.subject.starts_with("free space at ") {
                // The two runs are apart in time; other processes use the disk meanwhile.
                let (head, _) = expected.split_once(": ").unwrap();
                assert!(
                    line.starts_with(head) && line.ends_with(" MiB free [data_dir.free_space]"),
                    "{line:?}"
                );
            } else {
                assert_eq!(line, expected, "one line per finding");
            }
            seen += 1;
        } else {
            let summary = format!(
                "{} error(s), {} warning(s), {} info, {} ok",
                r.count("error"),
                r.count("warning"),
                r.count("info"),
                r.count("ok")
            );
            assert_eq!(line, summary, "the summary line");
            assert!(h.stdout.ends_with(&format!("{summary}\n")), "summary last");
        }
    }
    assert_eq!(
        seen,
        r.findings.len(),
        "every finding printed\n{}",
        h.stdout
    );
    assert_human_well_formed(&h);
    assert_eq!(
        h.stdout.matches("\n          fix: ").count(),
        r.count("warning") + r.count("error"),
        "a fix under each warning and error"
    );

    // On a terminal: coloured, unless NO_COLOR.
    sync_config(&env);
    let cmd = format!("{LAUNCHER} check --config {}", env.config_path().display());
    let on_tty = |no_color: bool| -> String {
        let mut c = Command::new("script");
        c.args(["-qec", cmd.as_str(), "/dev/null"])
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm")
            .stdin(Stdio::null());
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = c.output().expect("run script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(
        coloured.contains("\x1b[33mwarning\x1b[0m") && coloured.contains("\x1b[32mok     \x1b[0m"),
        "coloured on a terminal:\n{coloured:?}"
    );
    let plain = on_tty(true);
    assert!(plain.contains("warning"), "{plain}");
    assert!(!plain.contains('\x1b'), "NO_COLOR:\n{plain:?}");
}
