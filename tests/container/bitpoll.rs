//! Bitpoll under a real systemd: a booted container with the demo app (or, with
//! [`Spec::installed_app`], an app installed on the host, such as the real Bitpoll from
//! tests/setup-bitpoll.sh), the launcher's config, the service account from `bitpoll-launcher sysusers` and the unit from
//! `bitpoll-launcher unit`, installed as an admin would on a plain (non-NixOS) host.
//!
//! Everything is rendered by the launcher itself inside the container (so the paths in the
//! unit are container paths), and the unit is installed exactly as rendered: the hardening
//! under test is the shipped nixos/hardening.toml compiled into the binary. A [`Spec`]
//! picks the mode (privileged, the default, or `unit --unprivileged`) and socket
//! activation (`unit --socket`, with the `bitpoll.socket` unit it prints).

use std::collections::HashMap;
use std::sync::Once;
use std::time::{Duration, Instant};

use super::{Container, ContainerBuilder, JsonRecord, LAUNCHER_PATH};

pub const UNIT: &str = "bitpoll.service";
pub const UNIT_PATH: &str = "/etc/systemd/system/bitpoll.service";
pub const SOCKET_UNIT: &str = "bitpoll.socket";
pub const SOCKET_UNIT_PATH: &str = "/etc/systemd/system/bitpoll.socket";
/// The unix socket of [`Listen::Unix`] specs.
pub const UNIX_SOCKET: &str = "/run/bitpoll/http.sock";
pub const DROPIN_DIR: &str = "/etc/systemd/system/bitpoll.service.d";
pub const CONFIG_PATH: &str = "/etc/bitpoll/launcher.toml";
pub const SYSUSERS_PATH: &str = "/etc/sysusers.d/bitpoll.conf";
pub const TMPFILES_PATH: &str = "/etc/tmpfiles.d/bitpoll.conf";
const UID_RANGE_PATH: &str = "/etc/sysusers.d/00-blt-uid-range.conf";
const UID_RANGE: &str =
    "# The tests' container allocates system uids here (see bitpoll.rs).\nr - 850-899\n";
/// Outside /tmp, /root and /home: what a hardened unit can see.
pub const APP_DIR: &str = "/srv/bitpoll/app";
pub const DATA_DIR: &str = "/var/lib/bitpoll";
pub const USER: &str = "bitpoll";
/// The credential file on the "host" (the container's /etc), root-owned 0600.
pub const FEK_PATH: &str = "/etc/bitpoll/fek";
pub const FEK_CREDENTIAL: &str = "fek";
pub const SERVER_URL: &str = "http://127.0.0.1:8000";
/// The launcher's SYSLOG_IDENTIFIER.
pub const IDENT: &str = "bitpoll-launcher";

/// The demo venv on the host, visible inside through the overlay.
pub const VENV: &str = "/opt/bitpoll-launcher-demo/venv";
const DEMO_APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/demo-app");
/// Where the container sees the demo app: bound explicitly, since the checkout may live
/// where the container has a file system of its own (its /tmp is a fresh tmpfs).
pub const DEMO_APP_IN: &str = "/srv/blt-checkout/demo-app";
const SETUP_VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup-venv.sh");

static VENV_ONCE: Once = Once::new();

/// Builds (or checks) the demo venv on the host, once per test process and before any
/// container boots (the host root is the overlay's lower layer: it must not change while
/// a container runs).
pub fn ensure_venv() {
    VENV_ONCE.call_once(|| {
        let out = std::process::Command::new("bash")
            .arg(SETUP_VENV)
            .output()
            .expect("run tests/setup-venv.sh");
        assert!(
            out.status.success(),
            "tests/setup-venv.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            path.trim(),
            VENV,
            "the venv is not where the tests expect it"
        );
    });
}

/// Where BITPOLL_FIELD_ENCRYPTION_KEY comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fek {
    /// `{ generate = "fernet-key" }`.
    Generate,
    /// `{ credential = "fek" }` with `LoadCredential=fek:/etc/bitpoll/fek`.
    Credential,
}

