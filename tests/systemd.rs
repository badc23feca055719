//! End-to-end tests under a real systemd (PID 1 of a throw-away systemd-nspawn container).
//! They need root and systemd-nspawn; elsewhere each prints a SKIP line and passes, unless
//! BITPOLL_REQUIRE_SYSTEMD_TESTS=1.
//!
//! First the harness itself (container boot, teardown, stale cleanup, journal parsing), then
//! Bitpoll: each test boots its own container, installs the demo app with the account, data
//! directory and unit exactly as `bitpoll-launcher sysusers|tmpfiles|unit` print them (the
//! hardening of nixos/hardening.toml, see container/bitpoll.rs) and checks one behaviour of
//! the launcher as a real `Type=notify` unit. They need the demo venv (tests/setup-venv.sh,
//! run on the first use).
//!
//! Run: `cargo test --test suite systemd:: -- --test-threads=1 --nocapture`

use crate::container;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use container::bitpoll::{
    self, DATA_DIR, FEK_CREDENTIAL, FEK_PATH, Fek, IDENT, Spec, UNIT, UNIT_PATH, USER,
};
use container::{ContainerBuilder, JsonRecord, LAUNCHER_PATH, cleanup_stale, leftovers};

/// A Type=notify service: sleeps, then sends READY=1 and a STATUS= that reports what its
/// sandbox looks like, then idles.
const NOTIFY_DEMO: &str = r#"import os, socket, sys, time

def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(msg.encode())

def probe(fn):
    try:
        return str(fn())
    except OSError as e:
        return type(e).__name__

def write(path):
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)
    return "ok"

def nnp():
    for line in open("/proc/self/status"):
        if line.startswith("NoNewPrivs:"):
            return line.split()[1]

probes = {
    "usr": probe(lambda: write("/usr/blt-probe")),
    "home": probe(lambda: len(os.listdir("/root"))),
    "marker": probe(lambda: os.path.exists("/tmp/blt-host-marker")),
    "tmp": probe(lambda: write("/tmp/blt-probe")),
    "nnp": probe(nnp),
}
print("hello from the notify demo", flush=True)
time.sleep(1)
notify("READY=1\nSTATUS=demo ready " + " ".join("%s=%s" % kv for kv in sorted(probes.items())))
print("sent READY=1", flush=True)
while True:
    time.sleep(3600)
"#;

const DEMO_UNIT: &str = "\
[Unit]
Description=blt notify demo

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/python3 /usr/local/lib/blt-demo/notify.py
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
";

fn assert_gone(name: &str) {
    let left = leftovers(name);
    assert!(
        left.is_empty(),
        "container {name} left traces:\n{}",
        left.join("\n")
    );
}

#[test]
fn container_boots_and_runs_a_notify_unit() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let c = ContainerBuilder::new("notify")
        .with_launcher()
        .file("/usr/local/lib/blt-demo/notify.py", NOTIFY_DEMO, 0o644)
        .boot();
    let name = c.name().to_owned();

    // The launcher is bound read-only; the root is the host's / seen through the overlay.
    c.exec_ok(&["test", "-x", LAUNCHER_PATH]);
    let append = c.exec(&["sh", "-c", &format!(": >> {LAUNCHER_PATH}")]);
    assert!(
        !append.status.success(),
        "the launcher bind mount is writable"
    );
    assert_eq!(c.exec_ok(&["hostname"]).trim(), name);
    assert_ne!(
        c.exec_ok(&["cat", "/etc/machine-id"]).trim(),
        std::fs::read_to_string("/etc/machine-id")
            .unwrap_or_default()
            .trim(),
        "the container must have its own machine id"
    );

    // A command that hangs is killed at its timeout, and says so.
    let t = Instant::now();
    let hung = c.exec_with_timeout(&["sleep", "60"], Duration::from_secs(1));
    eprintln!(
        "hung command returned after {:.3}s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        !hung.status.success() && t.elapsed() < Duration::from_secs(10),
        "{hung:?}"
    );
    assert!(
        String::from_utf8_lossy(&hung.stderr).contains("timed out"),
        "{hung:?}"
    );

    // In the container's /tmp (a tmpfs nspawn mounts): PrivateTmp= must hide it.
    c.write_file(
        "/tmp/blt-host-marker",
        b"the service must not see this\n",
        0o644,
    );
    c.exec_ok(&["test", "-f", "/tmp/blt-host-marker"]);

    c.write_file(
        "/etc/systemd/system/blt-demo.service",
        DEMO_UNIT.as_bytes(),
        0o644,
    );
    c.exec_ok(&["systemctl", "daemon-reload"]);

    let t = Instant::now();
    c.exec_ok(&["systemctl", "start", "blt-demo.service"]);
    let took = t.elapsed();
    eprintln!(
        "systemctl start blt-demo.service took {:.3}s",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(900),
        "start returned before READY=1 ({took:?})"
    );

    assert_eq!(
        c.exec_ok(&["systemctl", "is-active", "blt-demo.service"])
            .trim(),
        "active"
    );
    let show = c.show(
        "blt-demo.service",
        &["ActiveState", "SubState", "MainPID", "StatusText", "Type"],
    );
    eprintln!("{show:?}");
    assert_eq!(show["ActiveState"], "active");
    assert_eq!(show["SubState"], "running");
    assert_eq!(show["Type"], "notify");
    assert_ne!(show["MainPID"], "0", "no MainPID");
    // The hardening took effect in the service (probes reported through STATUS=).
    assert_eq!(
        show["StatusText"], "demo ready home=0 marker=False nnp=1 tmp=ok usr=OSError",
        "STATUS= text"
    );
    // ProtectSystem=strict: EROFS (a plain OSError in Python); ProtectHome=yes: /root is
    // an empty directory (the host's /root is not empty); PrivateTmp=yes: no marker.

    let recs = c.journal_json_until("blt-demo.service", Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("_TRANSPORT", "stdout") && r.is("MESSAGE", "sent READY=1"))
            && recs.iter().any(|r| {
                r.is("UNIT", "blt-demo.service")
                    && r.is("JOB_TYPE", "start")
                    && r.is("JOB_RESULT", "done")
            })
    });
    let hello: Vec<&JsonRecord> = recs
        .iter()
        .filter(|r| r.is("MESSAGE", "hello from the notify demo"))
        .collect();
    assert_eq!(hello.len(), 1, "{recs:?}");
    assert_eq!(hello[0].get("_SYSTEMD_UNIT"), Some("blt-demo.service"));
    assert_eq!(hello[0].get("_PID"), Some(show["MainPID"].as_str()));
    assert_eq!(hello[0].get("_HOSTNAME"), Some(name.as_str()));

    drop(c);
    assert_gone(&name);
}

