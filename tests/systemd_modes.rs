//! The unit's modes under a real systemd (PID 1 of a throw-away systemd-nspawn container,
//! as in tests/systemd.rs): the unprivileged unit, socket activation across restarts,
//! readiness from gunicorn's first worker, the restart backoff of the [unit] table, and
//! the privileged unit's three capabilities (a root-owned leftover it cannot repair).
//! Each test installs the demo app with the units `bitpoll-launcher unit` prints for its
//! mode (see container/bitpoll.rs). They need root and systemd-nspawn; elsewhere each
//! prints a SKIP line and passes, unless BITPOLL_REQUIRE_SYSTEMD_TESTS=1.
//!
//! Run: `cargo test --test suite systemd_modes:: -- --test-threads=1`

use crate::container;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use container::bitpoll::{
    self, Bitpoll, CONFIG_PATH, DATA_DIR, FEK_CREDENTIAL, Fek, IDENT, Listen, Mode, SOCKET_UNIT,
    Spec, UNIT, UNIT_PATH, UNIX_SOCKET, USER,
};
use container::{JsonRecord, LAUNCHER_PATH};

fn message_has(r: &JsonRecord, needle: &str) -> bool {
    r.get("MESSAGE").is_some_and(|m| m.contains(needle))
}

/// The value of a `/proc/PID/status` line, whitespace-separated.
fn status_fields<'a>(status: &'a HashMap<String, String>, key: &str) -> Vec<&'a str> {
    status
        .get(key)
        .unwrap_or_else(|| panic!("no {key}: line in {status:?}"))
        .split_whitespace()
        .collect()
}

fn whoami(b: &Bitpoll) -> serde_json::Value {
    let (code, body) = b.http_get("/whoami");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/whoami is not JSON ({e}): {body}"))
}

/// `systemd-analyze security --offline=true --threshold=N` on the installed unit, inside
/// the container; returns the score line.
fn exposure_at_most(b: &Bitpoll, threshold: u32) -> String {
    let out = b.exec(&[
        "systemd-analyze",
        "security",
        "--offline=true",
        &format!("--threshold={threshold}"),
        UNIT_PATH,
    ]);
    let text = bitpoll::text(&out);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{text}"))
        .trim()
        .to_owned();
    assert!(
        out.status.success(),
        "exposure above {threshold}/10: {overall}\n{text}"
    );
    overall
}

/// The launcher's records that end its run (PHASE=exec with DURATION_MS): one per start
/// that got as far as executing the server.
fn exec_records(b: &Bitpoll) -> Vec<JsonRecord> {
    b.launcher_records()
        .into_iter()
        .filter(|r| r.is("PHASE", "exec") && r.get("DURATION_MS").is_some())
        .collect()
}

