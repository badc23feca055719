//! The container deployment of examples/container on a real podman (runc, cgroupfs, the
//! host's kernel), with the real Bitpoll at the pinned commit:
//!
//! - the image is built from the repository's Containerfile on a local Debian trixie base
//!   (mmdebstrap + `podman import`: no registry), with the unpacked upstream snapshot and
//!   the launcher under test as named build contexts; PostgreSQL and nginx run from
//!   images built on the same base (tests/podman/services.Containerfile);
//! - `podman run`, as examples/container/README.md writes it: three replicas started
//!   together, read-only with a volume each and three capabilities, each answering 200;
//!   exactly one applied the migrations, the others' logs name whom they waited for;
//!   through nginx ending TLS (a self-signed certificate) the page's stylesheets load
//!   (the bytes build-assets.sh collected into the image) and a login POST succeeds for
//!   an account made with `manage createsuperuser --noinput`; the same POST through a
//!   replica that does not trust the proxy is refused ("Origin checking failed"); a data
//!   directory that starts empty and root's needs CAP_CHOWN; `podman stop` ends a serving
//!   replica with status 0 within the grace period, and a launcher waiting for the
//!   database with 143 (SIGTERM);
//! - compose.yaml with podman-compose (Debian's 1.0.3), images substituted through the
//!   variables the file reads: the same checks through its nginx;
//! - kubernetes/bitpoll.yaml with `podman kube play`: three pods serve, one migrated,
//!   the manifest's capabilities and read-only root are what the containers get. Two
//!   substitutions, named in examples/container/README.md: the image, and a hostPath for
//!   the Secret volume (podman 4.3 writes a Secret's values base64-encoded and mode 0644,
//!   which the launcher rightly refuses).
//!
//! One test, so that the image is built once and its store removed at the end (the
//! engine module also undoes what netavark adds to the host). Needs root, podman, runc,
//! netavark, podman-compose, mmdebstrap, curl, openssl and the upstream snapshot
//! (../shared/upstream, or the folder BITPOLL_UPSTREAM_DIR names); without them it prints
//! a SKIP line, or fails: in CI (CI=true), or for a missing tool with
//! BITPOLL_REQUIRE_SYSTEMD_TESTS=1.
//!
//! Run: `cargo test --test suite podman:: -- --nocapture` (about 7 minutes on 2 cores, most of it
//! the image build).

mod engine;
mod http;
use crate::util;

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use engine::Podman;
use http::{Client, csrf_token, stylesheets};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const LAUNCHER: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
/// The upstream snapshot, in BITPOLL_UPSTREAM_DIR or ../shared/upstream beside the
/// checkout (as for tests/setup-bitpoll.sh).
const UPSTREAM_FILE: &str = "bitpoll-35b0236.tar.gz";
const BASE: &str = "localhost/blt-base:trixie";
const IMAGE: &str = "localhost/bitpoll:test";
const DB_IMAGE: &str = "localhost/blt-db:test";
const FRONT_IMAGE: &str = "localhost/blt-front:test";
/// The site's name in the examples (BITPOLL_ALLOWED_HOSTS, nginx.conf, the probes).
const SITE: &str = "polls.example.org";
const CONFIG: &str = "/etc/bitpoll/launcher.toml";
const SERVE_TIMEOUT: Duration = Duration::from_secs(180);
/// The grace period of `podman stop` here and of the examples (stop_grace_period,
/// terminationGracePeriodSeconds).
const GRACE: &str = "30";

fn examples() -> PathBuf {
    Path::new(REPO).join("examples/container")
}

fn upstream() -> PathBuf {
    std::env::var_os("BITPOLL_UPSTREAM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("../shared/upstream"))
        .join(UPSTREAM_FILE)
}

fn find_tool(tool: &str) -> bool {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|d| Path::new(d).join(tool).exists())
}