#[test]
fn teardown_happens_when_a_test_panics() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let seen: Mutex<Option<String>> = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = ContainerBuilder::new("panic").boot();
        *seen.lock().unwrap() = Some(c.name().to_owned());
        c.exec_ok(&["systemctl", "is-system-running"]);
        // A failing command inside: exec_ok panics, the unwinding drops the container.
        c.exec_ok(&["sh", "-c", "echo deliberate failure >&2; exit 3"]);
    }));
    let err = result.expect_err("exec_ok should have panicked");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("deliberate failure") && msg.contains("exit status: 3"),
        "panic message: {msg}"
    );
    let name = seen.lock().unwrap().clone().expect("the container booted");
    assert_gone(&name);
}

#[test]
fn stale_leftovers_are_cleaned() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    // A container leaked with its nspawn SIGKILLed: as a test process killed mid-run leaves.
    let c = ContainerBuilder::new("leak").boot();
    let name = c.name().to_owned();
    let nspawn = c.nspawn_pid();
    std::mem::forget(c);
    let status = Command::new("kill")
        .args(["-KILL", &nspawn.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(100));
    let left = leftovers(&name);
    eprintln!("left behind by the killed nspawn:\n{}", left.join("\n"));
    assert!(left.iter().any(|l| l.starts_with("mount:")), "{left:?}");
    assert!(left.iter().any(|l| l.starts_with("cgroup dir")), "{left:?}");

    let cleaned = cleanup_stale();
    assert!(
        cleaned.contains(&name),
        "cleanup_stale cleaned {cleaned:?}, not {name}"
    );
    assert_gone(&name);
}

#[test]
fn a_failed_boot_is_reported_and_cleaned_up() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let result = std::panic::catch_unwind(|| {
        // nspawn refuses the option and exits before a PID 1 exists.
        ContainerBuilder::new("badboot")
            .nspawn_arg("--no-such-option")
            .boot()
    });
    let err = result.expect_err("the boot should have failed");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("systemd-nspawn exited early"),
        "panic message: {msg}"
    );
    assert!(
        msg.contains("no-such-option"),
        "no console output in: {msg}"
    );
    let name = msg
        .strip_prefix("[container ")
        .and_then(|rest| rest.split_once(']'))
        .map(|(name, _)| name.to_owned())
        .expect("a container name in the message");
    assert_gone(&name);
}

const HELPER_ENV: &str = "BLT_HELPER_READY_FILE";

