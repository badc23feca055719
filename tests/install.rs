//! `bitpoll-launcher install` and `uninstall` under a real systemd (PID 1 of a throw-away
//! systemd-nspawn container, see container/mod.rs), as an admin of a plain systemd host
//! would use them: a fresh machine with the app and a config, one install, one
//! `systemctl start`, and an uninstall that leaves the data.
//!
//! Needs root and systemd-nspawn; elsewhere it prints a SKIP line and passes, unless
//! BITPOLL_REQUIRE_SYSTEMD_TESTS=1. Run:
//! `cargo test --test suite install:: -- --test-threads=1`

use crate::container;

use std::time::Duration;

use container::bitpoll::{
    self, APP_DIR, Bitpoll, CONFIG_PATH, DATA_DIR, DEMO_APP_IN, Spec, UNIT, UNIT_PATH, USER, text,
};
use container::{ContainerBuilder, LAUNCHER_PATH};

const DEMO_APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/demo-app");
const SYSUSERS: &str = "/etc/sysusers.d/bitpoll.conf";
const TMPFILES: &str = "/etc/tmpfiles.d/bitpoll.conf";
const CATALOG: &str = "/usr/local/lib/systemd/catalog/bitpoll-launcher.catalog";
const MARK: &str = "# Written by `bitpoll-launcher install`, sha256=";

/// A booted container with the demo app under APP_DIR and the launcher's config, and
/// nothing else: no account, no data directory, no unit.
fn fresh_host(tag: &str) -> Bitpoll {
    bitpoll::ensure_venv();
    let spec = Spec::default();
    let c = ContainerBuilder::new(tag)
        .with_launcher()
        .bind_ro(DEMO_APP, DEMO_APP_IN)
        .file(CONFIG_PATH, spec.config(), 0o644)
        .boot();
    let script = format!(
        "set -e; mkdir -p {APP_DIR}; cp -a {DEMO_APP_IN}/. {APP_DIR}/; \
         find {APP_DIR} -name __pycache__ -prune -exec rm -rf {{}} +; \
         find {APP_DIR} -name '*.mo' -delete; chmod -R a+rX /srv/bitpoll"
    );
    c.exec_ok(&["sh", "-c", &script]);
    Bitpoll {
        c,
        spec,
        fek_sha256: None,
    }
}

fn launcher(b: &Bitpoll, args: &[&str]) -> std::process::Output {
    let mut argv = vec![LAUNCHER_PATH];
    argv.extend_from_slice(args);
    b.exec(&argv)
}

fn sha(b: &Bitpoll, paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| b.sha256(p)).collect()
}