/// How the unit starts the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No User=: the launcher starts as root (the unit `bitpoll-launcher unit` prints).
    Privileged,
    /// `bitpoll-launcher unit --unprivileged`: User=, StateDirectory=, no capabilities.
    Unprivileged,
}

/// Where a socket-activated unit listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// The address gunicorn would bind, [`SERVER_URL`].
    Tcp,
    /// [`UNIX_SOCKET`], as for nginx.
    Unix,
}

/// The app the unit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// tests/demo-app, copied to [`APP_DIR`], with the demo venv [`VENV`].
    Demo,
    /// An app installed on the host before the boot (visible through the overlay), used in
    /// place: its source directory and venv.
    Installed { source: String, venv: String },
}

/// What varies between the tests' configurations.
#[derive(Debug, Clone)]
pub struct Spec {
    pub app: App,
    pub fek: Fek,
    pub stall_timeout_sec: Option<u64>,
    /// Extra `[environment]` variables (DEMO_MIGRATION_DELAY, DEMO_REPORT_ENV, ...).
    pub environment: Vec<(String, String)>,
    pub mode: Mode,
    /// Socket activation (`unit --socket`), listening there.
    pub socket: Option<Listen>,
    /// Extra `[server]` lines (`ready = "worker"`).
    pub server: Vec<String>,
    /// `server.command` instead of gunicorn, as TOML.
    pub command: Option<String>,
    /// `[unit]` lines (limits, restart policy).
    pub unit: Vec<String>,
    /// Another root file system to boot (tests/setup-trixie.sh) instead of the host's;
    /// it must hold the demo venv at [`VENV`].
    pub root: Option<std::path::PathBuf>,
    /// systemd in legacy cgroup mode, enforcing the memory and task limits.
    pub legacy_cgroups: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            app: App::Demo,
            fek: Fek::Generate,
            stall_timeout_sec: None,
            environment: Vec::new(),
            mode: Mode::Privileged,
            socket: None,
            server: Vec::new(),
            command: None,
            unit: Vec::new(),
            root: None,
            legacy_cgroups: false,
        }
    }
}

impl Spec {
    /// Run the app in `source` with the venv `venv` (host paths outside /tmp and /root,
    /// made before the boot) instead of the demo app.
    pub fn installed_app(mut self, source: &str, venv: &str) -> Self {
        self.app = App::Installed {
            source: source.to_owned(),
            venv: venv.to_owned(),
        };
        self
    }

    /// The app's source directory inside the container.
    pub fn app_dir(&self) -> &str {
        match &self.app {
            App::Demo => APP_DIR,
            App::Installed { source, .. } => source,
        }
    }