/// Not a test of its own: the child process of
/// `stale_leftovers_of_a_killed_test_process_are_cleaned`, which boots a container, reports
/// its name and waits to be SIGKILLed.
#[test]
#[ignore = "helper process for stale_leftovers_of_a_killed_test_process_are_cleaned"]
fn helper_boot_then_wait_to_be_killed() {
    let Ok(ready_file) = std::env::var(HELPER_ENV) else {
        return;
    };
    let c = ContainerBuilder::new("killed").boot();
    std::fs::write(&ready_file, c.name()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn stale_leftovers_of_a_killed_test_process_are_cleaned() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let ready_file = std::env::temp_dir().join(format!("blt-helper-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready_file);
    // libtest names a test by its module path inside the test binary, without the crate.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let helper_name = format!("{module}::helper_boot_then_wait_to_be_killed");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", helper_name.as_str(), "--ignored", "--nocapture"])
        .env(HELPER_ENV, &ready_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let name = loop {
        if let Ok(name) = std::fs::read_to_string(&ready_file) {
            if !name.is_empty() {
                break name;
            }
        }
        if let Some(status) = helper.try_wait().unwrap() {
            panic!("the helper exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the helper did not boot a container"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&ready_file);
    helper.kill().unwrap();
    helper.wait().unwrap();
    let left = leftovers(&name);
    eprintln!(
        "left behind by the killed test process:\n{}",
        left.join("\n")
    );
    assert!(left.iter().any(|l| l.starts_with("process")), "{left:?}");

    let cleaned = cleanup_stale();
    assert!(
        cleaned.contains(&name),
        "cleanup_stale cleaned {cleaned:?}, not {name}"
    );
    assert_gone(&name);
}

#[test]
fn journal_json_records_are_parsed() {
    let r = JsonRecord::parse(
        r#"{"MESSAGE":"h\u00e9llo \"x\"\n","_PID":"12","BIN":[104,105],"N":null,"M":["a",[98]],"E":"\ud83d\ude00","P":6}"#,
    )
    .unwrap();
    assert_eq!(r.get("MESSAGE"), Some("h\u{e9}llo \"x\"\n"));
    assert_eq!(r.get("_PID"), Some("12"));
    assert_eq!(r.get("BIN"), Some("hi"));
    assert_eq!(r.get("N"), None);
    assert_eq!(r.get_all("M"), ["a", "b"]);
    assert_eq!(r.get("E"), Some("\u{1F600}"));
    assert_eq!(r.get("P"), Some("6"));
    assert!(r.is("M", "b"));
    for bad in ["{\"a\":", "[1]", "{\"a\":1} x", "{\"a\":\"\\q\"}", ""] {
        assert!(JsonRecord::parse(bad).is_err(), "{bad:?} parsed");
    }
}

// ---------------------------------------------------------------------------------------
// Bitpoll under systemd: the launcher as the ExecStart of the unit `bitpoll-launcher unit`
// renders (hardening from nixos/hardening.toml), serving the demo app with gunicorn.

/// The launcher records that carry `field` (any value).
fn with_field<'a>(recs: &'a [JsonRecord], field: &str) -> Vec<&'a JsonRecord> {
    recs.iter().filter(|r| r.get(field).is_some()).collect()
}

fn message_has(r: &JsonRecord, needle: &str) -> bool {
    r.get("MESSAGE").is_some_and(|m| m.contains(needle))
}

/// systemd's "Started bitpoll.service" record (the start job finished).
fn started_record(r: &JsonRecord) -> bool {
    r.is("UNIT", UNIT) && r.is("JOB_TYPE", "start") && r.is("JOB_RESULT", "done")
}

fn source_time(r: &JsonRecord) -> u64 {
    r.get("_SOURCE_REALTIME_TIMESTAMP")
        .or_else(|| r.get("__REALTIME_TIMESTAMP"))
        .and_then(|t| t.parse().ok())
        .expect("a journal record has a timestamp")
}

/// The value of a `/proc/PID/status` line, whitespace-separated.
fn status_fields<'a>(status: &'a HashMap<String, String>, key: &str) -> Vec<&'a str> {
    status
        .get(key)
        .unwrap_or_else(|| panic!("no {key}: line in {status:?}"))
        .split_whitespace()
        .collect()
}

/// The JSON body of /whoami (tests/demo-app/bitpoll/poll/views.py).
fn whoami_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/whoami is not JSON ({e}): {body}"))
}

#[test]
fn start_returns_after_ready_and_the_server_keeps_the_launchers_pid_without_privileges() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("ready", Spec::default());
    let took = b.start_ok();
    eprintln!("systemctl start {UNIT} took {:.3}s", took.as_secs_f64());

    // Right after `systemctl start` returned, with no polling: the start job waited for
    // READY=1, which gunicorn's arbiter (the main process) sends once a worker answered
    // its warm-up request (server.ready = "answer", the default for gunicorn), saying so
    // in STATUS=.
    let show = b.show(&[
        "ActiveState",
        "SubState",
        "Type",
        "NotifyAccess",
        "MainPID",
        "StatusText",
    ]);
    eprintln!("{show:?}");
    assert_eq!(show["ActiveState"], "active", "{}", b.diagnose(UNIT));
    assert_eq!(show["SubState"], "running");
    assert_eq!(show["Type"], "notify");
    assert_eq!(show["NotifyAccess"], "main");
    let status = &show["StatusText"];
    assert!(
        status.starts_with("Gunicorn worker ") && status.contains(" answered GET / (200 OK in "),
        "{status}"
    );
    let (code, body) = b.http_get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _) = b.http_get("/");
    assert_eq!(
        code, 200,
        "the index page (templates, static manifest, catalogs)"
    );

    // MainPID is the gunicorn master: exec kept the launcher's PID.
    let main = b.main_pid();
    let cmdline = b.exec_ok(&["cat", &format!("/proc/{main}/cmdline")]);
    let argv: Vec<&str> = cmdline.split('\0').filter(|a| !a.is_empty()).collect();
    eprintln!("MainPID {main}: {argv:?}");
    assert!(
        argv.iter().any(|a| a.ends_with("/gunicorn")) && argv.contains(&"bitpoll.wsgi:application"),
        "MainPID {main} is not the gunicorn master: {argv:?}"
    );
    let recs = b.wait_journal(Duration::from_secs(10), |recs| {
        recs.iter().any(started_record)
            && recs
                .iter()
                .any(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && r.is("PHASE", "exec"))
    });
    let launcher: Vec<&JsonRecord> = recs
        .iter()
        .filter(|r| r.is("SYSLOG_IDENTIFIER", IDENT))
        .collect();
    assert!(launcher.len() > 5, "{}", bitpoll::messages(&recs));
    let main_s = main.to_string();
    for r in &launcher {
        assert_eq!(
            r.get("_PID"),
            Some(main_s.as_str()),
            "a launcher record from another process than MainPID: {r:?}"
        );
    }
    // The launcher's last words (just before exec) come before systemd saw READY=1.
    let exec = launcher
        .iter()
        .find(|r| r.is("PHASE", "exec"))
        .expect("the exec record");
    let started = recs.iter().find(|r| started_record(r)).expect("Started");
    assert!(
        source_time(exec) < source_time(started),
        "systemd reported the start done before the launcher exec'd the server"
    );

    // The served processes: the service user's ids, no capabilities, no_new_privs.
    let (uid, gid) = b.service_ids();
    let status = b.proc_status(main);
    let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
    assert_eq!(
        status_fields(&status, "Uid"),
        [uid_s.as_str(); 4],
        "{status:?}"
    );
    assert_eq!(
        status_fields(&status, "Gid"),
        [gid_s.as_str(); 4],
        "{status:?}"
    );
    assert_eq!(
        status_fields(&status, "Groups"),
        [gid_s.as_str()],
        "{status:?}"
    );
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(
            status_fields(&status, cap),
            ["0000000000000000"],
            "{cap} of the served process"
        );
    }
    assert_eq!(status_fields(&status, "NoNewPrivs"), ["1"]);
    assert_eq!(status_fields(&status, "Seccomp"), ["2"], "SystemCallFilter");
    // And the worker that answered.
    let (code, who) = b.http_get("/whoami");
    assert_eq!(code, 200, "{who}");
    eprintln!("/whoami: {who}");
    let w = whoami_json(&who);
    assert_eq!(w["uid"].as_u64(), Some(u64::from(uid)), "{who}");
    assert_eq!(w["gid"].as_u64(), Some(u64::from(gid)), "{who}");
    assert_eq!(w["ppid"].as_u64(), Some(u64::from(main)), "{who}");
}

