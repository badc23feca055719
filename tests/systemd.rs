//! End-to-end tests under a real systemd (PID 1 of a throw-away systemd-nspawn container).
//! They need root and systemd-nspawn; elsewhere each prints a SKIP line and passes, unless
//! BITPOLL_REQUIRE_SYSTEMD_TESTS=1.
//!
//! Run: `cargo test --test systemd -- --test-threads=1 --nocapture`

mod container;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    if !container::require_root_and_nspawn() {
        return;
    }
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
    if !container::require_root_and_nspawn() {
        return;
    }
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
    if !container::require_root_and_nspawn() {
        return;
    }
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
    if !container::require_root_and_nspawn() {
        return;
    }
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
    if !container::require_root_and_nspawn() {
        return;
    }
    let ready_file = std::env::temp_dir().join(format!("blt-helper-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready_file);
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_boot_then_wait_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
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

#[test]
#[ignore]
fn zz_debug_hold() {
    let b = container::bitpoll::install("dbg", container::bitpoll::Spec::default());
    eprintln!("PID1 {}", b.pid1());
    std::fs::write("/tmp/blt-dbg-pid1", b.pid1().to_string()).unwrap();
    let (out, took) = b.start(Duration::from_secs(120));
    eprintln!("start: {:?} {:?}", out, took);
    eprintln!("{}", b.diagnose("bitpoll.service"));
    while std::path::Path::new("/tmp/blt-dbg-pid1").exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
}