    /// The app's venv inside the container.
    pub fn venv(&self) -> &str {
        match &self.app {
            App::Demo => VENV,
            App::Installed { venv, .. } => venv,
        }
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn socket(mut self, listen: Listen) -> Self {
        self.socket = Some(listen);
        self
    }

    pub fn server_line(mut self, line: &str) -> Self {
        self.server.push(line.to_owned());
        self
    }

    pub fn command(mut self, toml_array: &str) -> Self {
        self.command = Some(toml_array.to_owned());
        self
    }

    pub fn unit_line(mut self, line: &str) -> Self {
        self.unit.push(line.to_owned());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.environment.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn stall_timeout(mut self, secs: u64) -> Self {
        self.stall_timeout_sec = Some(secs);
        self
    }

    pub fn root_dir(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    pub fn legacy_cgroups(mut self) -> Self {
        self.legacy_cgroups = true;
        self
    }

    pub fn fek(mut self, fek: Fek) -> Self {
        self.fek = fek;
        self
    }

    /// The launcher's configuration file.
    pub fn config(&self) -> String {
        let mut prepare =
            String::from("migrate = true\ncollectstatic = true\ncompilemessages = true\n");
        if let Some(s) = self.stall_timeout_sec {
            prepare.push_str(&format!("stall_timeout_sec = {s}\n"));
        }
        let fek = match self.fek {
            Fek::Generate => r#"{ generate = "fernet-key" }"#.to_owned(),
            Fek::Credential => format!(r#"{{ credential = "{FEK_CREDENTIAL}" }}"#),
        };
        let mut environment = String::from("BITPOLL_ALLOWED_HOSTS = \"127.0.0.1,localhost\"\n");
        for (k, v) in &self.environment {
            environment.push_str(&format!("{k} = {v:?}\n"));
        }
        let (app_dir, venv) = (self.app_dir(), self.venv());
        let command = self.command.clone().unwrap_or_else(|| {
            format!(
                r#"["{venv}/bin/gunicorn", "--bind", "127.0.0.1:8000", "--workers", "1",
           "--no-control-socket", "bitpoll.wsgi:application"]"#
            )
        });
        let mut server = String::new();
        for line in &self.server {
            server.push_str(line);
            server.push('\n');
        }
        let mut unit = String::new();
        if !self.unit.is_empty() {
            unit.push_str("\n[unit]\n");
            for line in &self.unit {
                unit.push_str(line);
                unit.push('\n');
            }
        }
        format!(
            r#"# bitpoll-launcher configuration for the systemd end-to-end tests.
[service]
user = "{USER}"
create_user = false
data_dir = "{DATA_DIR}"

[app]
python = "{venv}/bin/python"
source_dir = "{app_dir}"
settings_module = "bitpoll.settings"

[prepare]
{prepare}
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {fek}

[environment]
{environment}
[server]
command = {command}
{server}{unit}"#
        )
    }
}

/// A booted container with Bitpoll installed (not started).
pub struct Bitpoll {
    pub c: Container,
    pub spec: Spec,
    /// sha256 (hex) of the credential's value, when [`Fek::Credential`].
    pub fek_sha256: Option<String>,
}

impl std::ops::Deref for Bitpoll {
    type Target = Container;
    fn deref(&self) -> &Container {
        &self.c
    }
}

/// Boots a container and installs Bitpoll as an admin would: app copy, config,
/// account (sysusers), credential file, and the unit exactly as `bitpoll-launcher unit`
/// renders it.
pub fn install(tag: &str, spec: Spec) -> Bitpoll {
    let mut builder =
        ContainerBuilder::new(tag)
            .with_launcher()
            .file(CONFIG_PATH, spec.config(), 0o644);
    if spec.app == App::Demo {
        builder = builder.bind_ro(DEMO_APP, DEMO_APP_IN);
    }
    match &spec.root {
        Some(root) => {
            assert!(
                root.join(VENV.trim_start_matches('/'))
                    .join("bin/python")
                    .exists(),
                "{} has no demo venv at {VENV}",
                root.display()
            );
            builder = builder.root_dir(root);
        }
        None if spec.app == App::Demo => ensure_venv(),
        None => {}
    }
    if spec.legacy_cgroups {
        builder = builder.legacy_cgroups();
    }
    let c = builder.boot();
    let t = Instant::now();

    // The account, from the sysusers.d entry the launcher prints. The container shares
    // numeric uids with the host (no user namespace), and tests on the host that create a
    // system user (useradd picks the highest free uid below 1000) clean up by killing every
    // process with that uid, in any container too; so the container allocates from a range
    // of its own.
    let sysusers = c.exec_ok(&[LAUNCHER_PATH, "sysusers", "--config", CONFIG_PATH]);
    c.write_file(UID_RANGE_PATH, UID_RANGE.as_bytes(), 0o644);
    c.write_file(SYSUSERS_PATH, sysusers.as_bytes(), 0o644);
    c.exec_ok(&["systemd-sysusers", UID_RANGE_PATH, SYSUSERS_PATH]);
    c.exec_ok(&["id", USER]);

    // The data directory, from the tmpfiles.d entry the launcher prints (the hardened unit
    // cannot create it below a read-only /var/lib). The unprivileged unit's StateDirectory=
    // makes systemd create it for the user instead.
    if spec.mode == Mode::Privileged {
        let tmpfiles = c.exec_ok(&[LAUNCHER_PATH, "tmpfiles", "--config", CONFIG_PATH]);
        c.write_file(TMPFILES_PATH, tmpfiles.as_bytes(), 0o644);
        c.exec_ok(&["systemd-tmpfiles", "--create", TMPFILES_PATH]);
    }

    // The demo app: a root-owned copy keeping modification times, read-only for the
    // service (the launcher compiles the catalogs into the data directory). An installed
    // app is used where it is.
    if spec.app == App::Demo {
        let script = format!(
            "set -e; mkdir -p {APP_DIR}; cp -a {DEMO_APP_IN}/. {APP_DIR}/; \
             find {APP_DIR} -name __pycache__ -prune -exec rm -rf {{}} +; \
             find {APP_DIR} -name '*.mo' -delete; \
             chmod -R a+rX,go-w /srv/bitpoll"
        );
        c.exec_ok(&["sh", "-c", &script]);
    }

    // A credential: a fresh Fernet key in a root-only file.
    let mut fek_sha256 = None;
    let mut unit_args = vec![LAUNCHER_PATH, "unit", "--config", CONFIG_PATH];
    let cred_arg = format!("{FEK_CREDENTIAL}={FEK_PATH}");
    if spec.fek == Fek::Credential {
        let py = format!(
            "import base64, hashlib, os\n\
             key = base64.urlsafe_b64encode(os.urandom(32))\n\
             os.umask(0o077)\n\
             fd = os.open({FEK_PATH:?}, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n\
             os.write(fd, key + b'\\n')\n\
             os.close(fd)\n\
             print(hashlib.sha256(key).hexdigest())\n"
        );
        let sha = c.exec_ok(&["/usr/bin/python3", "-c", &py]);
        fek_sha256 = Some(sha.trim().to_owned());
        unit_args.extend(["--credential", &cred_arg]);
    }

    if spec.mode == Mode::Unprivileged {
        unit_args.push("--unprivileged");
    }
    let listen = match spec.socket {
        Some(Listen::Tcp) => Some("127.0.0.1:8000"),
        Some(Listen::Unix) => Some(UNIX_SOCKET),
        None => None,
    };
    if let Some(listen) = listen {
        unit_args.extend(["--socket", "--listen", listen]);
        let socket = c.exec_ok(&[
            LAUNCHER_PATH,
            "unit",
            "--config",
            CONFIG_PATH,
            "--socket-unit",
            "--listen",
            listen,
        ]);
        c.write_file(SOCKET_UNIT_PATH, socket.as_bytes(), 0o644);
    }
    // The unit, as rendered (no --hardening: the shipped list).
    let unit = c.exec_ok(&unit_args);
    c.write_file(UNIT_PATH, unit.as_bytes(), 0o644);
    c.exec_ok(&["systemctl", "daemon-reload"]);
    eprintln!(
        "[bitpoll] installed in {:.3}s: unit {UNIT_PATH} ({} lines)",
        t.elapsed().as_secs_f64(),
        unit.lines().count()
    );
    Bitpoll {
        c,
        spec,
        fek_sha256,
    }
}

impl Bitpoll {
    /// Writes a drop-in for the unit and reloads systemd.
    pub fn drop_in(&self, name: &str, text: &str) {
        self.c
            .write_file(&format!("{DROPIN_DIR}/{name}"), text.as_bytes(), 0o644);
        self.c.exec_ok(&["systemctl", "daemon-reload"]);
    }

    /// Replaces the launcher's configuration file.
    pub fn write_config(&self, text: &str) {
        self.c.write_file(CONFIG_PATH, text.as_bytes(), 0o644);
    }

    /// `systemctl start bitpoll` with a timeout; returns (output, time taken).
    pub fn start(&self, timeout: Duration) -> (std::process::Output, Duration) {
        let t = Instant::now();
        let out = self
            .c
            .exec_with_timeout(&["systemctl", "start", UNIT], timeout);
        (out, t.elapsed())
    }

    /// Starts the unit and panics with its status and journal if that fails.
    pub fn start_ok(&self) -> Duration {
        let (out, took) = self.start(Duration::from_secs(120));
        assert!(
            out.status.success(),
            "systemctl start {UNIT} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.c.diagnose(UNIT)
        );
        took
    }

    pub fn show(&self, props: &[&str]) -> HashMap<String, String> {
        self.c.show(UNIT, props)
    }

    pub fn main_pid(&self) -> u32 {
        let pid: u32 = self.show(&["MainPID"])["MainPID"]
            .parse()
            .expect("MainPID is a number");
        assert_ne!(pid, 0, "no MainPID:\n{}", self.c.diagnose(UNIT));
        pid
    }

    /// GET `path` from the server inside the container: (HTTP status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let url = match self.spec.socket {
            Some(Listen::Unix) => format!("http://localhost{path}"),
            _ => format!("{SERVER_URL}{path}"),
        };
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        if self.spec.socket == Some(Listen::Unix) {
            argv.extend(["--unix-socket", UNIX_SOCKET]);
        }
        argv.push(&url);
        let out = self.c.exec_with_timeout(&argv, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let code = code.trim().parse().unwrap_or(0);
        assert!(
            out.status.success(),
            "curl {path} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.c.diagnose(UNIT)
        );
        (code, body.to_owned())
    }

    /// The launcher's own journal records of the unit.
    pub fn launcher_records(&self) -> Vec<JsonRecord> {
        self.c
            .journal_json(UNIT)
            .into_iter()
            .filter(|r| r.is("SYSLOG_IDENTIFIER", IDENT))
            .collect()
    }

    /// `/proc/PID/status` of a process inside, as a map.
    pub fn proc_status(&self, pid: u32) -> HashMap<String, String> {
        self.c
            .exec_ok(&["cat", &format!("/proc/{pid}/status")])
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// Runs `argv` inside as the service user (`setpriv`, no capabilities); returns the
    /// output.
    pub fn as_service_user(&self, argv: &[&str]) -> std::process::Output {
        let mut full = vec![
            "setpriv",
            "--reuid",
            USER,
            "--regid",
            USER,
            "--init-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ];
        full.extend_from_slice(argv);
        self.c.exec(&full)
    }

    /// Waits until `pred` holds for the unit's properties; returns them.
    pub fn wait_for_state(
        &self,
        props: &[&str],
        timeout: Duration,
        pred: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.show(props);
            if pred(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "unit state did not match within {timeout:?}: {p:?}\n{}",
                self.c.diagnose(UNIT)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Bitpoll {
    /// `systemctl start --no-block bitpoll`: returns once the job is queued.
    pub fn start_no_block(&self) {
        self.c.exec_ok(&["systemctl", "start", "--no-block", UNIT]);
    }

    /// Stops the unit and forgets its failures, so that `Restart=on-failure` does not keep
    /// restarting it while the test looks around (or after it).
    pub fn stop_and_reset(&self) {
        self.c.exec_ok(&["systemctl", "stop", UNIT]);
        let _ = self.c.exec(&["systemctl", "reset-failed", UNIT]);
    }

    /// The service user's uid and gid inside the container.
    pub fn service_ids(&self) -> (u32, u32) {
        let id = |flag: &str| -> u32 {
            self.c
                .exec_ok(&["id", flag, USER])
                .trim()
                .parse()
                .expect("id prints a number")
        };
        (id("-u"), id("-g"))
    }

    /// Runs `argv` in the mount namespace of process `pid` (the running service's view of
    /// the file system), as root or, with `as_user`, as the service user and group.
    pub fn in_service_ns(&self, pid: u32, as_user: bool, argv: &[&str]) -> std::process::Output {
        let pid = pid.to_string();
        let (uid, gid) = self.service_ids();
        let (uid, gid) = (uid.to_string(), gid.to_string());
        let mut full = vec!["nsenter", "-t", &pid, "-m"];
        if as_user {
            full.extend(["-S", &uid, "-G", &gid]);
        }
        full.push("--");
        full.extend_from_slice(argv);
        self.c.exec(&full)
    }

    /// `stat -c FORMAT PATH` inside the container.
    pub fn stat(&self, format: &str, path: &str) -> String {
        self.c
            .exec_ok(&["stat", "-c", format, "--", path])
            .trim()
            .to_owned()
    }

    /// sha256 (hex) of a file inside the container.
    pub fn sha256(&self, path: &str) -> String {
        let out = self.c.exec_ok(&["sha256sum", "--", path]);
        out.split_whitespace()
            .next()
            .expect("sha256sum prints a digest")
            .to_owned()
    }

    /// True if `path` exists inside the container (without following a final symlink).
    pub fn exists(&self, path: &str) -> bool {
        self.c
            .exec(&["sh", "-c", r#"test -e "$1" || test -L "$1""#, "sh", path])
            .status
            .success()
    }

    /// Polls the unit's journal until `pred` holds, while the unit is starting or running;
    /// panics with its status and journal (as text) when the unit failed meanwhile or on
    /// timeout.
    pub fn wait_journal(
        &self,
        timeout: Duration,
        pred: impl Fn(&[JsonRecord]) -> bool,
    ) -> Vec<JsonRecord> {
        self.poll_journal(timeout, true, pred)
    }

    /// Like [`Bitpoll::wait_journal`], for a unit that failed on purpose (journald may take
    /// the last records a moment after the process exited).
    pub fn journal_of_failure(
        &self,
        timeout: Duration,
        pred: impl Fn(&[JsonRecord]) -> bool,
    ) -> Vec<JsonRecord> {
        self.poll_journal(timeout, false, pred)
    }

    fn poll_journal(
        &self,
        timeout: Duration,
        running: bool,
        pred: impl Fn(&[JsonRecord]) -> bool,
    ) -> Vec<JsonRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let recs = self.c.journal_json(UNIT);
            if pred(&recs) {
                return recs;
            }
            if running {
                let p = self.show(&["ActiveState", "SubState", "Result"]);
                assert!(
                    !self.failed(&p),
                    "the unit failed ({p:?}) while the test waited for its journal:\n{}",
                    self.c.diagnose(UNIT)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the unit's journal did not show what the test waited for within {timeout:?}:\n{}",
                self.c.diagnose(UNIT)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True if properties `p` (ActiveState, SubState) say the unit failed, also while
    /// `Restart=on-failure` waits to start it again.
    pub fn failed(&self, p: &HashMap<String, String>) -> bool {
        p.get("ActiveState").is_some_and(|s| s == "failed")
            || p.get("SubState").is_some_and(|s| s == "auto-restart")
    }

    /// The unit's current InvocationID (changes with every start).
    pub fn invocation_id(&self) -> String {
        let id = self.show(&["InvocationID"])["InvocationID"].clone();
        assert!(!id.is_empty(), "no InvocationID");
        id
    }

    /// The launcher's records of one invocation of the unit.
    pub fn launcher_records_of(&self, invocation: &str) -> Vec<JsonRecord> {
        self.launcher_records()
            .into_iter()
            .filter(|r| r.is("_SYSTEMD_INVOCATION_ID", invocation))
            .collect()
    }

    /// Entries of the data directory not owned by the service user and group.
    pub fn foreign_owned_in_data_dir(&self) -> Vec<String> {
        let out = self.c.exec_ok(&[
            "find",
            DATA_DIR,
            "(",
            "!",
            "-user",
            USER,
            "-o",
            "!",
            "-group",
            USER,
            ")",
            "-printf",
            "%p %u:%g %m\n",
        ]);
        out.lines().map(str::to_owned).collect()
    }
}

/// The MESSAGE of every record, one a line, for failure messages.
pub fn messages(recs: &[JsonRecord]) -> String {
    recs.iter()
        .map(|r| {
            format!(
                "[{}] {}",
                r.get("SYSLOG_IDENTIFIER").unwrap_or("?"),
                r.get("MESSAGE").unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of `out`'s stdout and stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