#[test]
fn the_journal_has_the_launchers_structured_records_and_status_follows_the_phases() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("journal", Spec::default().env("DEMO_MIGRATION_DELAY", "3"));
    b.start_no_block();
    // Watch systemd's StatusText while the unit activates.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        let p = b.show(&["ActiveState", "SubState", "StatusText"]);
        let pair = (p["ActiveState"].clone(), p["StatusText"].clone());
        if seen.last() != Some(&pair) {
            eprintln!("{} / {:?}", pair.0, pair.1);
            seen.push(pair.clone());
        }
        if pair.0 == "active" {
            break;
        }
        assert!(!b.failed(&p), "the start failed:\n{}", b.diagnose(UNIT));
        assert!(
            Instant::now() < deadline,
            "still not active: {seen:?}\n{}",
            b.diagnose(UNIT)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.iter()
            .any(|(state, text)| state == "activating" && text == "Preparing: migrate (1/3)"),
        "the launcher's STATUS= for the migration was not seen while activating: {seen:?}"
    );
    let last = seen.last().map(|(_, t)| t.as_str()).unwrap_or_default();
    assert!(
        last.starts_with("Gunicorn worker ") && last.contains(" answered GET / (200 OK in "),
        "{seen:?}"
    );

    let inv = b.invocation_id();
    let recs = b.wait_journal(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && r.is("PHASE", "exec"))
    });
    let launcher: Vec<JsonRecord> = recs
        .iter()
        .filter(|r| r.is("SYSLOG_IDENTIFIER", IDENT))
        .cloned()
        .collect();
    let dump = bitpoll::messages(&launcher);
    for r in &launcher {
        // journald's native protocol, not a stderr line.
        assert_eq!(r.get("_TRANSPORT"), Some("journal"), "{r:?}");
        assert_eq!(r.get("_SYSTEMD_INVOCATION_ID"), Some(inv.as_str()), "{r:?}");
    }
    // Every phase ends with a record carrying its duration.
    for phase in [
        "config",
        "preflight",
        "account",
        "directories",
        "secrets",
        "prepare",
        "drop",
        "exec",
    ] {
        let timed: Vec<&JsonRecord> = launcher
            .iter()
            .filter(|r| r.is("PHASE", phase) && r.get("STEP").is_none())
            .filter(|r| {
                r.get("DURATION_MS")
                    .is_some_and(|d| d.parse::<u64>().is_ok())
            })
            .collect();
        assert!(
            !timed.is_empty(),
            "no PHASE={phase} record with DURATION_MS:\n{dump}"
        );
        eprintln!(
            "PHASE={phase} DURATION_MS={}: {}",
            timed[0].get("DURATION_MS").unwrap_or(""),
            timed[0].get("MESSAGE").unwrap_or("")
        );
    }
    // Every step: its output and its end, with STEP and DURATION_MS.
    for step in ["migrate", "collectstatic", "compilemessages"] {
        let done = launcher
            .iter()
            .find(|r| {
                r.is("STEP", step) && r.is("PHASE", "prepare") && r.get("DURATION_MS").is_some()
            })
            .unwrap_or_else(|| panic!("no STEP={step} record with DURATION_MS:\n{dump}"));
        let ms: u64 = done.get("DURATION_MS").unwrap().parse().expect("a number");
        eprintln!("STEP={step} DURATION_MS={ms}");
        if step == "migrate" {
            assert!(ms >= 3000, "the slow migration took {ms} ms?");
        }
    }
    let progress: Vec<&JsonRecord> = launcher
        .iter()
        .filter(|r| message_has(r, "demo migration: step"))
        .collect();
    assert_eq!(progress.len(), 3, "{dump}");
    assert!(
        progress
            .iter()
            .all(|r| r.is("STEP", "migrate") && r.is("PHASE", "prepare")),
        "{progress:?}"
    );
    assert!(!with_field(&launcher, "PRIORITY").is_empty());
    // The server's own output is told apart: the unit's SyslogIdentifier, stdout/stderr.
    let listening = recs
        .iter()
        .find(|r| message_has(r, "Listening at: http://127.0.0.1:8000"))
        .expect("gunicorn's 'Listening at' line");
    assert_ne!(listening.get("SYSLOG_IDENTIFIER"), Some(IDENT));
    assert_eq!(listening.get("_TRANSPORT"), Some("stdout"));
}

