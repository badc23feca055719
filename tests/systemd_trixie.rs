//! The units under systemd 257: Debian trixie's root file system (tests/setup-trixie.sh:
//! mmdebstrap with systemd, dbus, python3 and the demo app's venv built with trixie's
//! Python 3.13) booted as PID 1 of a systemd-nspawn container by the same harness as
//! tests/systemd.rs (container/mod.rs, `root_dir`).
//!
//! - the unit `bitpoll-launcher unit` renders, with `restart_steps` and
//!   `restart_max_delay_sec`, verifies clean and serves; so does the unit as the NixOS
//!   module renders it (nixos/hardening.toml and nixos/unit-directives.nix evaluated by
//!   nix-instantiate, with the keys module.nix adds itself);
//! - restart backoff: a server that keeps failing is restarted after growing delays,
//!   RestartSec= up to RestartMaxDelaySec= over RestartSteps=;
//! - in legacy cgroup mode (`legacy_cgroups`, the only way this host's v1 memory and pids
//!   controllers reach the container's systemd), MemoryMax= and TasksMax= are enforced,
//!   and the launcher and the app behave at the limits as docs/hardening.md says: a worker
//!   killed by the OOM killer is replaced and the unit stays up; a preparation killed by it
//!   fails the start (status 1, no stamp) and the restart policy applies; a server that
//!   cannot fork its workers fails the unit, which is restarted; nothing hangs.
//!
//! Need root, systemd-nspawn and what setup-trixie.sh needs (mmdebstrap, the Debian
//! mirror, PyPI); elsewhere each test prints a SKIP line and passes, unless
//! BITPOLL_REQUIRE_SYSTEMD_TESTS=1.
//!
//! Run: `cargo test --test suite systemd_trixie:: -- --test-threads=1`