#[test]
fn the_unprivileged_unit_serves_reads_its_credential_restarts_and_holds_its_hardening() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "unpriv",
        Spec::default()
            .mode(Mode::Unprivileged)
            .fek(Fek::Credential)
            .env("DEMO_REPORT_ENV", "BITPOLL_FIELD_ENCRYPTION_KEY")
            // READY=1 from gunicorn itself, as soon as it listens.
            .server_line("ready = \"arbiter\""),
    );
    let unit = b.exec_ok(&["systemctl", "cat", UNIT]);
    for want in [
        format!("User={USER}"),
        "StateDirectory=bitpoll".into(),
        "CapabilityBoundingSet=".into(),
        "PrivateUsers=true".into(),
    ] {
        assert!(unit.lines().any(|l| l == want), "{want:?} missing:\n{unit}");
    }
    assert!(
        !b.exists(DATA_DIR),
        "the data directory exists before systemd creates it"
    );
    eprintln!("{}", exposure_at_most(&b, 12));

    let took = b.start_ok();
    eprintln!("systemctl start took {:.3}s", took.as_secs_f64());
    let show = b.show(&["ActiveState", "StatusText", "User"]);
    assert_eq!(show["ActiveState"], "active");
    assert_eq!(show["StatusText"], "Gunicorn arbiter booted");
    assert_eq!(b.http_get("/healthz"), (200, "ok".to_owned()));
    assert_eq!(b.http_get("/").0, 200);

    // systemd made the data directory for the user; the launcher made the tree below it,
    // all of it the user's.
    assert_eq!(b.stat("%U:%G %a", DATA_DIR), format!("{USER}:{USER} 750"));
    for dir in ["static", "media", "state", "secrets"] {
        assert!(b.exists(&format!("{DATA_DIR}/{dir}")), "{dir} missing");
    }
    let foreign = b.foreign_owned_in_data_dir();
    assert!(foreign.is_empty(), "{foreign:#?}");

    // The launcher never had a capability: it ran as the user from the first record on,
    // and its records carry the same structured fields as in the privileged unit.
    let main = b.main_pid();
    let recs = b.launcher_records();
    let dump = bitpoll::messages(&recs);
    assert!(
        recs.iter().any(|r| message_has(r, "not running as root")),
        "{dump}"
    );
    for phase in [
        "config",
        "account",
        "directories",
        "secrets",
        "prepare",
        "drop",
        "exec",
    ] {
        assert!(
            recs.iter()
                .any(|r| r.is("PHASE", phase) && r.get("DURATION_MS").is_some()),
            "no PHASE={phase} record with DURATION_MS:\n{dump}"
        );
    }
    let (uid, gid) = b.service_ids();
    for r in &recs {
        assert_eq!(r.get("_UID"), Some(uid.to_string().as_str()), "{r:?}");
        assert_eq!(r.get("_PID"), Some(main.to_string().as_str()), "{r:?}");
    }

    // The server: the user's ids, no capability in any set, no_new_privs, a filter, and a
    // user namespace in which only root and the user exist.
    let status = b.proc_status(main);
    let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
    assert_eq!(status_fields(&status, "Uid"), [uid_s.as_str(); 4]);
    assert_eq!(status_fields(&status, "Gid"), [gid_s.as_str(); 4]);
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(status_fields(&status, cap), ["0000000000000000"], "{cap}");
    }
    assert_eq!(status_fields(&status, "NoNewPrivs"), ["1"]);
    assert_eq!(status_fields(&status, "Seccomp"), ["2"]);
    let uid_map = b.exec_ok(&["cat", &format!("/proc/{main}/uid_map")]);
    let mapped: BTreeSet<u32> = uid_map
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    eprintln!("uid_map of the server:\n{uid_map}");
    assert_eq!(mapped, BTreeSet::from([0, uid]), "PrivateUsers=");
    // The file system outside the data directory is read-only for it.
    for dir in ["/usr", "/etc", "/var/lib", "/srv"] {
        let probe = format!("{dir}/blt-probe");
        let out = b.in_service_ns(main, true, &["touch", &probe]);
        assert!(
            !out.status.success(),
            "touch {probe}: {}",
            bitpoll::text(&out)
        );
    }

    // The credential reached the app; the worker is a child of the main process.
    let w = whoami(&b);
    assert_eq!(
        w["env_sha256"]["BITPOLL_FIELD_ENCRYPTION_KEY"].as_str(),
        b.fek_sha256.as_deref(),
        "{w}"
    );
    assert_eq!(w["uid"].as_u64(), Some(u64::from(uid)), "{w}");
    assert_eq!(w["ppid"].as_u64(), Some(u64::from(main)), "{w}");
    assert!(!b.exists(&format!("{DATA_DIR}/secrets/BITPOLL_FIELD_ENCRYPTION_KEY")));
    let cred = format!("/run/credentials/{UNIT}/{FEK_CREDENTIAL}");
    eprintln!("{cred}: {}", b.stat("%U:%G %a", &cred));
    // systemd gave the credential to the user; check and manage, run by root outside the
    // unit, read it as that user and agree with the running service.
    let out = b.exec(&[LAUNCHER_PATH, "check", "--config", CONFIG_PATH]);
    let text = bitpoll::text(&out);
    assert!(
        text.contains("BITPOLL_FIELD_ENCRYPTION_KEY (credential fek)")
            && !text.contains("  error "),
        "check as root:\n{text}"
    );
    let out = b.exec(&[
        LAUNCHER_PATH,
        "manage",
        "--config",
        CONFIG_PATH,
        "--",
        "shell",
        "-c",
        "import hashlib, os; print(hashlib.sha256(os.environ['BITPOLL_FIELD_ENCRYPTION_KEY'].encode()).hexdigest())",
    ]);
    assert!(
        out.status.success(),
        "manage as root: {}",
        bitpoll::text(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        b.fek_sha256.as_deref(),
        "manage got the credential's value"
    );

    // A restart keeps the data and the generated secret, and skips every step.
    let secret = format!("{DATA_DIR}/secrets/BITPOLL_SECRET_KEY");
    let before = (
        b.sha256(&secret),
        b.stat("%i", &format!("{DATA_DIR}/db.sqlite3")),
    );
    let inv1 = b.invocation_id();
    b.exec_ok(&["systemctl", "restart", UNIT]);
    let inv2 = b.invocation_id();
    assert_ne!(inv1, inv2);
    assert_eq!(b.http_get("/healthz").0, 200);
    assert_eq!(
        before,
        (
            b.sha256(&secret),
            b.stat("%i", &format!("{DATA_DIR}/db.sqlite3"))
        )
    );
    let recs = b.launcher_records_of(&inv2);
    for step in ["migrate", "collectstatic", "compilemessages"] {
        assert!(
            recs.iter()
                .any(|r| r.is("STEP", step) && message_has(r, &format!("step {step} skipped"))),
            "step {step} ran again:\n{}",
            bitpoll::messages(&recs)
        );
    }
    assert!(b.foreign_owned_in_data_dir().is_empty());
}