/// The exec record's DURATION_MS (the launcher's whole run) of one invocation.
fn launcher_total_ms(b: &bitpoll::Bitpoll, inv: &str) -> u64 {
    let recs = b.launcher_records_of(inv);
    recs.iter()
        .find(|r| r.is("PHASE", "exec"))
        .and_then(|r| r.get("DURATION_MS")?.parse().ok())
        .unwrap_or_else(|| panic!("no exec record in {inv}:\n{}", bitpoll::messages(&recs)))
}

#[test]
fn a_restart_keeps_data_database_and_secret_and_skips_the_preparation() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("restart", Spec::default());
    b.start_ok();
    let inv1 = b.invocation_id();
    let pid1 = b.main_pid();
    let secret_key = format!("{DATA_DIR}/secrets/BITPOLL_SECRET_KEY");
    let fernet_key = format!("{DATA_DIR}/secrets/BITPOLL_FIELD_ENCRYPTION_KEY");
    let db = format!("{DATA_DIR}/db.sqlite3");
    let upload = format!("{DATA_DIR}/media/upload.txt");
    let before = (b.sha256(&secret_key), b.sha256(&fernet_key));
    let db_before = b.stat("%i %s", &db);
    // Data the app wrote: a file in media/, written as the service user.
    let out = b.as_service_user(&["sh", "-c", &format!("echo uploaded > {upload}")]);
    assert!(out.status.success(), "{}", bitpoll::text(&out));
    let foreign = b.foreign_owned_in_data_dir();
    assert!(foreign.is_empty(), "after the first start: {foreign:#?}");
    eprintln!(
        "first start: MainPID {pid1}, db inode/size {db_before}, secret sha256 {}",
        before.0
    );

    let t = Instant::now();
    b.exec_ok(&["systemctl", "restart", UNIT]);
    eprintln!("systemctl restart took {:.3}s", t.elapsed().as_secs_f64());
    let inv2 = b.invocation_id();
    assert_ne!(inv1, inv2);
    assert_ne!(b.main_pid(), pid1, "a new server process");
    assert_eq!(b.http_get("/healthz").0, 200);

    // Everything survived, with its owner.
    let after = (b.sha256(&secret_key), b.sha256(&fernet_key));
    assert_eq!(before, after, "the generated secrets changed");
    assert_eq!(b.stat("%i %s", &db), db_before, "the database was replaced");
    assert_eq!(b.exec_ok(&["cat", &upload]), "uploaded\n");
    let foreign = b.foreign_owned_in_data_dir();
    assert!(
        foreign.is_empty(),
        "after the restart, files in the data dir are no longer the service user's \
         (the app could not write its own data):\n{}",
        foreign.join("\n")
    );

    // The second start skipped every step and was faster.
    let recs = b.launcher_records_of(&inv2);
    let dump = bitpoll::messages(&recs);
    for step in ["migrate", "collectstatic", "compilemessages"] {
        assert!(
            recs.iter()
                .any(|r| r.is("STEP", step) && message_has(r, &format!("step {step} skipped"))),
            "step {step} was not skipped:\n{dump}"
        );
        assert!(
            !recs
                .iter()
                .any(|r| message_has(r, &format!("step {step} started"))),
            "step {step} ran again:\n{dump}"
        );
    }
    let (first, second) = (launcher_total_ms(&b, &inv1), launcher_total_ms(&b, &inv2));
    eprintln!("launcher done in: first start {first} ms, second start {second} ms");
    assert!(
        second < first,
        "the second start ({second} ms) was not faster than the first ({first} ms)"
    );
}