#[test]
fn install_on_a_fresh_host_then_start_serves_and_uninstall_keeps_the_data() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    // The app tree stays root's and read-only to the service, as an admin's would.
    let b = fresh_host("install");
    let files = [UNIT_PATH, SYSUSERS, TMPFILES, CATALOG];

    // --dry-run shows every file and command, and changes nothing.
    let out = launcher(&b, &["install", "--config", CONFIG_PATH, "--dry-run"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for want in [
        format!("would write {UNIT_PATH} (new):\n{MARK}"),
        format!("would write {SYSUSERS} (new):\n{MARK}"),
        format!("would write {TMPFILES} (new):\n{MARK}"),
        format!("would write {CATALOG} (new):\n{MARK}"),
        "would run: journalctl --update-catalog\n".to_owned(),
        format!("ExecStart={LAUNCHER_PATH} run --config {CONFIG_PATH}\n"),
        format!("d {DATA_DIR} 0750 {USER} {USER} -\n"),
        format!("would run: systemd-sysusers {SYSUSERS}\n"),
        format!("would run: systemd-tmpfiles --create {TMPFILES}\n"),
        "would run: systemctl daemon-reload\n".to_owned(),
    ] {
        assert!(shown.contains(&want), "missing {want:?} in\n{shown}");
    }
    for path in files.iter().chain([&DATA_DIR]) {
        assert!(!b.exists(path), "--dry-run created {path}");
    }
    assert!(
        !b.exec(&["getent", "passwd", USER]).status.success(),
        "--dry-run created the account"
    );

    // Install: the files, the account, the data directory, and systemd knows the unit.
    let out = launcher(&b, &["install", "--config", CONFIG_PATH]);
    assert!(out.status.success(), "{}", text(&out));
    for path in files {
        let head = b.exec_ok(&["head", "-n", "1", path]);
        assert!(head.starts_with(MARK), "{path} is not marked: {head}");
        assert_eq!(b.stat("%a %U", path), "644 root", "{path}");
    }
    b.exec_ok(&["id", USER]);
    assert_eq!(
        b.stat("%a %U:%G", DATA_DIR),
        format!("750 {USER}:{USER}"),
        "the data directory from the tmpfiles.d entry"
    );
    assert_eq!(b.show(&["LoadState"])["LoadState"], "loaded");

    // Again: nothing changes.
    let before = sha(&b, &files);
    let out = launcher(&b, &["install", "--config", CONFIG_PATH]);
    let second = text(&out);
    assert!(out.status.success(), "{second}");
    assert_eq!(second.matches("(unchanged)").count(), 4, "{second}");
    assert_eq!(sha(&b, &files), before);

    // The unit as installed starts and serves.
    b.start_ok();
    let (code, body) = b.http_get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok"), "{}", b.diagnose(UNIT));
    let (code, _) = b.http_get("/");
    assert_eq!(code, 200, "the index page\n{}", b.diagnose(UNIT));

    // The journal explains a refused start: the record carries its rule's MESSAGE_ID and
    // id, and `journalctl -x` shows the catalog entry install put in place.
    journal_explains_a_refused_start(&b);

    // An edited unit is left alone, and install says why and what to do.
    b.exec_ok(&[
        "sh",
        "-c",
        &format!("echo '# the admin was here' >> {UNIT_PATH}"),
    ]);
    let edited = b.sha256(UNIT_PATH);
    let out = launcher(&b, &["install", "--config", CONFIG_PATH]);
    let refused = text(&out);
    assert_eq!(out.status.code(), Some(3), "{refused}");
    assert!(
        refused.contains(&format!(
            "{UNIT_PATH} was edited after bitpoll-launcher install wrote it"
        )) && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(b.sha256(UNIT_PATH), edited);
    let out = launcher(&b, &["uninstall", "--config", CONFIG_PATH]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(b.exists(SYSUSERS), "a refused uninstall removed a file");
    let out = launcher(&b, &["install", "--config", CONFIG_PATH, "--force"]);
    let forced = text(&out);
    assert!(out.status.success(), "{forced}");
    assert!(
        forced.contains(&format!("{UNIT_PATH} (replaced, --force)")),
        "{forced}"
    );
    assert_eq!(
        sha(&b, &files),
        before,
        "--force restored the rendered unit"
    );

    // Uninstall: the unit stops and goes, the account and the data stay.
    let db = format!("{DATA_DIR}/db.sqlite3");
    let db_sha = b.sha256(&db);
    let secrets = b.exec_ok(&["ls", &format!("{DATA_DIR}/secrets")]);
    let out = launcher(&b, &["uninstall", "--config", CONFIG_PATH]);
    let removed = text(&out);
    assert!(out.status.success(), "{removed}");
    for path in files {
        assert!(!b.exists(path), "{path} is still there:\n{removed}");
    }
    assert!(
        removed.contains("ran: journalctl --update-catalog"),
        "{removed}"
    );
    let listed = b.exec_ok(&["journalctl", "--list-catalog"]);
    assert!(
        !listed.contains(" bitpoll-launcher: "),
        "the catalog database still has the launcher's entries"
    );
    let state = b.wait_for_state(
        &["LoadState", "ActiveState"],
        Duration::from_secs(30),
        |p| p["LoadState"] == "not-found",
    );
    assert_eq!(state["ActiveState"], "inactive", "{removed}");
    assert!(removed.contains(&format!("kept: the data directory {DATA_DIR}")));
    b.exec_ok(&["id", USER]);
    assert_eq!(b.sha256(&db), db_sha, "the database is kept as it was");
    assert_eq!(
        b.exec_ok(&["ls", &format!("{DATA_DIR}/secrets")]),
        secrets,
        "the generated secrets are kept"
    );

    // Nothing left to remove: uninstall says so and succeeds.
    let out = launcher(&b, &["uninstall", "--config", CONFIG_PATH]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to remove"), "{}", text(&out));
}

/// After install, with the unit running: a data directory given to another user makes the
/// next start refuse (exit status 3, no restart); its record is found by its MESSAGE_ID,
/// carries FINDING_ID, and `journalctl -x` shows the catalog's explanation under it. The
/// directory is given back and the unit started again.
fn journal_explains_a_refused_start(b: &Bitpoll) {
    use launcher_plan::rule::Rule;
    let rule = Rule::DataDirForeignOwner;
    let listed = b.exec_ok(&["journalctl", "--list-catalog"]);
    assert!(
        listed.contains(&format!("{} bitpoll-launcher: ", rule.message_id())),
        "install did not update the catalog database:\n{listed}"
    );
    b.stop_and_reset();
    // Readable to all: the hardened unit has no CAP_DAC_READ_SEARCH to look into a
    // directory of another user's that is closed to others.
    b.exec_ok(&["chown", "nobody", DATA_DIR]);
    b.exec_ok(&["chmod", "0755", DATA_DIR]);
    let (out, _) = b.start(Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "the start with a foreign data directory succeeded"
    );
    let show = b.show(&["ExecMainStatus"]);
    assert_eq!(show["ExecMainStatus"], "3", "{}", b.diagnose(UNIT));

    // journald may take the last records a moment after the process exited.
    b.journal_of_failure(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.get("FINDING_ID") == Some("data_dir.foreign_owner"))
    });
    let by_id = b.exec_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        &format!("MESSAGE_ID={}", rule.message_id()),
    ]);
    let records: Vec<container::JsonRecord> = by_id
        .lines()
        .map(|l| container::JsonRecord::parse(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{by_id}");
    let r = &records[0];
    assert_eq!(r.get("FINDING_ID"), Some("data_dir.foreign_owner"), "{r:?}");
    assert_eq!(
        r.get("SYSLOG_IDENTIFIER"),
        Some("bitpoll-launcher"),
        "{r:?}"
    );
    assert_eq!(r.get("PRIORITY"), Some("3"), "{r:?}");
    // The start's last record says how it ended: under the rule itself when it was the
    // only problem, else under launcher.refused after each problem's own record.
    let last = b
        .launcher_records_of(r.get("_SYSTEMD_INVOCATION_ID").unwrap())
        .into_iter()
        .last()
        .unwrap();
    eprintln!("the refused start's last record: {:?}", last.get("MESSAGE"));
    assert_eq!(last.get("EXIT_CODE"), Some("3"), "{last:?}");
    if last.get("FINDING_ID") != Some("data_dir.foreign_owner") {
        assert_eq!(last.get("FINDING_ID"), Some("launcher.refused"), "{last:?}");
        assert_eq!(
            last.get("MESSAGE_ID"),
            Some(Rule::LauncherRefused.message_id()),
            "{last:?}"
        );
    }
    assert!(
        r.get("MESSAGE")
            .is_some_and(|m| m.contains("is owned by nobody")),
        "{r:?}"
    );

    let explained = b.exec_ok(&["journalctl", "--no-pager", "-x", "-u", UNIT]);
    eprintln!(
        "journalctl -x -u {UNIT}, the end:\n{}",
        tail(&explained, 80)
    );
    for want in [
        "is owned by nobody, not bitpoll; `run` refuses to take it over",
        "░░ Subject: The data directory belongs to another user",
        "░░ Defined-By: bitpoll-launcher",
        "(finding data_dir.foreign_owner)",
        "░░ A directory of the data directory is owned by a user other than the service",
        "░░ What to do: If the files really belong to the service, give them to it once:",
    ] {
        assert!(
            explained.contains(want),
            "journalctl -x lacks {want:?}:\n{explained}"
        );
    }

    b.stop_and_reset();
    b.exec_ok(&["chown", &format!("{USER}:{USER}"), DATA_DIR]);
    b.exec_ok(&["chmod", "0750", DATA_DIR]);
    b.start_ok();
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