#[test]
fn an_unprivileged_unit_refuses_a_data_dir_that_is_not_its_state_directory() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("statedir", Spec::default().mode(Mode::Unprivileged));
    // The admin moves the data directory in the config but keeps the old unit.
    let moved = b.spec.config().replace(
        &format!("data_dir = \"{DATA_DIR}\""),
        "data_dir = \"/var/lib/bitpoll-new\"",
    );
    b.write_config(&moved);
    let (out, _) = b.start(Duration::from_secs(60));
    let show = b.show(&["Result", "ExecMainStatus"]);
    b.stop_and_reset();
    assert!(!out.status.success());
    assert_eq!(
        show["ExecMainStatus"], "3",
        "system not as required: {show:?}"
    );
    let recs = b.journal_of_failure(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "STATE_DIRECTORY="))
    });
    let error = recs
        .iter()
        .find(|r| message_has(r, "STATE_DIRECTORY="))
        .expect("checked");
    eprintln!("the launcher said: {}", error.get("MESSAGE").unwrap_or(""));
    assert!(
        message_has(error, "service.data_dir = \"/var/lib/bitpoll\""),
        "{error:?}"
    );
}

/// A client inside the container: GET /whoami in a loop (a new connection each time, up
/// to 120 s each) until the stop file exists, then one JSON line: every request's send
/// time (CLOCK_REALTIME, µs), wait and outcome ("200" or the error).
const CLIENT: &str = r#"import json, os, socket, sys, time
target, stop = sys.argv[1], sys.argv[2]
results = []
while not os.path.exists(stop):
    sent = time.time()
    t0 = time.monotonic()
    ppid = None
    try:
        if target.startswith("/"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(120)
            s.connect(target)
        else:
            host, port = target.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=120)
        s.sendall(b"GET /whoami HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        outcome = head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "no response"
        if outcome == "200":
            ppid = json.loads(body)["ppid"]
    except OSError as e:
        outcome = "%s (errno %s)" % (type(e).__name__, e.errno)
    results.append({"sent_us": int(sent * 1e6), "wait": time.monotonic() - t0,
                    "outcome": outcome, "ppid": ppid})
    time.sleep(0.02)
print(json.dumps(results))
"#;

const CLIENT_PATH: &str = "/usr/local/lib/blt-client.py";
const CLIENT_STOP: &str = "/run/blt-client-stop";

#[derive(Debug)]
struct Request {
    sent_us: u64,
    wait: f64,
    outcome: String,
    ppid: Option<u64>,
}

/// Runs `during` while the client loops against the server, then stops the client and
/// returns its requests.
fn with_client(b: &Bitpoll, during: impl FnOnce()) -> Vec<Request> {
    b.write_file(CLIENT_PATH, CLIENT.as_bytes(), 0o644);
    let _ = b.exec(&["rm", "-f", CLIENT_STOP]);
    let target = match b.spec.socket {
        Some(Listen::Unix) => UNIX_SOCKET,
        _ => "127.0.0.1:8000",
    };
    /// Stops the client also when the test panics meanwhile.
    struct Stop<'a>(&'a Bitpoll);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.exec(&["touch", CLIENT_STOP]);
        }
    }
    let out = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            b.exec_with_timeout(
                &["/usr/bin/python3", CLIENT_PATH, target, CLIENT_STOP],
                Duration::from_secs(300),
            )
        });
        let stop = Stop(b);
        during();
        // Let the last requests through the new server before stopping.
        std::thread::sleep(Duration::from_millis(500));
        drop(stop);
        client.join().expect("the client thread")
    });
    assert!(out.status.success(), "client: {}", bitpoll::text(&out));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client output ({e}): {}", bitpoll::text(&out)));
    list.iter()
        .map(|r| Request {
            sent_us: r["sent_us"].as_u64().expect("sent_us"),
            wait: r["wait"].as_f64().expect("wait"),
            outcome: r["outcome"].as_str().expect("outcome").to_owned(),
            ppid: r["ppid"].as_u64(),
        })
        .collect()
}