#[test]
fn a_credential_reaches_the_app_and_is_never_readable_by_the_service_user() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "credential",
        Spec::default()
            .fek(Fek::Credential)
            .env("DEMO_REPORT_ENV", "BITPOLL_FIELD_ENCRYPTION_KEY"),
    );
    let want = b.fek_sha256.clone().expect("a credential was made");
    let unit = b.exec_ok(&["systemctl", "cat", UNIT]);
    assert!(
        unit.contains(&format!("LoadCredential={FEK_CREDENTIAL}:{FEK_PATH}\n")),
        "{unit}"
    );
    assert_eq!(b.stat("%U:%G %a", FEK_PATH), "root:root 600");
    let out = b.as_service_user(&["cat", FEK_PATH]);
    assert!(
        !out.status.success() && bitpoll::text(&out).contains("Permission denied"),
        "the service user can read {FEK_PATH}: {}",
        bitpoll::text(&out)
    );

    b.start_ok();
    let main = b.main_pid();
    let (code, who) = b.http_get("/whoami");
    assert_eq!(code, 200, "{who}");
    assert_eq!(
        whoami_json(&who)["env_sha256"]["BITPOLL_FIELD_ENCRYPTION_KEY"].as_str(),
        Some(want.as_str()),
        "the app did not get the credential's value: {who}"
    );

    // systemd's copy: root-only, and out of the service user's reach, both as seen from
    // the container and from inside the running service's mount namespace.
    let cred_dir = format!("/run/credentials/{UNIT}");
    let cred = format!("{cred_dir}/{FEK_CREDENTIAL}");
    let cred_mode = b.stat("%U:%G %a", &cred);
    let dir_mode = b.stat("%U:%G %a", &cred_dir);
    eprintln!("{cred}: {cred_mode}; {cred_dir}: {dir_mode}");
    assert!(cred_mode.starts_with("root:root "), "{cred_mode}");
    assert!(dir_mode.starts_with("root:root "), "{dir_mode}");
    let out = b.as_service_user(&["cat", &cred]);
    assert!(
        !out.status.success() && bitpoll::text(&out).contains("Permission denied"),
        "the service user can read {cred}: {}",
        bitpoll::text(&out)
    );
    for path in [cred.as_str(), FEK_PATH] {
        let out = b.in_service_ns(main, true, &["cat", path]);
        assert!(
            !out.status.success(),
            "{path} is readable by the service user inside the service: {}",
            bitpoll::text(&out)
        );
        eprintln!(
            "inside the service, as {USER}: cat {path}: {}",
            bitpoll::text(&out).trim()
        );
    }
    // Not passed on, not copied into the data dir, never logged.
    let environ = b.exec_ok(&["cat", &format!("/proc/{main}/environ")]);
    assert!(
        !environ
            .split('\0')
            .any(|v| v.starts_with("CREDENTIALS_DIRECTORY=")),
        "the server inherited CREDENTIALS_DIRECTORY"
    );
    assert!(!b.exists(&format!("{DATA_DIR}/secrets/BITPOLL_FIELD_ENCRYPTION_KEY")));
    let key = b.exec_ok(&["cat", FEK_PATH]);
    let journal = b.exec_ok(&["journalctl", "--no-pager", "-o", "json"]);
    assert!(
        !journal.contains(key.trim()),
        "the credential's value is in the journal"
    );
}

const TIMEOUT_DROP_IN: &str = "[Service]\nTimeoutStartSec=5\n";

#[test]
fn a_migration_slower_than_timeout_start_sec_succeeds_while_it_makes_progress() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "slow",
        Spec::default()
            .env("DEMO_MIGRATION_DELAY", "12")
            .stall_timeout(4),
    );
    b.drop_in("timeout.conf", TIMEOUT_DROP_IN);
    assert_eq!(b.show(&["TimeoutStartUSec"])["TimeoutStartUSec"], "5s");

    let took = b.start_ok();
    eprintln!(
        "start with a 12 s migration and TimeoutStartSec=5 took {:.3}s",
        took.as_secs_f64()
    );
    assert!(took > Duration::from_secs(12), "{took:?}");
    assert_eq!(b.show(&["ActiveState"])["ActiveState"], "active");
    assert_eq!(b.http_get("/healthz").0, 200);
    let recs = b.journal_json(UNIT);
    assert!(
        !recs.iter().any(|r| message_has(r, "timed out")),
        "{}",
        bitpoll::messages(&recs)
    );
    let progress = recs
        .iter()
        .filter(|r| message_has(r, "demo migration: step"))
        .count();
    assert_eq!(progress, 12);
}