/// The root slot (crate::util::root) when everything is here; otherwise the test is
/// skipped (crate::util::skip: a failure under CI=true), or fails for a missing tool with
/// BITPOLL_REQUIRE_SYSTEMD_TESTS=1 (what scripts/test.sh sets: it installs the tools). The
/// upstream snapshot is not the project's: a clone without ../shared skips.
fn require() -> Option<std::sync::MutexGuard<'static, ()>> {
    let required = std::env::var("BITPOLL_REQUIRE_SYSTEMD_TESTS").as_deref() == Ok("1");
    let mut missing: Vec<String> = Vec::new();
    for tool in [
        "podman",
        "runc",
        "netavark",
        "podman-compose",
        "mmdebstrap",
        "curl",
        "openssl",
    ] {
        if !find_tool(tool) && !Path::new("/usr/lib/podman").join(tool).exists() {
            missing.push(tool.into());
        }
    }
    if !missing.is_empty() {
        let why = format!(
            "needs {} (apt-get install podman runc netavark podman-compose mmdebstrap curl openssl)",
            missing.join(", ")
        );
        assert!(!required, "{why}; this test must run here");
        util::skip(&why);
        return None;
    }
    if !upstream().exists() {
        util::skip(&format!(
            "needs the upstream Bitpoll snapshot {} (../shared/upstream beside the checkout, \
             or the folder BITPOLL_UPSTREAM_DIR names)",
            upstream().display()
        ));
        return None;
    }
    util::root()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn write(path: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_text(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Images

/// Builds the base, the Bitpoll image and the service images into the store, once.
fn build_images(p: &Podman) {
    let t0 = Instant::now();
    let tarball = sh(Command::new("bash")
        .arg(Path::new(REPO).join("tests/setup-trixie.sh"))
        .arg("tarball"));
    p.ok(&["import", "--quiet", &tarball, BASE]);
    let t_base = t0.elapsed();

    // The pinned upstream source, unpacked, and the launcher under test: the two named
    // build contexts that replace the git and cargo stages.
    let src = p.dir.join("bitpoll-source");
    mkdir(&src, 0o755);
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(upstream())
        .arg("-C")
        .arg(&src));
    let bin = p.dir.join("launcher");
    mkdir(&bin, 0o755);
    fs::copy(LAUNCHER, bin.join("bitpoll-launcher")).expect("copy the launcher");
    fs::set_permissions(
        bin.join("bitpoll-launcher"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod the launcher");

    let mut args: Vec<String> = vec![
        "build".into(),
        "-f".into(),
        examples().join("Containerfile").display().to_string(),
        "-t".into(),
        IMAGE.into(),
        "--build-arg".into(),
        format!("BASE_IMAGE={BASE}"),
        "--build-context".into(),
        format!("bitpoll-source={}", src.display()),
        "--build-context".into(),
        format!("launcher={}", bin.display()),
    ];
    // pip's TLS may be intercepted here: the host's CA bundle, a secret of the build.
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.exists() {
        args.extend(["--secret".into(), format!("id=pip-ca,src={}", ca.display())]);
    }
    args.push(REPO.into());
    build(p, &args, "bitpoll");
    let t_image = t0.elapsed();

    for (target, tag) in [("db", DB_IMAGE), ("front", FRONT_IMAGE)] {
        let dir = Path::new(REPO).join("tests/podman");
        build(
            p,
            &[
                "build".into(),
                "-f".into(),
                dir.join("services.Containerfile").display().to_string(),
                "--target".into(),
                target.into(),
                "-t".into(),
                tag.into(),
                "--build-arg".into(),
                format!("BASE_IMAGE={BASE}"),
                dir.display().to_string(),
            ],
            target,
        );
    }
    // Nothing of the build's CA bundle stayed in the image.
    let found = p.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "ls -A /run/secrets 2>/dev/null; env | grep -c PIP_ || true",
    ]);
    assert_eq!(
        found, "0",
        "the build's CA bundle or PIP_CERT is in the image"
    );
    eprintln!(
        "[images] base {:.1}s, Bitpoll image {:.1}s, services {:.1}s (total {:.1}s)",
        t_base.as_secs_f64(),
        (t_image - t_base).as_secs_f64(),
        (t0.elapsed() - t_image).as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

fn build(p: &Podman, args: &[String], what: &str) {
    let log = p.dir.join(format!("build-{what}.log"));
    let file = fs::File::create(&log).expect("create the build log");
    let status = p
        .cmd(args)
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .status()
        .expect("run podman build");
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "podman build of {what} failed ({status}):\n{}",
            tail.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Secrets, database, replicas

/// The deployment's secret files, root's and mode 0400, in `dir` (0700), plus a
/// self-signed certificate for the site.
fn secrets(dir: &Path) {
    mkdir(dir, 0o700);
    write(
        &dir.join("db-password"),
        format!("{}\n", random_text(18)),
        0o400,
    );
    write(
        &dir.join("secret-key"),
        format!("{}\n", random_text(40)),
        0o400,
    );
    let key = sh(Command::new("/usr/bin/python3").args([
        "-c",
        "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())",
    ]));
    write(&dir.join("field-encryption-key"), format!("{key}\n"), 0o400);
    sh(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={SITE}")])
        .args(["-addext", &format!("subjectAltName=DNS:{SITE}")])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt")));
    fs::set_permissions(dir.join("tls.key"), fs::Permissions::from_mode(0o400)).expect("chmod");
}

fn secret_mounts(dir: &Path) -> Vec<String> {
    ["db-password", "secret-key", "field-encryption-key"]
        .iter()
        .flat_map(|s| {
            [
                "-v".to_owned(),
                format!("{}:/run/secrets/{s}:ro", dir.join(s).display()),
            ]
        })
        .collect()
}

/// PostgreSQL (Debian's, in the tests' db image) as `name` on `net`, reachable as `db`.
fn start_db(p: &Podman, net: &str, name: &str, secrets: &Path) {
    p.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        "--network-alias",
        "db",
        "-e",
        "POSTGRES_DB=bitpoll",
        "-e",
        "POSTGRES_USER=bitpoll",
        "-e",
        "POSTGRES_PASSWORD_FILE=/run/secrets/db-password",
        "-v",
        &format!(
            "{}:/run/secrets/db-password:ro",
            secrets.join("db-password").display()
        ),
        DB_IMAGE,
    ]);
    wait_db(p, name);
}

fn wait_db(p: &Podman, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !p
        .run(&["exec", name, "pg_isready", "-q", "-h", "127.0.0.1"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline && p.running(name),
            "PostgreSQL in {name} did not come up:\n{}",
            p.logs(name)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `GET /` of a replica (its address on the container network, port 8000, the
/// site's Host) until it answers 200; returns how long that took. A replica the engine
/// restarts (`--restart on-failure`, a pod's restart policy) may be down meanwhile; one
/// that stays exited fails the test.
fn wait_serving(p: &Podman, name: &str, dir: &Path) -> Duration {
    let t = Instant::now();
    let deadline = t + SERVE_TIMEOUT;
    let mut down_since: Option<Instant> = None;
    loop {
        if p.running(name) {
            down_since = None;
            let client = Client::http(&p.ip(name), 8000, SITE, &dir.join(name));
            let a = client.get("/");
            if a.status == 200 {
                let restarts = p.inspect(name, "{{.RestartCount}}");
                if restarts != "0" {
                    eprintln!("[serve] {name} was restarted {restarts} time(s) by the engine");
                }
                return t.elapsed();
            }
        } else {
            let since = *down_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "{name} exited and stays down:\n{}",
                p.logs(name)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not answer 200 within {SERVE_TIMEOUT:?}:\n{}",
            p.logs(name)
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// Exactly one of `names` applied migrations; each other one found them applied, and its
/// log names the holder of the lock it waited for, the migrator among them. With
/// `all_waited` false (replicas started one after the other, as podman-compose does) a
/// replica that came after the migration may not have waited. Returns the migrator.
fn one_migrated(p: &Podman, names: &[String], all_waited: bool) -> String {
    let logs: Vec<(String, String, String)> = names
        .iter()
        .map(|n| (n.clone(), p.inspect(n, "{{.Config.Hostname}}"), p.logs(n)))
        .collect();
    let dump = || {
        logs.iter()
            .map(|(n, _, l)| format!("--- {n}:\n{l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let migrators: Vec<&(String, String, String)> = logs
        .iter()
        .filter(|(_, _, l)| l.contains("  Applying "))
        .collect();
    assert_eq!(
        migrators.len(),
        1,
        "not exactly one replica applied migrations:\n{}",
        dump()
    );
    let (migrator, migrator_host, _) = migrators[0];
    let mut named_migrator = false;
    for (name, _, log) in logs.iter().filter(|(n, _, _)| n != migrator) {
        // Django found nothing to apply, or (replicas on one data directory: podman 4.3's
        // kube play gives a Deployment's pods one emptyDir) the migrator's stamp, written
        // before it let go of the data directory, spared the Django start.
        assert!(
            log.contains("No migrations to apply")
                || log.contains("step migrate skipped: nothing changed since it succeeded"),
            "{name} did not find the migrations applied:\n{}",
            dump()
        );
        let holders: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" INFO waiting for "))
            .filter_map(|l| l.split("held by bitpoll-launcher ").nth(1))
            .filter_map(|h| h.split_whitespace().next())
            .collect();
        assert!(
            !holders.is_empty() || !all_waited,
            "{name}'s log does not say whom it waited for:\n{}",
            dump()
        );
        named_migrator |= holders.contains(&migrator_host.as_str());
        if holders.is_empty() {
            eprintln!("[migrate] {name} started after the migration and found it done");
        } else {
            eprintln!("[migrate] {name} waited for {}", holders.join(", then "));
        }
    }
    assert!(
        named_migrator,
        "no replica's log names the migrator ({migrator_host}):\n{}",
        dump()
    );
    eprintln!("[migrate] {migrator} ({migrator_host}) applied the migrations");
    migrator.clone()
}

/// The container's effective capabilities (as podman sets them) and those of its PID 1
/// (gunicorn by now): none.
fn capabilities(p: &Podman, name: &str, want: &[&str]) {
    let caps = p.inspect(name, "{{range .EffectiveCaps}}{{.}} {{end}}");
    let mut got: Vec<&str> = caps.split_whitespace().collect();
    got.sort_unstable();
    let mut want: Vec<String> = want.iter().map(|c| format!("CAP_{c}")).collect();
    want.sort_unstable();
    assert_eq!(got, want, "{name}'s capabilities");
    let status = p.ok(&["exec", name, "cat", "/proc/1/status"]);
    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .expect("a Cap line");
        assert!(
            line.ends_with("0000000000000000"),
            "{name}: the server keeps a capability: {line}"
        );
    }
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{name}: no_new_privs is not set"
    );
}

fn read_only(p: &Podman, name: &str) {
    assert_eq!(p.inspect(name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert!(
        !p.run(&["exec", name, "touch", "/opt/bitpoll/written"])
            .status
            .success(),
        "{name}: the root file system is writable"
    );
    assert_eq!(
        p.ok(&["exec", name, "stat", "-c", "%U:%G %a", "/var/lib/bitpoll"]),
        "bitpoll:bitpoll 750"
    );
}

// ---------------------------------------------------------------------------------------
// Through the front

/// The page through the front is styled: each stylesheet it links answers 200 with the
/// bytes build-assets.sh collected into the image.
fn styled_page(p: &Podman, client: &Client, replica: &str) {
    let page = client.get("/");
    assert_eq!(page.status, 200, "{}", page.text());
    let css = stylesheets(&page.text());
    assert!(
        !css.is_empty(),
        "the page links no stylesheet:\n{}",
        page.text()
    );
    for href in &css {
        let a = client.get(href);
        assert_eq!(a.status, 200, "{href}");
        assert!(
            a.content_type.starts_with("text/css"),
            "{href}: {}",
            a.content_type
        );
        let file = format!("/opt/bitpoll/static/{}", &href["/static/".len()..]);
        let want = p.ok(&["exec", replica, "sha256sum", &file]);
        assert_eq!(
            want.split_whitespace().next(),
            Some(sha256_hex(&a.body).as_str()),
            "{href} is not the collected {file}"
        );
    }
    eprintln!(
        "[front] the page and its {} stylesheets: {}",
        css.len(),
        css.join(", ")
    );
}

fn create_admin(p: &Podman, replica: &str, user: &str, password: &str) {
    let out = p.ok(&[
        "exec",
        "-e",
        &format!("DJANGO_SUPERUSER_USERNAME={user}"),
        "-e",
        "DJANGO_SUPERUSER_EMAIL=admin@example.org",
        "-e",
        &format!("DJANGO_SUPERUSER_PASSWORD={password}"),
        replica,
        "bitpoll-launcher",
        "manage",
        "--config",
        CONFIG,
        "--",
        "createsuperuser",
        "--noinput",
    ]);
    assert!(out.contains("Superuser created successfully"), "{out}");
}

/// Bitpoll's login form, filled in and sent as a browser would.
fn log_in(client: &Client, user: &str, password: &str) -> http::Answer {
    let form = client.get("/login/");
    assert_eq!(form.status, 200, "{}", form.text());
    let token = csrf_token(&form.text());
    client.post(
        "/login/",
        "/login/",
        &[
            ("csrfmiddlewaretoken", &token),
            ("username", user),
            ("password", password),
        ],
    )
}

fn logs_in(client: &Client, user: &str, password: &str) {
    let a = log_in(client, user, password);
    assert_eq!(a.status, 302, "the login POST failed:\n{}", a.text());
    assert_eq!(
        a.location,
        format!("{}/", client.base),
        "redirected elsewhere"
    );
    assert!(client.has_cookie("sessionid"), "no session cookie");
    let home = client.get("/");
    assert_eq!(home.status, 200);
    assert!(
        home.text().contains(user),
        "the page does not show {user} logged in"
    );
    eprintln!("[front] {user} logged in through {}", client.base);
}

fn start_front(p: &Podman, name: &str, net: &str, conf: &Path, secrets: &Path) -> u16 {
    let port = util::free_port();
    p.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        "-p",
        &format!("127.0.0.1:{port}:443"),
        "-v",
        &format!("{}:/etc/nginx/conf.d/bitpoll.conf:ro", conf.display()),
        "-v",
        &format!(
            "{}:/run/secrets/tls.crt:ro",
            secrets.join("tls.crt").display()
        ),
        "-v",
        &format!(
            "{}:/run/secrets/tls.key:ro",
            secrets.join("tls.key").display()
        ),
        FRONT_IMAGE,
    ]);
    port
}

fn wait_front(p: &Podman, name: &str, client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get("/").status != 200 {
        assert!(
            Instant::now() < deadline && p.running(name),
            "{name} does not answer:\n{}",
            p.logs(name)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// `podman stop -t GRACE` and the exit status; the time it took.
fn stop(p: &Podman, name: &str) -> (String, Duration) {
    let t = Instant::now();
    p.ok(&["stop", "-t", GRACE, name]);
    let took = t.elapsed();
    (p.inspect(name, "{{.State.ExitCode}}"), took)
}

// ---------------------------------------------------------------------------------------
// The scenarios

/// The replica's `podman run` arguments as README.md writes them.
fn replica_args(name: &str, net: &str, volume: &str, secrets: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        net,
        "--network-alias",
        "bitpoll",
        "--restart",
        "on-failure",
        "--read-only",
        "-v",
        &format!("{volume}:/var/lib/bitpoll"),
        "--cap-drop",
        "all",
        "--cap-add",
        "SETUID,SETGID,SETPCAP",
        "--security-opt",
        "no-new-privileges",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(secret_mounts(secrets));
    args.push(IMAGE.into());
    args
}

fn with_podman_run(p: &Podman) {
    let t0 = Instant::now();
    let net = "bitpoll-net";
    p.ok(&["network", "create", net]);
    let sec = p.dir.join("run-secrets");
    secrets(&sec);
    start_db(p, net, "db", &sec);

    // Three replicas started together.
    let names: Vec<String> = (1..=3).map(|i| format!("bitpoll-{i}")).collect();
    thread::scope(|s| {
        for (i, name) in names.iter().enumerate() {
            let args = replica_args(name, net, &format!("bitpoll-data-{}", i + 1), &sec);
            s.spawn(move || p.ok(&args));
        }
    });
    let clients = p.dir.join("run-clients");
    for name in &names {
        let took = wait_serving(p, name, &clients);
        eprintln!(
            "[run] {name} answers 200 ({:.1}s after the start)",
            took.as_secs_f64()
        );
    }
    one_migrated(p, &names, true);
    for name in &names {
        read_only(p, name);
        capabilities(p, name, &["SETUID", "SETGID", "SETPCAP"]);
    }

    // The front, and a first administrator.
    let conf = examples().join("nginx.conf");
    let port = start_front(p, "front", net, &conf, &sec);
    let client = Client::https(SITE, port, &sec.join("tls.crt"), &clients.join("front"));
    wait_front(p, "front", &client);
    styled_page(p, &client, "bitpoll-1");
    let password = random_text(12);
    create_admin(p, "bitpoll-2", "polladmin", &password);
    logs_in(&client, "polladmin", &password);

    // A data directory that starts empty and root's (a tmpfs, Kubernetes' emptyDir) is
    // given to bitpoll only with CAP_CHOWN; without it the launcher refuses with the fix.
    let empty = p.dir.join("empty-data");
    mkdir(&empty, 0o777);
    let mut args = replica_args("bitpoll-nochown", net, "unused", &sec);
    args[1] = "--rm".into(); // in the foreground, to its exit
    let r = args
        .iter()
        .position(|a| a == "--restart")
        .expect("--restart");
    args.drain(r..r + 2);
    let v = args
        .iter()
        .position(|a| a == "unused:/var/lib/bitpoll")
        .expect("the volume");
    args[v] = format!("{}:/var/lib/bitpoll", empty.display());
    let out = p.run(&args);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("without CAP_CHOWN"), "{text}");

    // With CAP_CHOWN it serves; this replica does not trust the proxy's headers (the
    // config without --forwarded-allow-ips), and a login POST through a front to it is
    // refused, as Django sees plain HTTP behind a TLS proxy.
    let untrusted = fs::read_to_string(examples().join("launcher.toml"))
        .expect("read launcher.toml")
        .replace("\"--forwarded-allow-ips\", \"*\",", "");
    assert!(
        !untrusted.contains("\"--forwarded-allow-ips\""),
        "{untrusted}"
    );
    let untrusted_conf = sec.join("launcher-untrusted.toml");
    write(&untrusted_conf, untrusted, 0o644);
    let mut args = replica_args("bitpoll-untrusted", net, "unused", &sec);
    let v = args
        .iter()
        .position(|a| a == "unused:/var/lib/bitpoll")
        .expect("the volume");
    args[v] = format!("{}:/var/lib/bitpoll", empty.display());
    let a = args.iter().position(|a| a == "bitpoll").expect("the alias");
    args[a] = "bitpoll-untrusted".into();
    let caps = args
        .iter()
        .position(|a| a == "SETUID,SETGID,SETPCAP")
        .expect("caps");
    args[caps] = "CHOWN,SETUID,SETGID,SETPCAP".into();
    args.splice(
        args.len() - 1..args.len() - 1,
        [
            "-v".to_owned(),
            format!("{}:{CONFIG}:ro", untrusted_conf.display()),
        ],
    );
    p.ok(&args);
    wait_serving(p, "bitpoll-untrusted", &clients);
    assert_eq!(
        sh(Command::new("stat").args(["-c", "%u %a"]).arg(&empty)),
        "900 750",
        "the launcher gave the empty directory to bitpoll"
    );
    let conf2 = sec.join("nginx-untrusted.conf");
    let text = fs::read_to_string(&conf)
        .expect("read nginx.conf")
        .replace("server bitpoll:8000;", "server bitpoll-untrusted:8000;");
    write(&conf2, text, 0o644);
    let port2 = start_front(p, "front-untrusted", net, &conf2, &sec);
    let client2 = Client::https(SITE, port2, &sec.join("tls.crt"), &clients.join("front2"));
    wait_front(p, "front-untrusted", &client2);
    let refused = log_in(&client2, "polladmin", &password);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        p.logs("bitpoll-untrusted")
            .contains("Origin checking failed"),
        "{}",
        p.logs("bitpoll-untrusted")
    );
    eprintln!(
        "[run] without --forwarded-allow-ips the same login POST gets 403 (Origin checking failed)"
    );

    // podman stop: gunicorn stops gracefully, status 0, well within the grace period.
    for name in &names {
        let (code, took) = stop(p, name);
        eprintln!(
            "[run] podman stop {name}: status {code} in {:.2}s",
            took.as_secs_f64()
        );
        assert_eq!(
            code,
            "0",
            "{name} did not stop gracefully:\n{}",
            p.logs(name)
        );
    }
    // A launcher still waiting for the database stops at once, with 128 + SIGTERM.
    p.ok(&["stop", "-t", GRACE, "db"]);
    p.ok(&replica_args(
        "bitpoll-waiting",
        net,
        "bitpoll-data-w",
        &sec,
    ));
    p.wait_log("bitpoll-waiting", Duration::from_secs(60), |l| {
        l.contains("Waiting for PostgreSQL")
    });
    let (code, took) = stop(p, "bitpoll-waiting");
    eprintln!(
        "[run] podman stop of a launcher waiting for PostgreSQL: status {code} in {:.2}s",
        took.as_secs_f64()
    );
    assert_eq!(code, "143", "{}", p.logs("bitpoll-waiting"));

    p.ok(&["rm", "-af", "-t", "0"]);
    p.ok(&["network", "rm", net]);
    p.ok(&["volume", "prune", "-f"]);
    eprintln!("[run] done in {:.1}s", t0.elapsed().as_secs_f64());
}

fn with_compose(p: &Podman) {
    let t0 = Instant::now();
    // The compose file and nginx.conf as shipped, in a project directory with its secrets.
    let proj = p.dir.join("compose");
    mkdir(&proj, 0o755);
    for file in ["compose.yaml", "nginx.conf"] {
        fs::copy(examples().join(file), proj.join(file)).expect("copy the example");
    }
    let sec = proj.join("secrets");
    secrets(&sec);
    let pg = sec.join("db-password.postgres");
    fs::copy(sec.join("db-password"), &pg).expect("copy the password");
    chown(&pg, Some(999), Some(0)).expect("chown the server's copy");
    let port = util::free_port();
    let mut cmd = Command::new("podman-compose");
    cmd.current_dir(&proj)
        .envs(p.env())
        .env("POSTGRES_IMAGE", DB_IMAGE)
        .env("NGINX_IMAGE", FRONT_IMAGE)
        .env("BITPOLL_IMAGE", IMAGE)
        .env("BITPOLL_HTTPS_PORT", port.to_string())
        .args(["-p", "blt", "up", "-d", "--no-build"]);
    sh(&mut cmd);
    let names: Vec<String> = (1..=3).map(|i| format!("blt_bitpoll_{i}")).collect();
    let clients = p.dir.join("compose-clients");
    for name in &names {
        let took = wait_serving(p, name, &clients);
        eprintln!("[compose] {name} answers 200 ({:.1}s)", took.as_secs_f64());
    }
    // podman-compose starts the replicas one after the other, a second apart.
    one_migrated(p, &names, false);
    for name in &names {
        read_only(p, name);
        capabilities(p, name, &["CHOWN", "SETUID", "SETGID", "SETPCAP"]);
    }
    let client = Client::https(SITE, port, &sec.join("tls.crt"), &clients.join("front"));
    wait_front(p, "blt_front_1", &client);
    styled_page(p, &client, "blt_bitpoll_1");
    let password = random_text(12);
    create_admin(p, "blt_bitpoll_3", "composeadmin", &password);
    logs_in(&client, "composeadmin", &password);
    // podman-compose 1.0 does not pass stop_grace_period on: the same -t here.
    for name in &names {
        let (code, took) = stop(p, name);
        eprintln!(
            "[compose] podman stop {name}: status {code} in {:.2}s",
            took.as_secs_f64()
        );
        assert_eq!(code, "0", "{}", p.logs(name));
    }
    let mut cmd = Command::new("podman-compose");
    cmd.current_dir(&proj)
        .envs(p.env())
        .args(["-p", "blt", "down", "-v"]);
    sh(&mut cmd);
    // podman-compose 1.0 leaves the project's network behind.
    let _ = p.run(&["network", "rm", "blt_default"]);
    eprintln!("[compose] done in {:.1}s", t0.elapsed().as_secs_f64());
}

/// Replaces `from` (which must occur exactly once) by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in the manifest");
    text.replace(from, to)
}

fn with_kube_play(p: &Podman) {
    let t0 = Instant::now();
    let net = "kube-net";
    p.ok(&["network", "create", net]);
    let sec = p.dir.join("kube-secrets");
    secrets(&sec);
    start_db(p, net, "kube-db", &sec);

    let manifest =
        fs::read_to_string(examples().join("kubernetes/bitpoll.yaml")).expect("read the manifest");
    let manifest = replace_once(
        &manifest,
        "image: registry.example.org/bitpoll:latest",
        &format!("image: {IMAGE}"),
    );
    let manifest = replace_once(
        &manifest,
        "secret: {secretName: bitpoll, defaultMode: 0400}",
        &format!("hostPath: {{path: {}, type: Directory}}", sec.display()),
    );
    let file = p.dir.join("bitpoll.yaml");
    write(&file, manifest, 0o644);
    let played = p.ok(&[
        "kube",
        "play",
        "--network",
        net,
        &file.display().to_string(),
    ]);
    p.note_pods();
    eprintln!("[kube] played:\n{played}");
    let pods = p.ok(&["pod", "ps", "--format", "{{.Name}}"]);
    let mut pods: Vec<&str> = pods.lines().collect();
    pods.sort_unstable();
    assert_eq!(
        pods,
        ["bitpoll-pod-0", "bitpoll-pod-1", "bitpoll-pod-2"],
        "the Deployment's replicas"
    );
    let names: Vec<String> = pods.iter().map(|pod| format!("{pod}-bitpoll")).collect();
    let clients = p.dir.join("kube-clients");
    for name in &names {
        let took = wait_serving(p, name, &clients);
        eprintln!("[kube] {name} answers 200 ({:.1}s)", took.as_secs_f64());
    }
    one_migrated(p, &names, false);
    for name in &names {
        assert_eq!(p.inspect(name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
        capabilities(p, name, &["CHOWN", "SETUID", "SETGID", "SETPCAP"]);
    }
    // What podman made of the probes (a healthcheck it runs from systemd timers only).
    eprintln!(
        "[kube] healthcheck from the probes: {}",
        p.inspect(&names[0], "{{json .Config.Healthcheck}}")
    );
    p.ok(&["kube", "down", &file.display().to_string()]);
    // ingress.yaml has no kind podman plays.
    let ingress = p.run(&[
        "kube",
        "play",
        &examples()
            .join("kubernetes/ingress.yaml")
            .display()
            .to_string(),
    ]);
    eprintln!(
        "[kube] podman kube play ingress.yaml: {}{}",
        String::from_utf8_lossy(&ingress.stdout).trim(),
        String::from_utf8_lossy(&ingress.stderr).trim()
    );
    assert_eq!(p.ok(&["pod", "ps", "-q"]), "", "nothing is left running");
    p.ok(&["rm", "-af", "-t", "0"]);
    p.ok(&["network", "rm", net]);
    // kube down leaves the ConfigMap's volume.
    p.ok(&["volume", "prune", "-f"]);
    eprintln!("[kube] done in {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn the_container_examples_run_under_podman_with_the_real_bitpoll() {
    let Some(_root_slot) = require() else {
        return;
    };
    let t0 = Instant::now();
    let p = Podman::new();
    build_images(&p);
    // Containers run as uid 900 and the host's tests remove their users' processes by
    // uid: not while another checkout's tests run.
    let _machine = util::lock_machine();
    with_podman_run(&p);
    with_compose(&p);
    with_kube_play(&p);
    eprintln!("[podman] all done in {:.1}s", t0.elapsed().as_secs_f64());
}

/// The replicas of examples/container/README.md start with the options this test starts
/// them with (docs/guides/containers.md points at that README): its `podman run` loop,
/// with `$i` and `$S` (the secret mounts) as the README defines them, is
/// [`replica_args`] with the README's image.
#[test]
fn the_readme_starts_the_replicas_as_this_test_does() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container/README.md"),
    )
    .expect("read examples/container/README.md");
    // The loop's command, its continuation lines joined.
    let start = readme
        .find("podman run -d --name bitpoll-$i")
        .expect("the README's podman run loop");
    let end = start + readme[start..].find("\ndone").expect("the loop's end");
    let command = readme[start..end].replace("\\\n", " ");
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let secrets = Path::new("$PWD/secrets");
    let mut want = replica_args("bitpoll-$i", "bitpoll-net", "bitpoll-data-$i", secrets);
    want.pop(); // the test's image
    let mounts = secret_mounts(secrets);
    want.truncate(want.len() - mounts.len());
    want.extend(["$S".to_string(), "localhost/bitpoll".to_string()]);
    assert_eq!(words, want, "the README's replicas and the test's differ");
    // $S, as the README defines it.
    let s_start = readme.find("S=\"").expect("the README's S=");
    let s_end = s_start + 3 + readme[s_start + 3..].find('"').expect("S's end");
    let s: Vec<&str> = readme[s_start + 3..s_end].split_whitespace().collect();
    assert_eq!(
        s, mounts,
        "the README's secret mounts and the test's differ"
    );
}