/// `systemctl restart` and the new invocation, waiting for the start to finish.
fn restart(b: &Bitpoll) -> String {
    let t = Instant::now();
    b.exec_ok(&["systemctl", "restart", UNIT]);
    eprintln!("systemctl restart took {:.3}s", t.elapsed().as_secs_f64());
    b.invocation_id()
}

/// The realtime timestamp (µs) at which `inv`'s launcher exec'd the server.
fn exec_time(b: &Bitpoll, inv: &str) -> u64 {
    let recs = b.launcher_records_of(inv);
    recs.iter()
        .find(|r| r.is("PHASE", "exec"))
        .and_then(|r| {
            r.get("_SOURCE_REALTIME_TIMESTAMP")
                .or_else(|| r.get("__REALTIME_TIMESTAMP"))?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exec record of {inv}:\n{}", bitpoll::messages(&recs)))
}

/// Restarts with the client running, the second time with a slow migration (the demo's
/// 0002 unapplied, so migrate runs it again under DEMO_MIGRATION_DELAY); asserts that no
/// request failed, that requests sent while a restart was under way were answered by the
/// new server, and prints the longest wait.
fn no_request_fails_across_restarts(b: &Bitpoll) {
    b.start_ok();
    let first_master = b.main_pid();
    assert_eq!(b.http_get("/healthz").0, 200);
    let mut restarts: Vec<(String, u32)> = Vec::new();
    let requests = with_client(b, || {
        std::thread::sleep(Duration::from_millis(500));
        let inv = restart(b);
        restarts.push((inv, b.main_pid()));
        // Unapply the demo's slow migration: the next start must migrate again.
        let out = b.exec(&[
            LAUNCHER_PATH,
            "manage",
            "--config",
            CONFIG_PATH,
            "--",
            "migrate",
            "--noinput",
            "poll",
            "0001",
        ]);
        assert!(
            out.status.success(),
            "manage migrate poll 0001: {}",
            bitpoll::text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
        let old = b.invocation_id();
        b.exec_ok(&["systemctl", "restart", "--no-block", UNIT]);
        let inv = preparation_holds_no_listening_socket(b, &old);
        b.wait_for_state(&["ActiveState"], Duration::from_secs(120), |p| {
            p["ActiveState"] == "active"
        });
        restarts.push((inv, b.main_pid()));
    });
    let failed: Vec<&Request> = requests.iter().filter(|r| r.outcome != "200").collect();
    let longest = requests.iter().map(|r| r.wait).fold(0.0, f64::max);
    let mut by_master: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &requests {
        *by_master.entry(r.ppid.unwrap_or(0)).or_default() += 1;
    }
    eprintln!(
        "{} requests, {} failed, longest wait {:.3}s; answered per server (master pid: count): {by_master:?}",
        requests.len(),
        failed.len(),
        longest
    );
    assert!(failed.is_empty(), "requests failed: {failed:#?}");

    // The second restart really migrated, slowly.
    let recs = b.launcher_records_of(&restarts[1].0);
    assert!(
        recs.iter().any(|r| message_has(r, "demo migration: step")),
        "the second restart did not run the slow migration:\n{}",
        bitpoll::messages(&recs)
    );
    // Requests sent before a new server was exec'd were answered by it: they waited in
    // the socket's queue instead of being refused.
    for (inv, master) in &restarts {
        let exec_at = exec_time(b, inv);
        let waited: Vec<&Request> = requests
            .iter()
            .filter(|r| r.sent_us < exec_at && r.ppid == Some(u64::from(*master)))
            .collect();
        let longest = waited.iter().map(|r| r.wait).fold(0.0, f64::max);
        eprintln!(
            "restart {inv}: {} request(s) sent before the server started were answered by it (master {master}), the longest after {longest:.3}s",
            waited.len()
        );
        assert!(
            !waited.is_empty(),
            "no request sent during restart {inv} was answered by its server"
        );
    }
    assert!(by_master.contains_key(&u64::from(first_master)));
    assert!(!by_master.contains_key(&0));
}

/// While the restart after `old` runs its (slow) migration: the preparation process has no
/// descriptor of the listening socket systemd passed. Returns the new invocation.
fn preparation_holds_no_listening_socket(b: &Bitpoll, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (inv, driver) = loop {
        let inv = b.invocation_id();
        if inv != old {
            let recs = b.launcher_records_of(&inv);
            let driver = recs
                .iter()
                .find(|r| message_has(r, "preparation started"))
                .and_then(|r| r.get("PID")?.parse::<u32>().ok());
            if let Some(pid) = driver {
                if recs.iter().any(|r| message_has(r, "demo migration: step")) {
                    break (inv, pid);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no slow migration seen:\n{}",
            b.diagnose(UNIT)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The listening socket's inode, from the kernel's socket tables (state 0A = LISTEN).
    let inodes = b.exec_ok(&[
        "sh",
        "-c",
        "cat /proc/net/tcp /proc/net/tcp6 /proc/net/unix 2>/dev/null",
    ]);
    let fds = b.exec_ok(&["ls", "-l", &format!("/proc/{driver}/fd")]);
    let held: Vec<&str> = fds
        .lines()
        .filter_map(|l| l.split("socket:[").nth(1)?.strip_suffix(']'))
        .collect();
    eprintln!("preparation process {driver} holds sockets {held:?}");
    for inode in held {
        let listening = inodes.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // tcp: field 3 is the state, field 9 the inode; unix: field 5 flags (00010000
            // = listening), field 6 the inode.
            (f.get(3) == Some(&"0A") && f.get(9) == Some(&inode))
                || (f.get(3) == Some(&"00010000") && f.get(6) == Some(&inode))
        });
        assert!(
            !listening,
            "the preparation process {driver} holds the listening socket {inode}:\n{fds}"
        );
    }
    inv
}

#[test]
fn socket_activation_refuses_no_connection_across_restarts_and_a_slow_migration() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "socket",
        Spec::default()
            .socket(Listen::Tcp)
            .env("DEMO_MIGRATION_DELAY", "3"),
    );
    // A second listener (an admin's drop-in): systemd passes fds 3 and 4. The
    // preparation process gets its event pipe as fd 3, so only the launcher's
    // close-on-exec keeps fd 4, a listening socket, from it.
    b.write_file(
        &format!("/etc/systemd/system/{SOCKET_UNIT}.d/second.conf"),
        b"[Socket]\nListenStream=127.0.0.1:8001\n",
        0o644,
    );
    b.exec_ok(&["systemctl", "daemon-reload"]);
    no_request_fails_across_restarts(&b);
    let show = b.c.show(SOCKET_UNIT, &["ActiveState", "Listen"]);
    eprintln!("{SOCKET_UNIT}: {show:?}");
    assert_eq!(show["ActiveState"], "active");
    let recs = b.launcher_records();
    assert!(
        recs.iter()
            .any(|r| r.is("PHASE", "exec") && r.is("SOCKETS", "2")),
        "{}",
        bitpoll::messages(&recs)
    );
    // gunicorn serves on both sockets it was handed.
    let out = b.exec_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        "http://127.0.0.1:8001/healthz",
    ]);
    assert_eq!(out, "ok");
}

#[test]
fn an_unprivileged_unit_on_a_unix_socket_refuses_no_connection_across_restarts() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "unixsock",
        Spec::default()
            .mode(Mode::Unprivileged)
            .socket(Listen::Unix)
            .env("DEMO_MIGRATION_DELAY", "3"),
    );
    // As an admin would: the socket first (it listens before the service runs).
    b.exec_ok(&["systemctl", "start", SOCKET_UNIT]);
    let socket = b.stat("%U:%G %a %F", UNIX_SOCKET);
    eprintln!("{UNIX_SOCKET}: {socket}");
    assert_eq!(socket, format!("root:{USER} 660 socket"));
    no_request_fails_across_restarts(&b);
    eprintln!("{}", exposure_at_most(&b, 12));
}