#[test]
fn a_hung_migration_fails_with_the_launchers_message_instead_of_a_timeout() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "hung",
        Spec::default()
            .env("DEMO_MIGRATION_HANG", "60")
            .stall_timeout(3),
    );
    b.drop_in("timeout.conf", TIMEOUT_DROP_IN);

    let (out, took) = b.start(Duration::from_secs(60));
    // Read the result before Restart=on-failure (RestartSec=5s) starts it again.
    let show = b.show(&["Result", "ExecMainStatus", "ActiveState", "SubState"]);
    eprintln!(
        "start with a hung migration failed after {:.3}s: {show:?}",
        took.as_secs_f64()
    );
    b.stop_and_reset();
    assert!(!out.status.success(), "the start succeeded");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(show["Result"], "exit-code", "{}", b.diagnose(UNIT));
    assert_ne!(show["ExecMainStatus"], "0");

    let recs = b.journal_of_failure(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "made no progress"))
    });
    let error = recs
        .iter()
        .find(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "made no progress"))
        .expect("checked");
    eprintln!("the launcher said: {}", error.get("MESSAGE").unwrap_or(""));
    assert!(message_has(error, "migrate"), "{error:?}");
    assert_eq!(error.get("PRIORITY"), Some("3"), "logged as an error");
    // Under its rule, which the journal's catalog explains.
    assert_eq!(error.get("FINDING_ID"), Some("prepare.failed"), "{error:?}");
    assert_eq!(
        error.get("MESSAGE_ID"),
        Some(launcher_plan::rule::Rule::PrepareFailed.message_id()),
        "{error:?}"
    );
    assert!(
        !recs.iter().any(|r| message_has(r, "timed out")),
        "systemd's timeout fired:\n{}",
        bitpoll::messages(&recs)
    );
    let left = b.exec(&["pgrep", "-u", USER, "-a"]);
    assert!(
        !left.status.success(),
        "processes of the service user remain: {}",
        bitpoll::text(&left)
    );
}

#[test]
fn a_broken_configuration_fails_fast_with_the_key_and_a_hint_in_journal_and_status() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("badconfig", Spec::default());
    // The unit was rendered from the good config; now an admin mistypes a key.
    let broken = b
        .spec
        .config()
        .replace("\nmigrate = true\n", "\nmigrat = true\n");
    assert!(broken.contains("migrat = true"));
    b.write_config(&broken);

    let (out, took) = b.start(Duration::from_secs(30));
    // Read the result before Restart=on-failure (RestartSec=5s) starts it again.
    let show = b.show(&[
        "Result",
        "ExecMainStatus",
        "ActiveState",
        "SubState",
        "StatusText",
    ]);
    eprintln!("start failed after {:.3}s: {show:?}", took.as_secs_f64());
    assert!(!out.status.success(), "the start succeeded");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(show["Result"], "exit-code");
    assert_eq!(
        show["ExecMainStatus"], "2",
        "the launcher's config exit status"
    );

    let recs = b.journal_of_failure(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "prepare.migrat"))
    });
    // What the admin runs next, as systemctl's own message says.
    let status = b.exec(&["systemctl", "status", "--no-pager", "-l", "-n", "20", UNIT]);
    let state = b.show(&["ActiveState", "SubState"]);
    b.stop_and_reset();
    let status = bitpoll::text(&status);
    eprintln!("{state:?}\n{status}");
    for want in ["prepare.migrat", "did you mean `migrate`"] {
        assert!(
            status.contains(want),
            "systemctl status right after the failed start lacks {want:?} (unit {state:?}; \
             while a unit waits in auto-restart, systemd 252 shows only log lines newer than \
             that state change, i.e. none):\n{status}"
        );
    }
    let error = recs
        .iter()
        .find(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "prepare.migrat"))
        .expect("checked");
    assert!(message_has(error, "did you mean `migrate`"), "{error:?}");
    assert_eq!(error.get("PRIORITY"), Some("3"));
    assert_eq!(error.get("FINDING_ID"), Some("config.invalid"), "{error:?}");
    assert_eq!(
        error.get("MESSAGE_ID"),
        Some(launcher_plan::rule::Rule::ConfigInvalid.message_id()),
        "{error:?}"
    );
    // Stopped for good: no restart pending.
    let show = b.show(&["ActiveState", "NRestarts"]);
    eprintln!("after stop and reset-failed: {show:?}");
    assert_eq!(show["ActiveState"], "inactive");
}

