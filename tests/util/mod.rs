//! Helpers for the end-to-end tests (e2e, check, manage, postgres, real_bitpoll, ...:
//! [`cli`] runs the one-shot commands `check` and `manage`, [`postgres`] starts throw-away
//! servers, [`upstream`] installs the real Bitpoll, [`http`] drives its forms), and what
//! every test needs from the machine: [`root_only!`] and [`skip`].
//!
//! [`TestEnv`] gives each test a fresh directory under /tmp with a copy of the demo app (or,
//! with [`TestEnv::with_app`], an installed app used in place), a
//! service user name nobody else uses, a free port, a config builder, and a way to run the
//! launcher for real (as root, with a cleared environment and a NOTIFY_SOCKET the test
//! listens on). Dropping it stops every process the test started and removes the user, the
//! group and the directory, also when an assertion failed.
//!
//! Tests are serialized by the root slot ([`root_only!`]) and a lock taken in
//! [`TestEnv::new`] (a Mutex for this binary's threads, and an flock in /run/lock for every
//! other run on the machine): the launcher creates users
//! with useradd, concurrent useradd calls fail on the /etc/passwd lock, and system uids are
//! handed out again as soon as a test's user is removed.

pub mod cli;
pub mod http;
pub mod postgres;
pub mod tmux;
pub mod upstream;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use nix::unistd::Pid;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The demo venv made by tests/setup-venv.sh.
pub const VENV: &str = "/opt/bitpoll-launcher-demo/venv";
pub const PYTHON: &str = "/opt/bitpoll-launcher-demo/venv/bin/python";
pub const GUNICORN: &str = "/opt/bitpoll-launcher-demo/venv/bin/gunicorn";
/// The launcher under test.
pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
/// PATH given to the launcher (useradd lives in /usr/sbin).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A capability set line of /proc/PID/status with nothing in it.
pub const NO_CAPS: &str = "0000000000000000";
/// Prefix for a command that must see /etc read-only, as under ProtectSystem=strict: a
/// private mount namespace with /etc bind-mounted read-only.
pub const READ_ONLY_ETC: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount --bind /etc /etc && mount -o remount,bind,ro /etc && exec \"$0\" \"$@\"",
];

static LOCK: Mutex<()> = Mutex::new(());
static VENV_READY: Once = Once::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The one slot of the tests that act on the machine as root: held for a whole test, so
/// they run one at a time whatever `--test-threads` says.
static ROOT_SLOT: Mutex<()> = Mutex::new(());

/// Skip the running test: one line on stderr, `SKIP module::test: why`. Under `CI=true`,
/// where nothing may skip, the test fails instead.
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run here: {why}; CI=true forbids skipping it");
    }
    // Straight to the process's stderr, past libtest's capture of eprintln!, so that the
    // line shows in a plain `cargo test`.
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// As root: the root slot, held until dropped. Otherwise the test is skipped ([`skip`]).
pub fn root() -> Option<MutexGuard<'static, ()>> {
    if !nix::unistd::geteuid().is_root() {
        skip(
            "needs root (it creates users, boots containers or starts servers); run `sudo bash scripts/test.sh`",
        );
        return None;
    }
    Some(ROOT_SLOT.lock().unwrap_or_else(|e| e.into_inner()))
}

/// First line of every test that acts on the machine as root: the test holds the root
/// slot until it ends, or returns at once as skipped ([`root`]).
macro_rules! root_only {
    () => {
        let Some(_root_slot) = $crate::util::root() else {
            return;
        };
    };
}
pub(crate) use root_only;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests must run as root (they create users and drop privileges): start the test with util::root_only!()"
    );
}