/// journald's timestamp of a record, in µs.
fn at(r: &JsonRecord) -> u64 {
    r.get("_SOURCE_REALTIME_TIMESTAMP")
        .or_else(|| r.get("__REALTIME_TIMESTAMP"))
        .and_then(|t| t.parse().ok())
        .expect("a timestamp")
}

#[test]
fn with_ready_worker_systemd_reports_the_start_once_a_worker_has_loaded_the_app() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("ready", Spec::default().server_line("ready = \"worker\""));
    assert_eq!(b.show(&["NotifyAccess"])["NotifyAccess"], "all");
    let took = b.start_ok();
    let t = Instant::now();
    let (code, _) = b.http_get("/healthz");
    eprintln!(
        "systemctl start took {:.3}s; the first request after it took {:.3}s",
        took.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(code, 200);
    let w = whoami(&b);
    let worker = w["pid"].as_u64().expect("pid");
    let show = b.show(&["StatusText", "MainPID"]);
    assert_eq!(
        show["StatusText"],
        format!("Gunicorn worker {worker} ready"),
        "the worker, not the arbiter, said READY=1"
    );
    assert_eq!(show["MainPID"], b.main_pid().to_string());
    assert_eq!(w["ppid"].as_u64(), Some(u64::from(b.main_pid())));

    // For the record: from gunicorn's listening socket to its worker and to systemd's
    // "Started" (journald's receive times of gunicorn's lines; not asserted).
    let recs = b.wait_journal(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("JOB_TYPE", "start") && r.is("JOB_RESULT", "done"))
    });
    let started = recs
        .iter()
        .find(|r| r.is("JOB_TYPE", "start") && r.is("JOB_RESULT", "done"))
        .expect("checked");
    let booting = recs
        .iter()
        .find(|r| message_has(r, &format!("Booting worker with pid: {worker}")))
        .unwrap_or_else(|| panic!("no worker boot line:\n{}", bitpoll::messages(&recs)));
    let listening = recs
        .iter()
        .find(|r| message_has(r, "Listening at"))
        .expect("gunicorn's Listening line");
    eprintln!(
        "gunicorn listening -> worker booting: {} ms; listening -> systemd's Started: {} ms",
        at(booting).saturating_sub(at(listening)) / 1000,
        at(started).saturating_sub(at(listening)) / 1000
    );
    // The hook is the launcher's, in the state directory, the user's alone.
    let hook = format!("{DATA_DIR}/state/gunicorn-ready.py");
    assert_eq!(b.stat("%U %a", &hook), format!("{USER} 600"));
}