#[test]
fn stopping_during_preparation_stops_the_child_and_leaves_no_stamp() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("stop", Spec::default().env("DEMO_MIGRATION_DELAY", "30"));
    b.start_no_block();
    let recs = b.wait_journal(Duration::from_secs(60), |recs| {
        recs.iter().any(|r| message_has(r, "demo migration: step"))
    });
    let driver: u32 = recs
        .iter()
        .find(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "preparation started"))
        .and_then(|r| r.get("PID")?.parse().ok())
        .unwrap_or_else(|| panic!("no driver pid:\n{}", bitpoll::messages(&recs)));
    let cgroup = b.show(&["ControlGroup"])["ControlGroup"].clone();
    let procs = format!("/sys/fs/cgroup{cgroup}/cgroup.procs");
    let before = b.exec_ok(&["cat", &procs]);
    eprintln!("preparation running (driver pid {driver}); {procs}: {before:?}");
    assert!(before.lines().any(|p| p == driver.to_string()));
    assert_eq!(b.show(&["ActiveState"])["ActiveState"], "activating");

    let t = Instant::now();
    let out = b.exec_with_timeout(&["systemctl", "stop", UNIT], Duration::from_secs(60));
    let took = t.elapsed();
    let show = b.show(&["ActiveState", "Result", "ExecMainStatus"]);
    eprintln!("systemctl stop took {:.3}s: {show:?}", took.as_secs_f64());
    let _ = b.exec(&["systemctl", "reset-failed", UNIT]);
    assert!(out.status.success(), "{}", bitpoll::text(&out));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_ne!(show["ActiveState"], "active");

    // Nothing of the unit runs any more; the interrupted step has no stamp.
    let left = b.exec(&["cat", &procs]);
    let left = String::from_utf8_lossy(&left.stdout).trim().to_owned();
    assert!(left.is_empty(), "still in {procs}: {left}");
    assert!(
        !b.exists(&format!("/proc/{driver}")),
        "the driver {driver} still runs"
    );
    let python = b.exec(&["pgrep", "-a", "-u", USER]);
    assert!(!python.status.success(), "{}", bitpoll::text(&python));
    let recs = b.launcher_records();
    let path = format!("{DATA_DIR}/state/migrate.stamp");
    assert!(
        !b.exists(&path),
        "{path} exists after the interrupted start"
    );
    // collectstatic and compilemessages ran beside migrate: a stamp for each that
    // finished before the stop, none for the rest.
    for step in ["collectstatic", "compilemessages"] {
        let finished = recs
            .iter()
            .any(|r| message_has(r, &format!("step {step} finished")));
        assert_eq!(
            b.exists(&format!("{DATA_DIR}/state/{step}.stamp")),
            finished,
            "{step}: a stamp without its success, or a success without its stamp:\n{}",
            bitpoll::messages(&recs)
        );
    }
    // The launcher said which step it interrupted (a warning or worse).
    eprintln!(
        "the launcher's last words:\n{}",
        bitpoll::messages(&recs[recs.len().saturating_sub(3)..])
    );
    assert!(
        recs.iter()
            .any(|r| (r.is("STEP", "migrate") || message_has(r, "migrate"))
                && r.get("PRIORITY")
                    .and_then(|p| p.parse::<u8>().ok())
                    .is_some_and(|p| p <= 4)),
        "the launcher did not log the interrupted step:\n{}",
        bitpoll::messages(&recs)
    );
    // Its last record is the stop, under its rule.
    let last = recs.last().expect("records");
    assert_eq!(last.get("FINDING_ID"), Some("launcher.stopped"), "{last:?}");
    assert_eq!(
        last.get("MESSAGE_ID"),
        Some(launcher_plan::rule::Rule::LauncherStopped.message_id()),
        "{last:?}"
    );
}

#[test]
fn the_hardening_holds_for_the_running_service() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("hardening", Spec::default());
    b.start_ok();
    let main = b.main_pid();

    // Outside the data dir the file system is read-only for the service, even for root.
    for dir in ["/usr", "/etc", "/opt", "/srv", "/var", "/var/lib"] {
        let probe = format!("{dir}/blt-probe");
        for as_user in [true, false] {
            let out = b.in_service_ns(main, as_user, &["touch", &probe]);
            let text = bitpoll::text(&out);
            assert!(
                !out.status.success() && text.contains("Read-only file system"),
                "touch {probe} (as {}) in the service: {text}",
                if as_user { USER } else { "root" }
            );
        }
    }
    // The data dir and the private /tmp are writable for the service user.
    for probe in [
        format!("{DATA_DIR}/media/blt-probe"),
        "/tmp/blt-probe".to_owned(),
    ] {
        let out = b.in_service_ns(
            main,
            true,
            &["sh", "-c", r#"touch "$1" && rm "$1""#, "sh", &probe],
        );
        assert!(out.status.success(), "{probe}: {}", bitpoll::text(&out));
    }
    // /home and /root: empty and inaccessible inside, though not outside.
    for dir in ["/home", "/root"] {
        let outside = b.stat("%a", dir);
        let inside = b.in_service_ns(main, false, &["stat", "-c", "%a", dir]);
        let inside = String::from_utf8_lossy(&inside.stdout).trim().to_owned();
        let entries = b.in_service_ns(main, false, &["ls", "-A", dir]);
        eprintln!("{dir}: mode {outside} outside, {inside} in the service");
        assert_eq!(inside, "0", "{dir} is accessible in the service");
        assert!(
            entries.status.success() && entries.stdout.is_empty(),
            "{dir} is not empty"
        );
        let out = b.in_service_ns(main, true, &["ls", dir]);
        assert!(!out.status.success(), "{dir} listable by {USER}");
    }
    assert!(
        !b.exec_ok(&["ls", "-A", "/home"]).trim().is_empty(),
        "the host's /home is empty, the ProtectHome check proves little"
    );
    // /tmp is private: a file in the container's /tmp is not seen.
    b.write_file("/tmp/blt-marker", b"outside\n", 0o644);
    let out = b.in_service_ns(main, false, &["test", "-e", "/tmp/blt-marker"]);
    assert!(!out.status.success(), "the service sees the host's /tmp");
    // Devices: PrivateDevices= leaves only the pseudo devices.
    let out = b.in_service_ns(main, false, &["ls", "/dev"]);
    let devs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(devs.contains("null") && !devs.contains("kmsg"), "{devs}");

    // The installed unit's exposure score is at or under the target.
    let out = b.exec(&[
        "systemd-analyze",
        "security",
        "--offline=true",
        "--threshold=20",
        UNIT_PATH,
    ]);
    let text = bitpoll::text(&out);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    eprintln!("{}", overall.trim());
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score: {overall}"));
    assert!(
        out.status.success() && score <= 2.0,
        "score {score}:\n{text}"
    );
}