use crate::container;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use container::JsonRecord;
use container::bitpoll::{self, Bitpoll, DATA_DIR, IDENT, Spec, UNIT, UNIT_PATH, USER};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The root slot (container::require_root_and_nspawn) and the trixie root file system with
/// the demo venv, made (or found) once per test process.
fn trixie() -> Option<(std::sync::MutexGuard<'static, ()>, PathBuf)> {
    let slot = container::require_root_and_nspawn()?;
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    Some((
        slot,
        ROOT.get_or_init(|| {
            let out = Command::new("bash")
                .arg(Path::new(REPO).join("tests/setup-trixie.sh"))
                .arg("rootfs")
                .output()
                .expect("run tests/setup-trixie.sh");
            assert!(
                out.status.success(),
                "tests/setup-trixie.sh rootfs failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone(),
    ))
}

fn message_has(r: &JsonRecord, needle: &str) -> bool {
    r.get("MESSAGE").is_some_and(|m| m.contains(needle))
}

fn at(r: &JsonRecord) -> u64 {
    r.get("_SOURCE_REALTIME_TIMESTAMP")
        .or_else(|| r.get("__REALTIME_TIMESTAMP"))
        .and_then(|t| t.parse().ok())
        .expect("a timestamp")
}

/// The launcher's records that end a run (PHASE=exec with DURATION_MS): one per start
/// that got as far as executing the server.
fn exec_records(b: &Bitpoll) -> Vec<JsonRecord> {
    b.launcher_records()
        .into_iter()
        .filter(|r| r.is("PHASE", "exec") && r.get("DURATION_MS").is_some())
        .collect()
}

fn systemd_version(b: &Bitpoll) -> u32 {
    let v = b.exec_ok(&["systemctl", "--version"]);
    v.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no version in {v:?}"))
}

/// `systemd-analyze verify` of the installed unit: clean, no unknown directive.
fn verifies(b: &Bitpoll) {
    let out = b.exec(&["systemd-analyze", "verify", UNIT_PATH]);
    let text = bitpoll::text(&out);
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    assert!(
        !text.contains("Unknown") && !text.contains("unknown"),
        "systemd 257 does not know a directive of the unit:\n{text}"
    );
}

fn whoami_uid(b: &Bitpoll) -> u64 {
    let (code, body) = b.http_get("/whoami");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/whoami is JSON");
    v["uid"].as_u64().expect("a uid")
}

// ---------------------------------------------------------------------------------------
// The unit as the NixOS module renders it

/// The keys module.nix sets itself besides the hardening list and the [unit] table, as it
/// writes them (checked against the file, so the two cannot drift apart).
const MODULE_KEYS: [(&str, &str, &str); 6] = [
    ("Type", "notify", "Type = \"notify\";"),
    (
        "SyslogIdentifier",
        "bitpoll",
        "SyslogIdentifier = \"bitpoll\";",
    ),
    ("Restart", "on-failure", "Restart = \"on-failure\";"),
    (
        "RestartPreventExitStatus",
        "2 3 4",
        "RestartPreventExitStatus = \"2 3 4\";",
    ),
    ("TimeoutStartSec", "5min", "TimeoutStartSec = \"5min\";"),
    ("NotifyAccess", "main", "NotifyAccess = notifyAccess;"),
];

/// The privileged unit as NixOS renders `systemd.services.bitpoll`: the `[Service]`
/// tables of nixos/hardening.toml, nixos/unit-directives.nix applied to the defaults
/// under `unit` (TOML), and the module's own keys; lists as one line per element.
fn nixos_style_unit(unit: &str) -> Option<String> {
    let module = std::fs::read_to_string(Path::new(REPO).join("nixos/module.nix")).unwrap();
    for (_, _, literal) in MODULE_KEYS {
        assert!(
            module.contains(literal),
            "nixos/module.nix no longer has {literal:?}"
        );
    }
    let present = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        if std::env::var_os("BITPOLL_SKIP_NIX").is_some() {
            return None;
        }
        panic!("nix-instantiate is missing: apt-get install nix-bin (or set BITPOLL_SKIP_NIX=1)");
    }
    let fixed: String = MODULE_KEYS
        .iter()
        .map(|(k, v, _)| format!("{k} = \"{v}\"; "))
        .collect();
    let expr = format!(
        r#"{{ unitToml }}:
let
  h = builtins.fromTOML (builtins.readFile ./nixos/hardening.toml);
  defaults = builtins.fromTOML (builtins.readFile ./nixos/unit-defaults.toml);
  u = import ./nixos/unit-directives.nix (defaults // builtins.fromTOML unitToml);
  service = h.Service // h.Privileged // u.serviceConfig // {{ {fixed}
    ExecStart = "/usr/local/bin/bitpoll-launcher run --config /etc/bitpoll/launcher.toml";
    ReadWritePaths = [ "{DATA_DIR}" ];
  }};
  s = v: if builtins.isBool v then (if v then "true" else "false") else toString v;
  l = n: v: if builtins.isList v then builtins.concatStringsSep "" (map (x: "${{n}}=${{s x}}\n") v)
            else "${{n}}=${{s v}}\n";
  lines = a: builtins.concatStringsSep "" (builtins.attrValues (builtins.mapAttrs l a));
in "[Unit]\nDescription=Bitpoll (polls and date finding)\n" + lines u.unitConfig
   + "\n[Service]\n" + lines service"#
    );
    let out = Command::new("nix-instantiate")
        .current_dir(REPO)
        .args([
            "--eval", "--strict", "--json", "--argstr", "unitToml", unit, "-E", &expr,
        ])
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text: String = serde_json::from_slice(&out.stdout).expect("a JSON string");
    Some(text)
}

#[test]
fn systemd_257_runs_the_rendered_unit_and_the_nixos_style_unit() {
    let Some((_root_slot, root)) = trixie() else {
        return;
    };
    let unit_toml = "restart_steps = 3\nrestart_max_delay_sec = 20\n";
    let b = bitpoll::install(
        "t257",
        Spec::default()
            .root_dir(&root)
            .unit_line("restart_steps = 3")
            .unit_line("restart_max_delay_sec = 20"),
    );
    let version = systemd_version(&b);
    eprintln!("systemd {version} in the container");
    assert!(version >= 257, "systemd {version}: not trixie's");
    verifies(&b);
    let show = b.show(&["RestartSteps", "RestartMaxDelayUSec", "RestartUSec"]);
    assert_eq!(show["RestartSteps"], "3", "{show:?}");
    assert_eq!(show["RestartMaxDelayUSec"], "20s", "{show:?}");
    let took = b.start_ok();
    eprintln!("the rendered unit: started in {:.2}s", took.as_secs_f64());
    assert_eq!(b.http_get("/healthz").0, 200);
    let (uid, _) = b.service_ids();
    assert_eq!(whoami_uid(&b), u64::from(uid), "the app runs as {USER}");
    let python = b.exec_ok(&[
        &format!("{}/bin/python", bitpoll::VENV),
        "-c",
        "import sys; print('%d.%d' % sys.version_info[:2])",
    ]);
    eprintln!("the app on Python {}", python.trim());
    b.stop_and_reset();

    // The unit as NixOS renders it, in place of the other one.
    let Some(unit) = nixos_style_unit(unit_toml) else {
        crate::util::skip("the NixOS-style unit: BITPOLL_SKIP_NIX=1");
        return;
    };
    b.write_file(UNIT_PATH, unit.as_bytes(), 0o644);
    b.exec_ok(&["systemctl", "daemon-reload"]);
    verifies(&b);
    let show = b.show(&["RestartSteps", "RestartMaxDelayUSec", "SyslogIdentifier"]);
    assert_eq!(show["RestartSteps"], "3", "{show:?}");
    assert_eq!(show["SyslogIdentifier"], "bitpoll", "{show:?}");
    let took = b.start_ok();
    eprintln!(
        "the NixOS-style unit: started in {:.2}s",
        took.as_secs_f64()
    );
    assert_eq!(b.http_get("/healthz").0, 200);
    assert_eq!(whoami_uid(&b), u64::from(uid));
    let status = b.proc_status(b.main_pid());
    assert_eq!(status["CapEff"], "0000000000000000", "{status:?}");
    assert_eq!(status["CapBnd"], "0000000000000000", "{status:?}");
}

#[test]
fn a_server_that_keeps_failing_is_restarted_after_growing_delays() {
    let Some((_root_slot, root)) = trixie() else {
        return;
    };
    let b = bitpoll::install(
        "steps",
        Spec::default()
            .root_dir(&root)
            .command("[\"/bin/false\"]")
            .unit_line("restart_sec = 1")
            .unit_line("restart_steps = 3")
            .unit_line("restart_max_delay_sec = 20")
            .unit_line("start_limit_burst = 20"),
    );
    b.start_no_block();
    // Five starts: four restarts, the waits growing from 1 s to 20 s over three steps.
    let deadline = Instant::now() + Duration::from_secs(120);
    let execs = loop {
        let execs = exec_records(&b);
        if execs.len() >= 5 {
            break execs;
        }
        assert!(
            Instant::now() < deadline,
            "{} starts in 120 s:\n{}",
            execs.len(),
            b.diagnose(UNIT)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = b.systemctl(&["stop", UNIT]);
    let _ = b.systemctl(&["reset-failed", UNIT]);
    let times: Vec<u64> = execs.iter().map(at).collect();
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .take(4)
        .collect();
    eprintln!(
        "gaps between the starts: {}",
        gaps.iter()
            .map(|g| format!("{g:.2}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for w in gaps.windows(2) {
        assert!(w[1] > w[0] * 1.5, "the waits do not grow: {gaps:?}");
    }
    assert!(
        gaps[0] < 5.0,
        "the first wait is not RestartSec=1s: {gaps:?}"
    );
    assert!(
        (18.0..30.0).contains(&gaps[3]),
        "the fourth wait is not RestartMaxDelaySec=20s: {gaps:?}"
    );
    let invocations: BTreeSet<&str> = execs
        .iter()
        .filter_map(|r| r.get("_SYSTEMD_INVOCATION_ID"))
        .collect();
    assert_eq!(invocations.len(), execs.len(), "one start per invocation");
}

/// A cgroup file of the unit, as its systemd set it (legacy hierarchy).
fn unit_cgroup(b: &Bitpoll, controller: &str, file: &str) -> String {
    let path = format!("/sys/fs/cgroup/{controller}/system.slice/{UNIT}/{file}");
    b.exec_ok(&["cat", &path]).trim().to_owned()
}

fn journal_since(b: &Bitpoll, cursor_time: u64) -> Vec<JsonRecord> {
    b.journal_json(UNIT)
        .into_iter()
        .filter(|r| at(r) >= cursor_time)
        .collect()
}

fn now_usec(b: &Bitpoll) -> u64 {
    b.exec_ok(&["date", "+%s%6N"])
        .trim()
        .parse()
        .expect("a time")
}

#[test]
fn memory_and_task_limits_hold_and_nothing_hangs_at_them() {
    let Some((_root_slot, root)) = trixie() else {
        return;
    };
    let b = bitpoll::install(
        "limits",
        Spec::default()
            .root_dir(&root)
            .legacy_cgroups()
            .unit_line("memory_high = \"150M\"")
            .unit_line("memory_max = \"200M\"")
            .unit_line("tasks_max = 24")
            .unit_line("restart_sec = 1")
            .unit_line("start_limit_burst = 3"),
    );
    b.start_ok();
    assert_eq!(b.http_get("/healthz").0, 200);
    // The limits are the unit's, in the kernel.
    assert_eq!(
        unit_cgroup(&b, "memory", "memory.limit_in_bytes"),
        (200u64 << 20).to_string()
    );
    assert_eq!(unit_cgroup(&b, "pids", "pids.max"), "24");
    let main = b.main_pid();

    // A worker taking more than MemoryMax= is killed by the kernel; gunicorn starts a new
    // one and the unit stays up, with its main process.
    let t = now_usec(&b);
    let out = b.exec(&[
        "/usr/bin/python3",
        "-c",
        "import urllib.request, sys\n\
         try:\n    urllib.request.urlopen('http://127.0.0.1:8000/allocate?mb=400', timeout=60).read()\n    print('answered')\n\
         except Exception as e:\n    print('failed:', type(e).__name__)",
    ]);
    let said = bitpoll::text(&out);
    eprintln!("a request taking 400 MiB: {}", said.trim());
    assert!(said.contains("failed"), "{said}");
    let recs = b.journal_json_until(UNIT, Duration::from_secs(20), |recs| {
        recs.iter()
            .any(|r| at(r) >= t && message_has(r, "was sent SIGKILL"))
    });
    let line = recs
        .iter()
        .find(|r| at(r) >= t && message_has(r, "was sent SIGKILL"))
        .and_then(|r| r.get("MESSAGE"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("gunicorn: {line}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.http_get("/healthz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "no worker again:\n{}",
            b.diagnose(UNIT)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let show = b.show(&["ActiveState", "NRestarts", "MainPID"]);
    assert_eq!(show["ActiveState"], "active", "{show:?}");
    assert_eq!(show["NRestarts"], "0", "{show:?}");
    assert_eq!(b.main_pid(), main, "the server's main process was replaced");
    let failcnt: u64 = unit_cgroup(&b, "memory", "memory.failcnt").parse().unwrap();
    assert!(failcnt > 0, "the memory limit was never reached");

    // A preparation taking more than MemoryMax= is killed by the kernel: the start fails
    // with the launcher's message and status 1, no stamp is written, and the restart
    // policy applies until the start limit; the unit ends failed, not hanging.
    b.stop_and_reset();
    b.exec_ok(&[
        "sh",
        "-c",
        &format!("rm -rf {DATA_DIR}/* && rm -f {DATA_DIR}/.??*"),
    ]);
    let spec = b.spec.clone().env("DEMO_MIGRATION_MEMORY_MB", "400");
    b.write_config(&spec.config());
    let t = now_usec(&b);
    let started = Instant::now();
    b.start_no_block();
    let p = b.wait_for_state(
        &["ActiveState", "Result", "NRestarts", "ExecMainStatus"],
        Duration::from_secs(120),
        |p| p["ActiveState"] == "failed",
    );
    eprintln!(
        "a preparation over MemoryMax: {p:?} after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(p["ExecMainStatus"], "1", "{p:?}");
    let restarts: u32 = p["NRestarts"].parse().expect("a number");
    assert!(
        restarts >= 2,
        "not restarted until StartLimitBurst=3: {p:?}"
    );
    let recs = journal_since(&b, t);
    let killed: Vec<String> = recs
        .iter()
        .filter(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && r.is("PRIORITY", "3"))
        .filter_map(|r| r.get("MESSAGE").map(str::to_owned))
        .collect();
    eprintln!(
        "the launcher said: {}",
        killed.first().cloned().unwrap_or_default()
    );
    assert!(
        killed
            .iter()
            .any(|m| m.contains("step migrate failed (killed by signal 9)")),
        "{}",
        bitpoll::messages(&recs)
    );
    assert!(
        !b.exists(&format!("{DATA_DIR}/state/migrate.stamp")),
        "a stamp was written for a killed migrate"
    );
    let _ = b.systemctl(&["reset-failed", UNIT]);

    // A server that cannot fork its workers under TasksMax= fails and is restarted. (The
    // memory limit out of the way: forty workers would meet it first.)
    b.drop_in(
        "memory.conf",
        "[Service]\nMemoryHigh=infinity\nMemoryMax=infinity\n",
    );
    b.write_config(
        &b.spec
            .clone()
            .command(&format!(
                r#"["{}/bin/gunicorn", "--bind", "127.0.0.1:8000", "--workers", "40",
                   "--no-control-socket", "--preload", "bitpoll.wsgi:application"]"#,
                bitpoll::VENV
            ))
            .config(),
    );
    let t = now_usec(&b);
    b.start_no_block();
    let p = b.wait_for_state(
        &["ActiveState", "Result", "NRestarts", "ExecMainStatus"],
        Duration::from_secs(120),
        |p| p["ActiveState"] == "failed",
    );
    eprintln!("forty workers under TasksMax=24: {p:?}");
    let recs = journal_since(&b, t);
    assert_eq!(
        p["ExecMainStatus"],
        "255",
        "{p:?}\n{}",
        bitpoll::messages(&recs)
    );
    let restarts: u32 = p["NRestarts"].parse().expect("a number");
    assert!(
        restarts >= 2,
        "not restarted until StartLimitBurst=3: {p:?}"
    );
    let fork = recs
        .iter()
        .find(|r| message_has(r, "Resource temporarily unavailable"))
        .unwrap_or_else(|| panic!("no failed fork:\n{}", bitpoll::messages(&recs)));
    eprintln!("gunicorn: {}", fork.get("MESSAGE").unwrap_or_default());
    assert!(
        recs.iter()
            .any(|r| message_has(r, "Unhandled exception in main loop")),
        "{}",
        bitpoll::messages(&recs)
    );
    let _ = b.systemctl(&["reset-failed", UNIT]);
}