#[test]
fn a_unit_that_keeps_failing_is_restarted_as_configured_then_left_failed() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install(
        "backoff",
        Spec::default()
            .command("[\"/bin/false\"]")
            .unit_line("restart_sec = 1")
            .unit_line("start_limit_interval_sec = 120")
            .unit_line("start_limit_burst = 3")
            .unit_line("memory_max = \"2G\"")
            .unit_line("tasks_max = 100")
            .unit_line("limit_nofile = 4096"),
    );
    // The limits are in the loaded unit (the test machines cannot enforce them).
    let show = b.show(&[
        "RestartUSec",
        "StartLimitIntervalUSec",
        "StartLimitBurst",
        "MemoryHigh",
        "MemoryMax",
        "TasksMax",
        "LimitNOFILE",
    ]);
    eprintln!("{show:?}");
    assert_eq!(show["RestartUSec"], "1s");
    assert_eq!(show["StartLimitIntervalUSec"], "2min");
    assert_eq!(show["StartLimitBurst"], "3");
    assert_eq!(show["MemoryHigh"], (1u64 << 30).to_string());
    assert_eq!(show["MemoryMax"], (2u64 << 30).to_string());
    assert_eq!(show["TasksMax"], "100");
    assert_eq!(show["LimitNOFILE"], "4096");

    b.start_no_block();
    // With Restart=on-failure the unit only stays failed once the start limit is hit
    // (systemd 252 keeps Result=exit-code then and logs "Start request repeated too
    // quickly"); before that it waits in auto-restart.
    let p = b.wait_for_state(
        &["ActiveState", "SubState", "Result", "NRestarts"],
        Duration::from_secs(90),
        |p| p["ActiveState"] == "failed",
    );
    eprintln!("after the restarts: {p:?}");
    // Wait until no restart is pending any more, then count the attempts.
    std::thread::sleep(Duration::from_secs(2));
    let p2 = b.show(&["ActiveState", "SubState", "Result", "NRestarts"]);
    assert_eq!(p, p2, "the unit moved on after start-limit-hit");
    let execs = exec_records(&b);
    let invocations: BTreeSet<&str> = execs
        .iter()
        .filter_map(|r| r.get("_SYSTEMD_INVOCATION_ID"))
        .collect();
    let times: Vec<u64> = execs.iter().map(at).collect();
    let gaps: Vec<String> = times
        .windows(2)
        .map(|w| format!("{:.2}s", (w[1] - w[0]) as f64 / 1e6))
        .collect();
    eprintln!(
        "{} starts exec'd /bin/false; gaps between them: {}",
        invocations.len(),
        gaps.join(", ")
    );
    assert_eq!(
        invocations.len(),
        3,
        "StartLimitBurst=3 allows three starts:\n{}",
        b.diagnose(UNIT)
    );
    let recs = b.journal_json(UNIT);
    assert!(
        recs.iter()
            .any(|r| message_has(r, "Start request repeated too quickly")),
        "{}",
        bitpoll::messages(&recs)
    );
    let _ = b.exec(&["systemctl", "reset-failed", UNIT]);
}