fn ensure_venv() {
    VENV_READY.call_once(|| {
        if Path::new(PYTHON).is_file() && Path::new(GUNICORN).is_file() {
            return;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/setup-venv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success() && Path::new(PYTHON).is_file(),
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{ file = "PATH" }`
pub fn file_secret(path: &Path) -> String {
    format!("{{ file = {} }}", toml_str(&path.display().to_string()))
}

/// The launcher's TOML config as sections of raw `key = value` pairs, rendered in order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Config {
    /// Set `key` in `[section]` to the raw TOML `value` (replacing an earlier value).
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> &mut Config {
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let keys = &mut self.sections[idx].1;
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.to_string(),
            None => keys.push((key.to_string(), value.to_string())),
        }
        self
    }

    /// Set `key` in `[section]` to the string `value`.
    pub fn set_str(&mut self, section: &str, key: &str, value: &str) -> &mut Config {
        self.set(section, key, &toml_str(value))
    }

    pub fn remove(&mut self, section: &str, key: &str) -> &mut Config {
        if let Some((_, keys)) = self.sections.iter_mut().find(|(s, _)| s == section) {
            keys.retain(|(k, _)| k != key);
        }
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (section, keys) in &self.sections {
            let _ = writeln!(out, "[{section}]");
            for (k, v) in keys {
                let _ = writeln!(out, "{k} = {v}");
            }
            out.push('\n');
        }
        out
    }
}

/// Where the test listens for sd_notify messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// A socket file in the test directory.
    Path,
    /// An abstract socket, passed as NOTIFY_SOCKET=@name.
    Abstract,
    /// No NOTIFY_SOCKET at all.
    None,
}

/// How to start the launcher.
#[derive(Debug, Clone)]
pub struct Launch {
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    notify: NotifyKind,
    config: Option<PathBuf>,
}

impl Default for Launch {
    fn default() -> Launch {
        Launch {
            env: Vec::new(),
            wrapper: Vec::new(),
            notify: NotifyKind::Path,
            config: None,
        }
    }
}

impl Launch {
    /// An extra variable in the launcher's environment.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Run the launcher through `argv` (e.g. setpriv ... --): argv, then the launcher's
    /// own argv. The wrapper must exec, so the launcher keeps the spawned PID.
    pub fn wrap<S: AsRef<str>>(mut self, argv: &[S]) -> Launch {
        self.wrapper = argv.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    pub fn notify(mut self, kind: NotifyKind) -> Launch {
        self.notify = kind;
        self
    }

    /// Pass this --config instead of writing the test's config file.
    pub fn config(mut self, path: &Path) -> Launch {
        self.config = Some(path.to_path_buf());
        self
    }
}

/// One sd_notify datagram with its sender's credentials.
#[derive(Debug, Clone)]
pub struct Notification {
    pub pid: i32,
    pub uid: u32,
    pub text: String,
}

impl Notification {
    /// The `KEY=value` lines of the message.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text.lines().filter_map(|l| l.split_once('='))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// The service account as the system sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// All groups of the user (`id -G`), sorted.
    pub groups: Vec<u32>,
}

/// One test's world. See the module documentation.
pub struct TestEnv {
    pub dir: PathBuf,
    /// The copy of tests/demo-app, or the installed app given to [`TestEnv::with_app`].
    pub app: PathBuf,
    /// The gunicorn of the app's venv (the server command's program).
    pub gunicorn: PathBuf,
    /// The configured data directory (not created by the test).
    pub data: PathBuf,
    pub user: String,
    pub port: u16,
    pub config: Config,
    /// When set, written as the config file instead of rendering [`TestEnv::config`].
    pub raw_config: Option<String>,
    /// Every notification received during the current launch.
    pub notifications: Vec<Notification>,
    child: Option<Child>,
    launches: usize,
    notify: Option<UnixDatagram>,
    stderr_path: Option<PathBuf>,
    stdout_path: Option<PathBuf>,
    started: Option<Instant>,
    /// Start time (clock ticks since boot) of the first launch: processes of the service
    /// user that started earlier are not this test's (system uids are reused).
    first_start_ticks: Option<u64>,
    /// False for an instance made by [`TestEnv::instance`]: the account is its parent's.
    owns_account: bool,
    // Last: released after Drop::drop has cleaned up (an instance holds none: its
    // parent does).
    _machine_lock: Option<nix::fcntl::Flock<fs::File>>,
    _guard: Option<MutexGuard<'static, ()>>,
}

impl TestEnv {
    /// A fresh world with a copy of the demo app; `name` only makes the temp directory
    /// recognizable.
    pub fn new(name: &str) -> TestEnv {
        TestEnv::make(name, None)
    }

    /// A fresh world running the app in `source` (used in place, not copied: an install
    /// the test does not own) with the venv `venv`.
    pub fn with_app(name: &str, source: &Path, venv: &Path) -> TestEnv {
        TestEnv::make(name, Some((source, venv)))
    }

    fn make(name: &str, installed: Option<(&Path, &Path)>) -> TestEnv {
        require_root();
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let machine_lock = lock_machine();
        if installed.is_none() {
            ensure_venv();
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let user = format!("blt{pid}x{n}");
        assert!(user.len() <= 31);
        assert!(
            nix::unistd::User::from_name(&user).ok().flatten().is_none()
                && nix::unistd::Group::from_name(&user)
                    .ok()
                    .flatten()
                    .is_none(),
            "user or group {user} already exists; a test of an earlier run left it behind: remove it with userdel/groupdel"
        );
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        let dir = PathBuf::from(format!("/tmp/blt-e2e-{pid}-{n}-{short}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove a stale test dir");
        }
        fs::create_dir(&dir).expect("create the test dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod the test dir");
        // The source belongs to root and is read-only for the service user, as in a real
        // install: the launcher compiles the catalogs into the data directory.
        let (app, python, gunicorn) = match installed {
            Some((source, venv)) => (
                source.to_path_buf(),
                venv.join("bin/python"),
                venv.join("bin/gunicorn"),
            ),
            None => {
                let app = dir.join("app");
                let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo-app");
                copy_app(&demo, &app).expect("copy the demo app");
                (app, PathBuf::from(PYTHON), PathBuf::from(GUNICORN))
            }
        };
        let port = free_port();
        let data = dir.join("data");
        let mut config = Config::default();
        config
            .set_str("service", "user", &user)
            .set_str("service", "data_dir", &data.display().to_string())
            .set_str("app", "python", &python.display().to_string())
            .set_str("app", "source_dir", &app.display().to_string())
            .set(
                "secrets",
                "BITPOLL_SECRET_KEY",
                r#"{ generate = "django-secret-key" }"#,
            )
            .set(
                "secrets",
                "BITPOLL_FIELD_ENCRYPTION_KEY",
                r#"{ generate = "fernet-key" }"#,
            )
            .set_str("environment", "BITPOLL_ALLOWED_HOSTS", "127.0.0.1")
            .set("server", "command", &server_command(&gunicorn, port));
        TestEnv {
            dir,
            app,
            gunicorn,
            data,
            user,
            port,
            config,
            raw_config: None,
            notifications: Vec::new(),
            child: None,
            launches: 0,
            notify: None,
            stderr_path: None,
            stdout_path: None,
            started: None,
            first_start_ticks: None,
            owns_account: true,
            _machine_lock: Some(machine_lock),
            _guard: Some(guard),
        }
    }

    /// Another instance of this deployment, as on another machine behind the same load
    /// balancer: a directory, copy of the demo app (an installed app is shared), data directory, port and launches of its
    /// own; the same service user and otherwise the same config (as it is now). Dropping
    /// it stops its launches and removes its directory; the account stays its parent's,
    /// so drop it before the parent (declare it after).
    pub fn instance(&self, name: &str) -> TestEnv {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        let dir = PathBuf::from(format!("/tmp/blt-e2e-{}-{n}-{short}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove a stale test dir");
        }
        fs::create_dir(&dir).expect("create the instance dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod the dir");
        // An installed app (outside the parent's directory) is shared as it is.
        let app = if self.app.starts_with(&self.dir) {
            let app = dir.join("app");
            let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo-app");
            copy_app(&demo, &app).expect("copy the demo app");
            for d in ["locale", "locale/de_DE", "locale/de_DE/LC_MESSAGES"] {
                fs::set_permissions(app.join(d), fs::Permissions::from_mode(0o777))
                    .expect("chmod the locale dir");
            }
            app
        } else {
            self.app.clone()
        };
        let port = free_port();
        let data = dir.join("data");
        let mut config = self.config.clone();
        config
            .set_str("service", "data_dir", &data.display().to_string())
            .set_str("app", "source_dir", &app.display().to_string())
            .set("server", "command", &server_command(&self.gunicorn, port));
        TestEnv {
            dir,
            app,
            gunicorn: self.gunicorn.clone(),
            data,
            user: self.user.clone(),
            port,
            config,
            raw_config: None,
            notifications: Vec::new(),
            child: None,
            launches: 0,
            notify: None,
            stderr_path: None,
            stdout_path: None,
            started: None,
            first_start_ticks: None,
            owns_account: false,
            _machine_lock: None,
            _guard: None,
        }
    }

    /// Whether the current launch still runs (the launcher, or the server it became).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Every STATUS= text received during the current launch, in order.
    pub fn statuses(&self) -> Vec<String> {
        self.notifications
            .iter()
            .filter_map(|n| n.get("STATUS").map(str::to_string))
            .collect()
    }

    /// Wait until a STATUS= text of the current launch contains `needle`; return it.
    /// Fails the test when the launcher exits or `timeout` passes first.
    pub fn wait_status(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.statuses().into_iter().find(|s| s.contains(needle)) {
                return s;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "the launcher exited ({status}) before STATUS {needle:?}; statuses: {:?}\n{}",
                    self.statuses(),
                    self.log_context()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no STATUS {needle:?} within {timeout:?}; statuses: {:?}\n{}",
                    self.statuses(),
                    self.log_context()
                );
            }
            self.receive_notifications(Duration::from_millis(50));
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The group, which defaults to the user's name.
    pub fn group(&self) -> &str {
        &self.user
    }

    pub fn write_config(&self) {
        let text = self
            .raw_config
            .clone()
            .unwrap_or_else(|| self.config.render());
        fs::write(self.config_path(), text).expect("write the config");
        fs::set_permissions(self.config_path(), fs::Permissions::from_mode(0o644))
            .expect("chmod the config");
    }

    /// Start the launcher with the defaults (path notify socket, no extra env).
    pub fn launch(&mut self) -> u32 {
        self.launch_with(Launch::default())
    }

    /// Start the launcher: `run --config <dir>/config.toml`, environment cleared except
    /// PATH, LANG, NOTIFY_SOCKET and `opts.env`, in its own process group, stdout and
    /// stderr to files of this launch. Returns its PID.
    pub fn launch_with(&mut self, opts: Launch) -> u32 {
        assert!(
            self.child.is_none(),
            "the previous launch is still running; stop() or wait_exit() it first"
        );
        let config = match &opts.config {
            Some(path) => path.clone(),
            None => {
                self.write_config();
                self.config_path()
            }
        };
        self.launches += 1;
        let n = self.launches;
        self.notifications.clear();
        let notify_addr = self.bind_notify(opts.notify, n);
        let stderr_path = self.dir.join(format!("launch-{n}.stderr"));
        let stdout_path = self.dir.join(format!("launch-{n}.stdout"));
        let stderr = fs::File::create(&stderr_path).expect("create the stderr file");
        let stdout = fs::File::create(&stdout_path).expect("create the stdout file");
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(LAUNCHER);
                c
            }
            None => Command::new(LAUNCHER),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8");
        if let Some(addr) = notify_addr {
            cmd.env("NOTIFY_SOCKET", addr);
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = cmd.spawn().expect("spawn the launcher");
        let pid = child.id();
        self.child = Some(child);
        self.stderr_path = Some(stderr_path);
        self.stdout_path = Some(stdout_path);
        self.started = Some(Instant::now());
        if self.first_start_ticks.is_none() {
            self.first_start_ticks = proc_start_ticks(pid as i32);
        }
        pid
    }

    fn bind_notify(&mut self, kind: NotifyKind, n: usize) -> Option<String> {
        self.notify = None;
        let (sock, addr) = match kind {
            NotifyKind::None => return None,
            NotifyKind::Path => {
                let path = self.dir.join("notify.sock");
                let _ = fs::remove_file(&path);
                let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
                // The server sends READY=1 as the service user.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                    .expect("chmod the notify socket");
                (sock, path.display().to_string())
            }
            NotifyKind::Abstract => {
                let name = format!("blt-e2e-{}-{}-{n}", std::process::id(), self.user);
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .expect("abstract socket address");
                let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
                (sock, format!("@{name}"))
            }
        };
        setsockopt(&sock, sockopt::PassCred, &true).expect("SO_PASSCRED on the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        self.notify = Some(sock);
        Some(addr)
    }

    /// The PID of the current launch.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("nothing launched").id()
    }

    /// Receive pending notifications (waiting at most `wait` for the first one).
    pub fn receive_notifications(&mut self, wait: Duration) {
        let Some(sock) = &self.notify else {
            std::thread::sleep(wait);
            return;
        };
        let deadline = Instant::now() + wait;
        loop {
            let mut buf = vec![0u8; 4096];
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let got = match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(msg) => {
                    let mut cred = (0, u32::MAX);
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmCredentials(uc) = c {
                                cred = (uc.pid(), uc.uid());
                            }
                        }
                    }
                    Some((msg.bytes, cred))
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => None,
                Err(e) => panic!("receiving on the notify socket: {e}"),
            };
            match got {
                Some((len, (pid, uid))) => self.notifications.push(Notification {
                    pid,
                    uid,
                    text: String::from_utf8_lossy(&buf[..len]).into_owned(),
                }),
                None if Instant::now() >= deadline => return,
                None => {}
            }
        }
    }

    /// Wait until a notification carries READY=1; return it. Fails the test when the
    /// launcher exits or `timeout` passes first.
    pub fn wait_ready(&mut self, timeout: Duration) -> Notification {
        assert!(self.notify.is_some(), "no notify socket for this launch");
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            while seen < self.notifications.len() {
                let n = &self.notifications[seen];
                if n.text.lines().any(|l| l == "READY=1") {
                    return n.clone();
                }
                seen += 1;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "the launcher exited ({status}) before READY=1\n{}",
                    self.log_context()
                );
            }
            if Instant::now() >= deadline {
                panic!("no READY=1 within {timeout:?}\n{}", self.log_context());
            }
            self.receive_notifications(Duration::from_millis(200));
        }
    }

    /// Wait until every one of `envs` reported READY=1, reading all their notify sockets
    /// meanwhile (a socket nobody reads fills up, and its launcher's reports are dropped).
    pub fn wait_all_ready(envs: &mut [&mut TestEnv], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for e in envs.iter_mut() {
                e.receive_notifications(Duration::from_millis(20));
                let ready = e
                    .notifications
                    .iter()
                    .any(|n| n.text.lines().any(|l| l == "READY=1"));
                if !ready && (e.try_wait().is_some() || Instant::now() >= deadline) {
                    // Fails with the launcher's log.
                    e.wait_ready(Duration::ZERO);
                }
                all &= ready;
            }
            if all {
                return;
            }
        }
    }

    /// The launcher's exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Wait until the launch either exits (Some(exit code)) or reports READY=1 (None).
    pub fn wait_exit_or_ready(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .notifications
                .iter()
                .any(|n| n.text.lines().any(|l| l == "READY=1"))
            {
                return None;
            }
            if self.try_wait().is_some() {
                return Some(self.wait_exit(Duration::ZERO));
            }
            if Instant::now() >= deadline {
                let ctx = self.log_context();
                self.kill_launch();
                panic!("neither READY=1 nor an exit within {timeout:?}\n{ctx}");
            }
            self.receive_notifications(Duration::from_millis(100));
        }
    }

    /// Wait for the launcher to exit; its exit code (128+N when killed by signal N).
    /// Fails the test (after killing it) when it runs longer than `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.receive_notifications(Duration::ZERO);
                self.child = None;
                return exit_code(status);
            }
            if Instant::now() >= deadline {
                let ctx = self.log_context();
                self.kill_launch();
                panic!("the launcher still runs after {timeout:?}\n{ctx}");
            }
            self.receive_notifications(Duration::from_millis(50));
        }
    }

    /// Time since the current launch started.
    pub fn elapsed(&self) -> Duration {
        self.started.expect("nothing launched").elapsed()
    }

    /// Send `sig` to the launcher (not its group).
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal the launcher");
    }

    /// SIGTERM the launched process (the gunicorn master after exec) and wait for it and
    /// its process group to go away. Returns its exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal(Signal::SIGTERM);
        let pgid = self.pid() as i32;
        let code = self.wait_exit(Duration::from_secs(30));
        kill_group(pgid);
        code
    }

    /// Kill whatever of the current launch still runs.
    fn kill_launch(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        if child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = child.wait();
        }
        kill_group(pid);
    }

    /// stderr of the current (or last) launch.
    pub fn stderr(&self) -> String {
        self.stderr_path
            .as_ref()
            .map(|p| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    /// stdout of the current (or last) launch.
    pub fn stdout(&self) -> String {
        self.stdout_path
            .as_ref()
            .map(|p| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    /// stderr and stdout, raw bytes (for searching secrets that may not be UTF-8).
    pub fn output_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in [&self.stderr_path, &self.stdout_path].into_iter().flatten() {
            out.extend(fs::read(p).unwrap_or_default());
        }
        out
    }

    /// The launch's output, for failure messages.
    pub fn log_context(&self) -> String {
        let stdout = self.stdout();
        let mut s = format!("--- launcher stderr ---\n{}", self.stderr());
        if !stdout.trim().is_empty() {
            s.push_str(&format!("--- launcher stdout ---\n{stdout}"));
        }
        s
    }

    /// Wait until the launch's stderr contains `needle`. Fails the test when the launcher
    /// exits or `timeout` passes first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return;
            }
            if let Some(status) = self.try_wait() {
                if self.stderr().contains(needle) {
                    return;
                }
                panic!(
                    "the launcher exited ({status}) before logging {needle:?}\n{}",
                    self.log_context()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{needle:?} not logged within {timeout:?}\n{}",
                    self.log_context()
                );
            }
            self.receive_notifications(Duration::from_millis(50));
        }
    }

    /// Assert the launcher exited with `code` within `timeout` and that its stderr
    /// contains every needle. Returns stderr.
    pub fn expect_failure(&mut self, code: i32, needles: &[&str], timeout: Duration) -> String {
        let got = self.wait_exit(timeout);
        let stderr = self.stderr();
        assert_eq!(got, code, "exit code\n{}", self.log_context());
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "stderr lacks {needle:?}\n{}",
                self.log_context()
            );
        }
        stderr
    }

    /// GET `path` from the server (HTTP/1.0, Host: 127.0.0.1).
    pub fn http_get(&self, path: &str) -> Response {
        http_get(self.port, path)
    }

    /// GET /whoami and parse it.
    pub fn whoami(&self) -> Whoami {
        let r = self.http_get("/whoami");
        assert_eq!(r.status, 200, "/whoami: {}", r.body);
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("/whoami is not the expected JSON ({e}): {}", r.body))
    }

    /// The service account's ids, if it exists.
    pub fn ids(&self) -> Option<Ids> {
        let u = nix::unistd::User::from_name(&self.user).ok().flatten()?;
        let out = Command::new("id")
            .arg("-G")
            .arg(&self.user)
            .output()
            .expect("id -G");
        let mut groups: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|g| g.parse().expect("numeric gid"))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Some(Ids {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
        })
    }

    /// Processes running as the service user that this test started (see
    /// `first_start_ticks`).
    pub fn processes_of_user(&self) -> Vec<i32> {
        let (Some(ids), Some(since)) = (self.ids(), self.first_start_ticks) else {
            return Vec::new();
        };
        processes_of_uid(ids.uid)
            .into_iter()
            .filter(|p| proc_start_ticks(*p).is_some_and(|t| t >= since))
            .collect()
    }

    pub fn user_exists(&self) -> bool {
        nix::unistd::User::from_name(&self.user)
            .ok()
            .flatten()
            .is_some()
    }

    pub fn group_exists(&self) -> bool {
        nix::unistd::Group::from_name(self.group())
            .ok()
            .flatten()
            .is_some()
    }

    /// Assert the failed launch created nothing: no user, no group, no data directory.
    pub fn assert_nothing_created(&self) {
        assert!(
            !self.user_exists(),
            "user {} was created\n{}",
            self.user,
            self.log_context()
        );
        assert!(
            !self.group_exists(),
            "group {} was created\n{}",
            self.group(),
            self.log_context()
        );
        assert!(
            fs::symlink_metadata(&self.data).is_err(),
            "{} was created\n{}",
            self.data.display(),
            self.log_context()
        );
    }

    /// `<data>/state/<step>.stamp`
    pub fn stamp(&self, step: &str) -> PathBuf {
        self.data.join("state").join(format!("{step}.stamp"))
    }

    /// Remove the user and group this test made (the launcher made them; nobody else
    /// uses these names).
    fn remove_account(&self) {
        if self.user_exists() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // userdel refuses while a process runs with the user's uid ("currently
                // used by process N"): ours are killed and retried; after the deadline
                // (a process that is not ours, e.g. a zombie of an earlier user with the
                // same system uid) the user, which only this test uses, goes with --force.
                let last = Instant::now() >= deadline;
                let mut cmd = Command::new("userdel");
                if last {
                    cmd.arg("--force");
                }
                match cmd.arg(&self.user).output() {
                    Ok(o) if o.status.success() => break,
                    Ok(o) if last => {
                        eprintln!(
                            "cleanup: userdel --force {} failed: {}",
                            self.user,
                            String::from_utf8_lossy(&o.stderr)
                        );
                        break;
                    }
                    Ok(_) => {
                        for pid in self.processes_of_user() {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        eprintln!("cleanup: cannot run userdel: {e}");
                        break;
                    }
                }
            }
        }
        if self.group_exists() {
            match Command::new("groupdel").arg(self.group()).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "cleanup: groupdel {} failed: {}",
                    self.group(),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("cleanup: cannot run groupdel: {e}"),
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_launch();
        if !self.owns_account {
            self.notify = None;
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("cleanup: cannot remove {}: {e}", self.dir.display());
            }
            return;
        }
        // A safety net: nothing may keep running as the test's user (a later test may get
        // the same system uid).
        if self.user_exists() {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut warned = false;
            loop {
                let left = self.processes_of_user();
                if left.is_empty() {
                    break;
                }
                if !warned {
                    eprintln!(
                        "cleanup: processes of {} still running, killing them:\n{}",
                        self.user,
                        describe_processes(&left)
                    );
                    warned = true;
                }
                if Instant::now() >= deadline {
                    eprintln!("cleanup: processes of {} do not go away", self.user);
                    break;
                }
                for pid in left {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.notify = None;
        self.remove_account();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Serialize with every other run of these tests on this machine (another checkout's, a
/// developer's or a CI job's `cargo test`): they would race on useradd and hand out the
/// same system uids, which are machine-wide. The lock file lives in /run/lock (a tmpfs
/// cleared at boot), holds nothing, and is shared by every checkout.
pub fn lock_machine() -> nix::fcntl::Flock<fs::File> {
    let path = "/run/lock/bitpoll-launcher-tests.lock";
    let _ = fs::create_dir_all("/run/lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {path}: {e}"))
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// SIGKILL what is left of process group `pgid` and wait (up to 5 s) until it is gone.
pub fn kill_group(pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_in_group(pgid);
        if left.is_empty() {
            return;
        }
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        if Instant::now() >= deadline {
            eprintln!("cleanup: process group {pgid} still has {left:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copy the demo app without build output (bytecode, compiled catalogs), a+rX.
fn copy_app(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        if name_s == "__pycache__" || name_s.ends_with(".pyc") || name_s.ends_with(".mo") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_app(&src, &dst)?;
        } else if ft.is_file() {
            fs::copy(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

/// `gunicorn` on 127.0.0.1:`port` with one worker, as the server.command TOML array.
fn server_command(gunicorn: &Path, port: u16) -> String {
    format!(
        "[{}, \"--bind\", \"127.0.0.1:{port}\", \"--workers\", \"1\", \"--no-control-socket\", \"bitpoll.wsgi:application\"]",
        toml_str(&gunicorn.display().to_string())
    )
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// GET `path` from 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str) -> Response {
    http_get_host(port, path, "127.0.0.1")
}

/// GET `path` from 127.0.0.1:`port` with the given Host header.
pub fn http_get_host(port: u16, path: &str, host: &str) -> Response {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the response to {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in the response to {path}: {head}"));
    Response {
        status,
        body: body.to_string(),
    }
}

/// /proc/PID/status as key -> value (whitespace-trimmed).
pub fn proc_status(pid: u32) -> BTreeMap<String, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The whitespace-separated fields of a /proc/PID/status line.
pub fn status_fields(status: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    status
        .get(key)
        .unwrap_or_else(|| panic!("/proc status has no {key}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// /proc/PID/cmdline, NUL separators kept.
pub fn proc_cmdline(pid: u32) -> Vec<u8> {
    fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// The names of /proc/PID/environ (values are never returned: they hold secrets).
pub fn proc_environ_names(pid: u32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/environ: {e}"));
    raw.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let name = e.split(|b| *b == b'=').next().unwrap_or_default();
            String::from_utf8_lossy(name).into_owned()
        })
        .collect()
}

/// (state, ppid, pgrp, uid) of a process, or None when it is gone.
/// A process's state letter, parent and process group, from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state).
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Processes (including zombies) in process group `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|(_, _, g)| g == pgid))
        .collect()
}

/// Children of `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|(s, pp, _)| pp == ppid as i32 && s != 'Z'))
        .map(|p| p as u32)
        .collect()
}

/// Processes whose real uid is `uid`.
pub fn processes_of_uid(uid: u32) -> Vec<i32> {
    let uid = uid.to_string();
    all_pids()
        .into_iter()
        .filter(|p| {
            // The Uid line (real, effective, saved, fs): /proc/PID itself is owned by root
            // while a process that changed its ids is not dumpable.
            fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .is_some_and(|ids| ids.split_whitespace().any(|id| id == uid))
            })
        })
        .collect()
}

/// The inode of the socket listening on 127.0.0.1:`port`, from /proc/net/tcp.
pub fn listening_socket_inode(port: u16) -> Option<u64> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[3] == "0A")
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Whether process `pid` has the socket with inode `inode` open.
pub fn holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
        })
        .unwrap_or(false)
}

/// Whether `needle` (not empty) occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh Fernet key (32 random bytes, url-safe base64).
pub fn fernet_key() -> String {
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("read /dev/urandom");
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in key.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() {
                ABC[((n >> shift) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Write `contents` to `path` with `mode`, owned by root.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create the parent dir");
    }
    let _ = fs::remove_file(path);
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Owner, group and permission bits of `path` (not following a final link).
pub fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// `getent passwd NAME` split at ':'.
pub fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = Command::new("getent").arg(db).arg(name).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .split(':')
            .map(str::to_string)
            .collect(),
    )
}

/// The JSON body of the demo app's /whoami (tests/demo-app/bitpoll/poll/views.py).
#[derive(Debug, Clone, Deserialize)]
pub struct Whoami {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub pid: u32,
    pub ppid: u32,
    /// The variables named in DEMO_REPORT_ENV: sha256 hex of the value, None when unset.
    #[serde(rename = "env_sha256")]
    reported: BTreeMap<String, Option<String>>,
}

impl Whoami {
    /// /whoami's report of variable `name`: Some(sha256 hex) or None when unset. Panics
    /// when `name` is not reported at all (not in DEMO_REPORT_ENV).
    pub fn env_sha256(&self, name: &str) -> Option<String> {
        self.reported
            .get(name)
            .unwrap_or_else(|| panic!("/whoami does not report {name:?}: {self:?}"))
            .clone()
    }
}

/// "pid state ppid pgrp: cmdline" of each process, for failure messages.
pub fn describe_processes(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| {
            let (state, ppid, pgrp) = proc_stat(*p).unwrap_or(('?', 0, 0));
            let cmd = String::from_utf8_lossy(&proc_cmdline(*p as u32)).replace('\0', " ");
            format!(
                "{p} {state} ppid={ppid} pgrp={pgrp}: {}",
                cmd.chars().take(200).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Add an empty migration `name` after 0002_demo_delay to the test's copy of the demo app
/// (an upgrade that brings a migration). Returns the name.
pub fn add_migration<'a>(env: &TestEnv, name: &'a str) -> &'a str {
    write_file(
        &env.app
            .join("bitpoll/poll/migrations")
            .join(format!("{name}.py")),
        b"from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"poll\", \"0002_demo_delay\")]\n    operations = []\n",
        0o644,
    );
    name
}