#[test]
fn the_hardened_privileged_unit_refuses_a_root_owned_directory_it_cannot_give_to_the_user() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let b = bitpoll::install("nochown", Spec::default());
    let show = b.show(&["CapabilityBoundingSet"]);
    eprintln!("{show:?}");
    assert_eq!(
        show["CapabilityBoundingSet"],
        "cap_setgid cap_setuid cap_setpcap"
    );
    b.start_ok();
    assert_eq!(b.http_get("/healthz").0, 200);
    b.stop_and_reset();
    // A tool run as root left media/ root's (as a restore or `manage.py` as root would).
    let media = format!("{DATA_DIR}/media");
    b.exec_ok(&["chown", "root:root", &media]);
    let (out, _) = b.start(Duration::from_secs(60));
    let show = b.show(&["Result", "ExecMainStatus"]);
    b.stop_and_reset();
    assert!(!out.status.success(), "the start succeeded");
    assert_eq!(show["ExecMainStatus"], "3", "{show:?}");
    let recs = b.journal_of_failure(Duration::from_secs(10), |recs| {
        recs.iter()
            .any(|r| r.is("SYSLOG_IDENTIFIER", IDENT) && message_has(r, "without CAP_CHOWN"))
    });
    let error = recs
        .iter()
        .find(|r| message_has(r, "without CAP_CHOWN"))
        .expect("checked");
    eprintln!("the launcher said: {}", error.get("MESSAGE").unwrap_or(""));
    assert!(
        message_has(error, &format!("chown -R {USER}: {media}")),
        "{error:?}"
    );
    assert_eq!(b.stat("%U", &media), "root", "nothing was changed");
    // The admin's fix works.
    b.exec_ok(&["chown", "-R", &format!("{USER}:{USER}"), &media]);
    b.start_ok();
    assert_eq!(b.http_get("/healthz").0, 200);
}
