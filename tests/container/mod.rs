//! A real systemd for the end-to-end tests: boots systemd as PID 1 in a throw-away
//! `systemd-nspawn` container and lets a test install units, run commands and read the
//! journal inside it.
//!
//! The container's root is an overlay whose lower layer is the host's `/` (only the root
//! filesystem itself, not its submounts) and whose upper layer is a private tmpfs, so every
//! write inside is thrown away at teardown. Anything on the host's root filesystem before the
//! boot is visible inside (`/usr/bin/python3`, a venv under `/opt`, the cargo target dir).
//! [`ContainerBuilder::root_dir`] takes another root file system as the lower layer instead
//! (a Debian trixie with systemd 257, tests/setup-trixie.sh), which stays untouched too.
//!
//! systemd inside runs in cgroup2 mode, where the host's v1 memory and pids controllers are
//! not available to it: `MemoryMax=`/`TasksMax=` are accepted and not enforced.
//! [`ContainerBuilder::legacy_cgroups`] boots it in legacy (v1) mode in cgroups of its own
//! in those controllers, so that they are (a test-bench mode: systemd 257 calls it
//! tainted, 258 removes it).
//!
//! Each container gets its own name (`blt-<pid>-<starttime>-<n>-<tag>`), work dir under
//! [`WORK_ROOT`], and cgroup dirs; dropping the [`Container`] tears all of it down, also while
//! a test panics. What a SIGKILLed test run left behind is removed by [`cleanup_stale`], which
//! the first boot of every test process calls; containers whose owning process still runs are
//! never touched, so several test processes may use containers at the same time.
//!
//! Needs root and `systemd-nspawn` (Debian: `apt-get install systemd-container`); see
//! [`require_root_and_nspawn`]. The host's systemd need not run.

pub mod bitpoll;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Every container, cgroup dir, work dir and mount of this harness has a name starting so.
pub const NAME_PREFIX: &str = "blt-";
/// Per-container work dirs (`WORK_ROOT/NAME/{ovl,merged,console.log}`) live here, on the host.
pub const WORK_ROOT: &str = "/run/blt-containers";
/// The launcher binary built by cargo for this test run.
pub const LAUNCHER_BIN: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
/// Where [`ContainerBuilder::with_launcher`] binds the launcher inside the container.
pub const LAUNCHER_PATH: &str = "/usr/local/bin/bitpoll-launcher";
/// Set to `1` (as CI should) to make [`require_root_and_nspawn`] fail instead of skipping.
pub const REQUIRE_ENV: &str = "BITPOLL_REQUIRE_SYSTEMD_TESTS";

const CONTAINER_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PROPAGATE_ROOT: &str = "/run/systemd/nspawn/propagate";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The v1 controllers a legacy-mode container gets cgroups of its own in (and whose
/// hierarchies are remounted writable inside), so that its systemd enforces limits.
const LEGACY_CONTROLLERS: [&str; 2] = ["memory", "pids"];
const NAME_MAX: usize = 63;

/// Containers boot one at a time within a test process (booting is CPU-bound; the host has
/// few cores), and [`cleanup_stale`] never runs while one of ours is half-built.
static BOOT_LOCK: Mutex<()> = Mutex::new(());
/// The nspawn processes of this test process, by container name. Kept here rather than in
/// [`Container`] so that a leaked container's nspawn can still be reaped by [`cleanup_stale`].
static NSPAWNS: Mutex<Vec<Nspawn>> = Mutex::new(Vec::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);
static STALE_ONCE: Once = Once::new();

struct Nspawn {
    name: String,
    child: Option<Child>,
    tearing_down: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn log(name: &str, msg: impl AsRef<str>) {
    eprintln!("[container {name}] {}", msg.as_ref());
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// As root with `systemd-nspawn`, `nsenter`, `mount` and `umount` at hand: the root slot
/// (crate::util::root). Otherwise the test is skipped (crate::util::skip), or fails if
/// [`REQUIRE_ENV`] is `1`.
pub fn require_root_and_nspawn() -> Option<std::sync::MutexGuard<'static, ()>> {
    let mut missing = Vec::new();
    for tool in ["systemd-nspawn", "nsenter", "mount", "umount"] {
        if find_in_path(tool).is_none() {
            missing.push(tool.to_owned());
        }
    }
    if !Path::new(CGROUP_ROOT).is_dir() {
        missing.push(CGROUP_ROOT.to_owned());
    }
    if missing.is_empty() {
        return crate::util::root();
    }
    let test = thread::current().name().unwrap_or("?").to_owned();
    let why = format!(
        "needs {} (apt-get install systemd-container)",
        missing.join(", ")
    );
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{test}: {why}, and {REQUIRE_ENV}=1 forbids skipping");
    }
    crate::util::skip(&why);
    None
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

// ---------------------------------------------------------------------------------------
// Builder

/// Describes a container to boot; [`ContainerBuilder::boot`] boots it.
#[derive(Debug, Clone)]
pub struct ContainerBuilder {
    tag: String,
    binds_ro: Vec<(PathBuf, String)>,
    files: Vec<(String, Vec<u8>, u32)>,
    nspawn_args: Vec<String>,
    boot_timeout: Duration,
    exec_timeout: Duration,
    upper_size: String,
    root: Option<PathBuf>,
    legacy_cgroups: bool,
}

impl ContainerBuilder {
    /// `tag` becomes part of the container name (only `[a-z0-9-]` is kept).
    pub fn new(tag: &str) -> Self {
        ContainerBuilder {
            tag: tag.to_owned(),
            binds_ro: Vec::new(),
            files: Vec::new(),
            nspawn_args: Vec::new(),
            boot_timeout: Duration::from_secs(60),
            exec_timeout: Duration::from_secs(180),
            upper_size: "1g".to_owned(),
            root: None,
            legacy_cgroups: false,
        }
    }

    /// Boots `dir` (a root file system with systemd, read-only to the container like the
    /// host's `/` otherwise) instead of the host's root.
    pub fn root_dir(mut self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_path_buf();
        assert!(
            dir.join("usr/lib/systemd/systemd").exists(),
            "root_dir: {} has no systemd",
            dir.display()
        );
        assert!(
            !dir.to_string_lossy().contains([',', ':']),
            "root_dir: ',' or ':' in the path"
        );
        self.root = Some(dir);
        self
    }

    /// Boots systemd in legacy (cgroup v1) mode, in cgroups of its own in the host's
    /// memory and pids controllers, so that `MemoryMax=` and `TasksMax=` are enforced
    /// for units started after the boot. Needs those v1 controllers on the host.
    pub fn legacy_cgroups(mut self) -> Self {
        self.legacy_cgroups = true;
        self
    }

    /// Bind-mounts the host path `host` read-only at `container` (an absolute path).
    pub fn bind_ro(mut self, host: impl AsRef<Path>, container: &str) -> Self {
        let host = host.as_ref().to_path_buf();
        assert!(host.exists(), "bind_ro: {} does not exist", host.display());
        assert!(
            host.is_absolute() && container.starts_with('/'),
            "bind_ro: paths must be absolute"
        );
        assert!(
            !host.to_string_lossy().contains(':') && !container.contains(':'),
            "bind_ro: ':' in a path is not supported"
        );
        self.binds_ro.push((host, container.to_owned()));
        self
    }

    /// Binds the launcher built for this test run at [`LAUNCHER_PATH`].
    pub fn with_launcher(self) -> Self {
        self.bind_ro(LAUNCHER_BIN, LAUNCHER_PATH)
    }

    /// Writes a file (owned by root, with `mode`) into the container's root before boot;
    /// missing parent directories are created with mode 0755.
    /// Paths under `/tmp`, `/run`, `/dev`, `/proc` and `/sys` are refused: nspawn and
    /// systemd mount over them, which would hide the file (use [`Container::write_file`]).
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        assert!(path.starts_with('/'), "file: {path} is not absolute");
        let hidden = ["/tmp", "/run", "/dev", "/proc", "/sys"]
            .iter()
            .any(|m| Path::new(path).starts_with(m));
        assert!(
            !hidden,
            "file: {path} would be hidden by a mount made at boot; use Container::write_file"
        );
        self.files
            .push((path.to_owned(), contents.as_ref().to_vec(), mode));
        self
    }

    /// Adds a raw `systemd-nspawn` argument.
    pub fn nspawn_arg(mut self, arg: &str) -> Self {
        self.nspawn_args.push(arg.to_owned());
        self
    }

    /// Boots the container and waits until its systemd is up. Panics (after tearing down
    /// whatever was set up) when the boot fails.
    pub fn boot(self) -> Container {
        let _boot = lock(&BOOT_LOCK);
        STALE_ONCE.call_once(|| {
            cleanup_stale_locked();
        });

        let name = new_name(&self.tag);
        let work = Path::new(WORK_ROOT).join(&name);
        let t0 = Instant::now();
        // From here on, a panic drops `c`, which tears down whatever exists so far.
        let mut c = Container {
            root: work.join("merged"),
            work,
            cgroups: cgroup_dirs_for(&name, self.legacy_cgroups),
            name,
            pid1: None,
            nspawn_pid: None,
            exec_timeout: self.exec_timeout,
        };
        c.prepare_root(&self);
        let t_prepared = Instant::now();
        c.start_nspawn(&self);
        c.wait_for_pid1(Duration::from_secs(20).max(self.boot_timeout / 3));
        let mut state = c.wait_until_running(self.boot_timeout);
        if self.legacy_cgroups {
            state = c.enable_legacy_controllers(self.boot_timeout);
        }
        log(
            &c.name,
            format!(
                "booted in {} (root prepared in {}, systemd up in {}): is-system-running={state}",
                secs(t0.elapsed()),
                secs(t_prepared - t0),
                secs(t_prepared.elapsed()),
            ),
        );
        if state == "degraded" {
            let failed = c.exec(&["systemctl", "--failed", "--no-legend", "--plain"]);
            log(
                &c.name,
                format!(
                    "failed units: {}",
                    String::from_utf8_lossy(&failed.stdout).trim()
                ),
            );
        }
        c
    }
}

fn new_name(tag: &str) -> String {
    let pid = std::process::id();
    let start = proc_start_time(pid).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .to_ascii_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect();
    let mut name = format!("{NAME_PREFIX}{pid}-{start}-{n}-{tag}");
    name.truncate(NAME_MAX);
    name.trim_end_matches('-').to_owned()
}

/// The owner of a container name: `(pid, starttime)` of the test process that created it.
fn name_owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(NAME_PREFIX)?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

// ---------------------------------------------------------------------------------------
// Container

/// A booted container. Dropping it powers it off and removes every trace of it.
#[derive(Debug)]
pub struct Container {
    name: String,
    work: PathBuf,
    root: PathBuf,
    cgroups: Vec<PathBuf>,
    pid1: Option<u32>,
    nspawn_pid: Option<u32>,
    exec_timeout: Duration,
}

impl Container {
    /// The machine name (also the hostname inside and the name of its cgroup dirs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID (in the host's namespace) of the container's systemd.
    pub fn pid1(&self) -> u32 {
        self.pid1.expect("container has no PID 1")
    }

    /// PID of the `systemd-nspawn` process.
    pub fn nspawn_pid(&self) -> u32 {
        self.nspawn_pid.expect("container has no nspawn process")
    }

    /// The container's console output so far (systemd's boot messages).
    pub fn console_log(&self) -> String {
        fs::read(self.work.join("console.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs `argv` inside the container (all of PID 1's namespaces, its root and cwd, and a
    /// clean environment), with the container's default exec timeout.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.exec_with(argv, None, self.exec_timeout)
    }

    /// Like [`Container::exec`], feeding `stdin` to the command.
    pub fn exec_stdin(&self, argv: &[&str], stdin: &[u8]) -> Output {
        self.exec_with(argv, Some(stdin), self.exec_timeout)
    }

    /// Like [`Container::exec`] with an explicit timeout; on timeout the command is killed
    /// and the returned status is a failure (stderr says so).
    pub fn exec_with_timeout(&self, argv: &[&str], timeout: Duration) -> Output {
        self.exec_with(argv, None, timeout)
    }

    /// Runs `argv` inside and returns its stdout; panics with stdout and stderr if it fails.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        check_ok(&self.name, argv, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn exec_with(&self, argv: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
        assert!(!argv.is_empty(), "exec: empty argv");
        let cmd = nsenter_cmd(self.pid1(), argv);
        run_with_timeout(cmd, stdin, timeout).unwrap_or_else(|e| {
            panic!(
                "[container {}] cannot run nsenter for {argv:?}: {e}",
                self.name
            )
        })
    }

    /// `systemctl ARGS...` inside.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// Writes a file inside the running container (parents created 0755, then the file
    /// created under umask 077 and chmod-ed to `mode`). Works for any path, also for the
    /// tmpfs-backed `/run` and `/tmp` that [`Container::root`] does not show.
    pub fn write_file(&self, path: &str, contents: &[u8], mode: u32) {
        let mode = format!("{mode:o}");
        let script =
            r#"mkdir -p -- "$(dirname -- "$1")" && umask 077 && cat > "$1" && chmod "$2" -- "$1""#;
        let argv = ["sh", "-c", script, "sh", path, &mode];
        let out = self.exec_stdin(&argv, contents);
        check_ok(&self.name, &argv, &out);
    }

    /// `systemctl show -p P1,P2,... UNIT` as a map (all properties if `props` is empty).
    pub fn show(&self, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let joined = props.join(",");
        let mut argv = vec!["systemctl", "show"];
        if !props.is_empty() {
            argv.extend(["-p", &joined]);
        }
        argv.extend(["--", unit]);
        self.exec_ok(&argv)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// `systemctl status UNIT` and its journal as text, for failure messages.
    pub fn diagnose(&self, unit: &str) -> String {
        let status = self.exec(&["systemctl", "status", "--no-pager", "-l", "--", unit]);
        let journal = self.exec(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-u",
            unit,
        ]);
        format!(
            "--- systemctl status {unit}:\n{}{}\n--- journalctl -u {unit}:\n{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr),
            String::from_utf8_lossy(&journal.stdout),
            String::from_utf8_lossy(&journal.stderr),
        )
    }

    /// `journalctl -u UNIT -o json` (the records of the unit's processes and those of
    /// systemd about the unit), parsed.
    pub fn journal_json(&self, unit: &str) -> Vec<JsonRecord> {
        let out = self.exec_ok(&["journalctl", "--no-pager", "-o", "json", "-u", unit]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                JsonRecord::parse(l)
                    .unwrap_or_else(|e| panic!("journalctl -o json printed a bad line ({e}): {l}"))
            })
            .collect()
    }

    /// Polls [`Container::journal_json`] until `pred` holds (journald may lag behind the
    /// unit a little); panics with the records seen last on timeout.
    pub fn journal_json_until(
        &self,
        unit: &str,
        timeout: Duration,
        pred: impl Fn(&[JsonRecord]) -> bool,
    ) -> Vec<JsonRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let recs = self.journal_json(unit);
            if pred(&recs) {
                return recs;
            }
            if Instant::now() >= deadline {
                let dump: Vec<String> = recs.iter().map(|r| format!("{r:?}")).collect();
                panic!(
                    "[container {}] journal of {unit} did not match within {}; records:\n{}",
                    self.name,
                    secs(timeout),
                    dump.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    // -- boot steps ---------------------------------------------------------------------

    fn prepare_root(&mut self, spec: &ContainerBuilder) {
        let ovl = self.work.join("ovl");
        for dir in [&ovl, &self.root] {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        // Mounts carry the container name as their source, so they can be found later.
        let tmpfs_opts = format!("mode=0755,size={}", spec.upper_size);
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &tmpfs_opts, &self.name])
                .arg(&ovl),
        );
        for dir in ["upper", "work"] {
            fs::create_dir(ovl.join(dir)).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        }
        let lower = spec.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        let ovl_opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            ovl.join("upper").display(),
            ovl.join("work").display()
        );
        run_ok(
            Command::new("mount")
                .args(["-t", "overlay", "-o", &ovl_opts, &self.name])
                .arg(&self.root),
        );

        // Its own identity, so that its journal does not clash with the host's.
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").expect("read a random uuid");
        let machine_id: String = uuid.trim().chars().filter(|c| *c != '-').collect();
        self.put_file(
            "/etc/machine-id",
            format!("{machine_id}\n").as_bytes(),
            0o444,
        );
        self.put_file(
            "/etc/hostname",
            format!("{}\n", self.name).as_bytes(),
            0o644,
        );

        // Boot none of what the root has enabled (the host's postgres, nix-daemon, timers...).
        let masks: BTreeSet<String> = enabled_units(&lower);
        for unit in &masks {
            let link = self.host_path(&format!("/etc/systemd/system/{unit}"));
            remove_if_exists(&link);
            symlink("/dev/null", &link).unwrap_or_else(|e| panic!("mask {unit}: {e}"));
        }
        for (path, contents, mode) in &spec.files {
            self.put_file(path, contents, *mode);
        }
    }

    /// The host path of `path` inside the merged root, creating missing parents (0755) and
    /// making sure no symlink leads out of the root: an absolute symlink followed on the host
    /// would point at the host's own files.
    fn host_path(&self, path: &str) -> PathBuf {
        let rel = Path::new(path.trim_start_matches('/'));
        let comps: Vec<Component> = rel.components().collect();
        assert!(
            !comps.is_empty() && comps.iter().all(|c| matches!(c, Component::Normal(_))),
            "{path}: only plain absolute paths are supported"
        );
        let root = fs::canonicalize(&self.root).expect("canonicalize the container root");
        let (file, parents) = comps.split_last().expect("non-empty");
        let mut dir = root.clone();
        for c in parents {
            let next = dir.join(c);
            match fs::symlink_metadata(&next) {
                Err(_) => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&next)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", next.display())),
                Ok(m) if m.file_type().is_symlink() => {
                    let real = fs::canonicalize(&next)
                        .unwrap_or_else(|e| panic!("{}: {e}", next.display()));
                    assert!(
                        real.starts_with(&root) && real.is_dir(),
                        "{path}: {} leads out of the container root (to {}); \
                         write it with Container::write_file after boot instead",
                        next.display(),
                        real.display()
                    );
                    dir = real;
                    continue;
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => panic!("{path}: {} is not a directory", next.display()),
            }
            dir = next;
        }
        dir.join(file)
    }

    fn put_file(&self, path: &str, contents: &[u8], mode: u32) {
        let dest = self.host_path(path);
        remove_if_exists(&dest);
        fs::write(&dest, contents).unwrap_or_else(|e| panic!("write {}: {e}", dest.display()));
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dest.display()));
    }

    fn start_nspawn(&mut self, spec: &ContainerBuilder) {
        // No systemd on the host: with --keep-unit nspawn stays in the cgroup it is started
        // in and creates payload/ and supervisor/ below it. A cgroup of its own per container
        // keeps containers apart and makes cleanup exact. The shell moves itself into them and
        // then execs nspawn (so nspawn is our direct child, and no unsafe pre_exec is needed).
        for dir in &self.cgroups {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        let procs: Vec<String> = self
            .cgroups
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"for f in $BLT_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; exec "$@""#)
            .arg("sh")
            .arg("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--link-journal=no",
                "--resolv-conf=off",
                "--timezone=off",
                "--boot",
                "--console=read-only",
                // nspawn's own seccomp filter blocks bpf(); IPAddressDeny= and DevicePolicy=
                // need it inside.
                "--system-call-filter=bpf",
            ])
            .arg(format!("--directory={}", self.root.display()))
            .arg(format!("--machine={}", self.name));
        for (host, target) in &spec.binds_ro {
            cmd.arg(format!("--bind-ro={}:{target}", host.display()));
        }
        cmd.args(&spec.nspawn_args);
        if spec.legacy_cgroups {
            // systemd as PID 1 of a container reads its kernel command line from argv.
            cmd.args([
                "systemd.unified_cgroup_hierarchy=0",
                "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1",
            ]);
        }
        let console = fs::File::create(self.work.join("console.log")).expect("create console.log");
        let console2 = console.try_clone().expect("dup console.log");
        cmd.env("BLT_CGROUP_PROCS", procs.join(" "))
            .env(
                "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY",
                if spec.legacy_cgroups { "0" } else { "1" },
            )
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn systemd-nspawn: {e}"));
        self.nspawn_pid = Some(child.id());
        lock(&NSPAWNS).push(Nspawn {
            name: self.name.clone(),
            child: Some(child),
            tearing_down: false,
        });
    }

    fn nspawn_exited(&self) -> Option<ExitStatus> {
        let mut reg = lock(&NSPAWNS);
        let entry = reg.iter_mut().find(|n| n.name == self.name)?;
        entry.child.as_mut()?.try_wait().ok().flatten()
    }

    fn boot_failed(&self, what: &str) -> ! {
        panic!(
            "[container {}] {what}\n--- console:\n{}",
            self.name,
            self.console_log()
        );
    }

    fn wait_for_pid1(&mut self, timeout: Duration) {
        let nspawn = self.nspawn_pid();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = container_pid1(nspawn) {
                self.pid1 = Some(pid);
                return;
            }
            if let Some(status) = self.nspawn_exited() {
                self.boot_failed(&format!("systemd-nspawn exited early: {status}"));
            }
            if Instant::now() >= deadline {
                self.boot_failed(&format!("no container PID 1 after {}", secs(timeout)));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// nspawn mounts the v1 controller hierarchies read-only inside; systemd can then
    /// neither create cgroups in them nor set limits. Remount the container's memory and
    /// pids hierarchies writable (in its mount namespace) and let systemd re-execute, so
    /// that it takes them up; units started from then on are confined.
    fn enable_legacy_controllers(&self, timeout: Duration) -> String {
        for ctl in LEGACY_CONTROLLERS {
            let mount = format!("/sys/fs/cgroup/{ctl}");
            let mut cmd = Command::new("nsenter");
            cmd.arg("-t").arg(self.pid1().to_string()).args([
                "-m",
                "mount",
                "-o",
                "remount,bind,rw",
                &mount,
            ]);
            run_ok(&mut cmd);
        }
        self.exec_ok(&["systemctl", "daemon-reexec"]);
        self.wait_until_running(timeout)
    }

    fn wait_until_running(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec_with(
                &["systemctl", "is-system-running"],
                None,
                Duration::from_secs(10),
            );
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return state;
            }
            if let Some(status) = self.nspawn_exited() {
                self.boot_failed(&format!(
                    "the container died while booting ({status}); state '{state}'"
                ));
            }
            if Instant::now() >= deadline {
                let jobs = self.exec_with(
                    &["systemctl", "list-jobs", "--no-legend"],
                    None,
                    Duration::from_secs(10),
                );
                self.boot_failed(&format!(
                    "boot did not finish within {}: is-system-running='{state}'; jobs:\n{}",
                    secs(timeout),
                    String::from_utf8_lossy(&jobs.stdout)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let t = Instant::now();
        let problems = teardown(&self.name, self.pid1);
        if problems.is_empty() {
            log(&self.name, format!("torn down in {}", secs(t.elapsed())));
        } else {
            log(
                &self.name,
                format!(
                    "torn down in {} WITH PROBLEMS: {}",
                    secs(t.elapsed()),
                    problems.join("; ")
                ),
            );
        }
    }
}

fn check_ok(name: &str, argv: &[&str], out: &Output) {
    if !out.status.success() {
        panic!(
            "[container {name}] {argv:?} failed: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn nsenter_cmd(pid1: u32, argv: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t")
        .arg(pid1.to_string())
        .args(["-a", "-r", "-w", "env", "-i", CONTAINER_PATH])
        .args([
            "TERM=dumb",
            "SYSTEMD_PAGER=cat",
            "SYSTEMD_COLORS=0",
            "LANG=C.UTF-8",
        ])
        .args(argv);
    cmd
}

/// Units the root file system `root` has enabled (`/etc/systemd/system/*.{wants,requires}/*`):
/// a cheap equivalent of `systemctl list-unit-files --state=enabled`.
fn enabled_units(root: &Path) -> BTreeSet<String> {
    let mut units = BTreeSet::new();
    let Ok(dirs) = fs::read_dir(root.join("etc/systemd/system")) else {
        return units;
    };
    for dir in dirs.flatten() {
        let dname = dir.file_name().to_string_lossy().into_owned();
        if !(dname.ends_with(".wants") || dname.ends_with(".requires")) {
            continue;
        }
        let Ok(entries) = fs::read_dir(dir.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let unit = entry.file_name().to_string_lossy().into_owned();
            if [".service", ".socket", ".timer", ".path"]
                .iter()
                .any(|s| unit.ends_with(s))
            {
                units.insert(unit);
            }
        }
    }
    units
}

fn remove_if_exists(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => panic!("{} is a directory", path.display()),
        Ok(_) => fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display())),
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------
// Teardown and stale cleanup

/// Removes every trace of container `name`; never panics. Returns what could not be done.
fn teardown(name: &str, pid1: Option<u32>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut child = {
        let mut reg = lock(&NSPAWNS);
        match reg.iter_mut().find(|n| n.name == name) {
            Some(entry) => {
                entry.tearing_down = true;
                entry.child.take()
            }
            None => None,
        }
    };
    let nspawn = child.as_ref().map(Child::id).or_else(|| find_nspawn(name));
    let alive = |child: &mut Option<Child>| match (child.as_mut(), nspawn) {
        (Some(c), _) => matches!(c.try_wait(), Ok(None)),
        (None, Some(pid)) => pid_alive(pid),
        (None, None) => false,
    };

    if alive(&mut child) {
        let pid1 = pid1.or_else(|| nspawn.and_then(container_pid1));
        // A clean shutdown first: systemd stops the units, then nspawn exits.
        if let Some(pid1) = pid1 {
            let cmd = nsenter_cmd(pid1, &["systemctl", "poweroff", "--no-block"]);
            if let Err(e) = run_with_timeout(cmd, None, Duration::from_secs(10)) {
                problems.push(format!("poweroff: {e}"));
            }
        }
        let mut gone = wait_until(Duration::from_secs(5), || !alive(&mut child));
        // Then SIGKILL its PID 1 (the kernel kills the whole PID namespace with it; nspawn
        // exits), and last nspawn itself.
        let pid1 = pid1.filter(|p| pid_alive(*p));
        let targets = [pid1.map(|p| ("PID 1", p)), nspawn.map(|p| ("nspawn", p))];
        for (what, pid) in targets.into_iter().flatten() {
            if gone {
                break;
            }
            problems.push(format!(
                "still running after poweroff, SIGKILL to {what} {pid}"
            ));
            kill("-KILL", &[pid]);
            gone = wait_until(Duration::from_secs(5), || !alive(&mut child));
        }
    }
    if let Some(mut c) = child {
        let _ = c.wait();
    }

    // Whatever still runs in our cgroups is ours: kill it.
    let cgroups = existing_cgroup_dirs(name);
    let emptied = wait_until(Duration::from_secs(5), || {
        let pids: Vec<u32> = cgroups.iter().flat_map(|d| cgroup_pids(d)).collect();
        if !pids.is_empty() {
            kill("-KILL", &pids);
        }
        pids.is_empty()
    });
    if !emptied {
        problems.push("processes left in its cgroups".to_owned());
    }

    // Unmount (the overlay before the tmpfs under it: reverse mount order).
    let work = Path::new(WORK_ROOT).join(name);
    for mnt in mounts_under(&work).into_iter().rev() {
        let ok = wait_until(Duration::from_secs(3), || {
            Command::new("umount")
                .arg(&mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
                || !mounts_under(&work).contains(&mnt)
        });
        if !ok {
            problems.push(format!(
                "umount {} failed, detaching it lazily",
                mnt.display()
            ));
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
    }

    // Remove the cgroup dirs, deepest first.
    for top in &cgroups {
        let mut dirs = Vec::new();
        collect_dirs(top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let ok = wait_until(Duration::from_secs(3), || {
                fs::remove_dir(&dir).is_ok() || !dir.exists()
            });
            if !ok {
                problems.push(format!("rmdir {} failed", dir.display()));
            }
        }
    }

    // nspawn cannot remove its propagate dir when the host has no systemd.
    let propagate = Path::new(PROPAGATE_ROOT).join(name);
    if propagate.exists() && mounts_under(&propagate).is_empty() {
        if let Err(e) = fs::remove_dir_all(&propagate) {
            problems.push(format!("rm {}: {e}", propagate.display()));
        }
    }

    // Never recurse into a work dir that still has a mount under it (the overlay of /).
    if work.exists() {
        if mounts_under(&work).is_empty() {
            if let Err(e) = fs::remove_dir_all(&work) {
                problems.push(format!("rm {}: {e}", work.display()));
            }
        } else {
            problems.push(format!(
                "{} still has mounts; left in place",
                work.display()
            ));
        }
    }

    lock(&NSPAWNS).retain(|n| n.name != name);
    problems
}

/// Removes what earlier test runs left behind (a SIGKILLed test process leaves its nspawn
/// running, two mounts, cgroup dirs and a propagate dir): every container of this harness
/// whose owning process is gone, or owned by this process but leaked with a dead nspawn.
/// Containers of live test processes are left alone. Returns the names cleaned.
pub fn cleanup_stale() -> Vec<String> {
    let _boot = lock(&BOOT_LOCK);
    cleanup_stale_locked()
}

fn cleanup_stale_locked() -> Vec<String> {
    let mut cleaned = Vec::new();
    for name in known_names() {
        // (A container of ours torn down meanwhile has a name but no traces any more.)
        if is_stale(&name) && !leftovers(&name).is_empty() {
            let t = Instant::now();
            let problems = teardown(&name, None);
            log(
                &name,
                format!(
                    "stale leftovers removed in {}{}",
                    secs(t.elapsed()),
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", problems.join("; "))
                    }
                ),
            );
            cleaned.push(name);
        }
    }
    cleaned
}

fn is_stale(name: &str) -> bool {
    let Some((pid, start)) = name_owner(name) else {
        return true;
    };
    if pid == std::process::id() && Some(start) == proc_start_time(pid) {
        let mut reg = lock(&NSPAWNS);
        return match reg.iter_mut().find(|n| n.name == name) {
            None => true,
            Some(entry) if entry.tearing_down => false,
            Some(entry) => match entry.child.as_mut() {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => true,
            },
        };
    }
    !(pid_alive(pid) && proc_start_time(pid) == Some(start))
}

/// Names of every container of this harness that has any trace on this machine.
pub fn known_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add_dir_entries = |dir: &Path| {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(NAME_PREFIX) {
                    names.insert(n);
                }
            }
        }
    };
    add_dir_entries(Path::new(WORK_ROOT));
    add_dir_entries(Path::new(PROPAGATE_ROOT));
    for h in cgroup_hierarchies()
        .into_iter()
        .chain(controller_hierarchies())
    {
        add_dir_entries(&h);
    }
    for mnt in mounts_under(Path::new(WORK_ROOT)) {
        if let Ok(rel) = mnt.strip_prefix(WORK_ROOT) {
            if let Some(Component::Normal(first)) = rel.components().next() {
                names.insert(first.to_string_lossy().into_owned());
            }
        }
    }
    for (_, args) in processes() {
        for a in args {
            if let Some(n) = a.strip_prefix("--machine=") {
                if n.starts_with(NAME_PREFIX) {
                    names.insert(n.to_owned());
                }
            }
        }
    }
    names
}

/// What is left of container `name` on this machine (empty when it is fully gone):
/// processes, mounts, cgroup dirs, the work dir, the propagate dir.
pub fn leftovers(name: &str) -> Vec<String> {
    let mut left = Vec::new();
    for (pid, args) in processes() {
        if args.iter().any(|a| a.contains(name)) {
            left.push(format!("process {pid}: {}", args.join(" ")));
        }
    }
    if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
        left.extend(
            info.lines()
                .filter(|l| l.contains(name))
                .map(|l| format!("mount: {l}")),
        );
    }
    left.extend(
        existing_cgroup_dirs(name)
            .iter()
            .map(|d| format!("cgroup dir {}", d.display())),
    );
    for dir in [
        Path::new(WORK_ROOT).join(name),
        Path::new(PROPAGATE_ROOT).join(name),
    ] {
        if fs::symlink_metadata(&dir).is_ok() {
            left.push(format!("dir {}", dir.display()));
        }
    }
    left
}

// ---------------------------------------------------------------------------------------
// cgroups, mounts, processes

/// The cgroup hierarchies nspawn's cgroup must be created in: the v1 name=systemd and the
/// v2 "unified" mounts on a hybrid host, or the one v2 mount on a pure cgroup v2 host.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| root.join(h))
        .filter(|p| p.is_dir())
        .collect()
}

/// The host's v1 hierarchies of [`LEGACY_CONTROLLERS`] (none on a pure cgroup v2 host).
fn controller_hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return Vec::new();
    }
    LEGACY_CONTROLLERS
        .iter()
        .map(|c| root.join(c))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// The cgroup dirs a container is started in: those nspawn needs, and in legacy mode
/// also one in each of [`LEGACY_CONTROLLERS`].
fn cgroup_dirs_for(name: &str, legacy: bool) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(name))
        .collect();
    if legacy {
        let controllers = controller_hierarchies();
        assert_eq!(
            controllers.len(),
            LEGACY_CONTROLLERS.len(),
            "legacy_cgroups: the host has no v1 {LEGACY_CONTROLLERS:?} hierarchies"
        );
        dirs.extend(controllers.into_iter().map(|h| h.join(name)));
    }
    dirs
}

fn existing_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    if name.is_empty() {
        return Vec::new();
    }
    cgroup_hierarchies()
        .into_iter()
        .chain(controller_hierarchies())
        .map(|h| h.join(name))
        .filter(|d| d.is_dir())
        .collect()
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn cgroup_pids(top: &Path) -> Vec<u32> {
    let mut dirs = Vec::new();
    collect_dirs(top, &mut dirs);
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Mount points at or under `dir`, in mount order.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(pid, argv)` of every process (zombies and kernel threads have an empty argv).
fn processes() -> Vec<(u32, Vec<String>)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>();
            Some((pid, args))
        })
        .collect()
}

fn find_nspawn(name: &str) -> Option<u32> {
    let want = format!("--machine={name}");
    processes()
        .into_iter()
        .find(|(pid, args)| {
            args.contains(&want) && proc_comm(*pid).as_deref() == Some("systemd-nspawn")
        })
        .map(|(pid, _)| pid)
}

/// Fields of `/proc/PID/stat` after the command name: `[state, ppid, ...]`.
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn proc_comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Process start time (clock ticks after boot), to tell a process from a later one that
/// got the same pid.
fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

/// True if `pid` exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    proc_stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"))
}

/// The container's PID 1: the child of nspawn whose innermost pid is 1.
fn container_pid1(nspawn: u32) -> Option<u32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            proc_stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(nspawn)
                && fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        let line = s.lines().find(|l| l.starts_with("NSpid:"))?.to_owned();
                        line.split_whitespace().last().map(|p| p == "1")
                    })
                    .unwrap_or(false)
                && pid_alive(pid)
        })
}

/// Every descendant of `pid` (children first found, then theirs).
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_stat_fields(p)?.get(1)?.parse().ok()?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn kill(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .arg("--")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Polls `done` (every 10 ms, backing off to 100 ms) until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Running host commands

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `cmd` with its stdout and stderr captured, feeding it `stdin`; kills it when
/// `timeout` passes (its status then reads "killed by SIGKILL" and stderr says so).
fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), stdin) {
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let read_all = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out_rx = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err_rx = read_all(Box::new(child.stderr.take().expect("piped stderr")));

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // Kill what it runs first (so that nsenter reaps it; an orphan of nsenter inside
            // the container has its parent outside, and stalls the container's shutdown).
            let pid = child.id();
            if !wait_until(Duration::from_secs(2), || {
                kill("-KILL", &descendants(pid));
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
            }
            break child.wait()?;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    // Something the command left running in the background may hold the pipes open.
    let grace = Instant::now() + Duration::from_secs(if timed_out { 1 } else { 5 });
    let left = || grace.saturating_duration_since(Instant::now());
    let stdout = out_rx.recv_timeout(left()).unwrap_or_default();
    let mut stderr = err_rx.recv_timeout(left()).unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[harness: timed out after {}, killed]\n", secs(timeout)).as_bytes(),
        );
    }
    let status = if timed_out && status.success() {
        ExitStatus::from_raw(9)
    } else {
        status
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

// ---------------------------------------------------------------------------------------
// journald's JSON

/// One journal entry from `journalctl -o json`. Values are strings; journald's byte-array
/// values (non-UTF-8 or binary data) are decoded lossily; a field that occurs several times
/// in the entry has all its values in [`JsonRecord::get_all`]; over-size fields (`null`) have
/// none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonRecord {
    fields: HashMap<String, Vec<String>>,
}

impl JsonRecord {
    /// The (first) value of `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field)?.first().map(String::as_str)
    }

    /// Every value of `field`.
    pub fn get_all(&self, field: &str) -> &[String] {
        self.fields.get(field).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True if the record has `field` equal to `value`.
    pub fn is(&self, field: &str, value: &str) -> bool {
        self.get_all(field).iter().any(|v| v == value)
    }

    /// Parses one line of `journalctl -o json`.
    pub fn parse(line: &str) -> Result<JsonRecord, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }
}

/// A JSON object, member by member: a field name that occurs more than once keeps every
/// value (a map type would keep only the last).
impl<'de> Deserialize<'de> for JsonRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonRecord, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = JsonRecord;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a journal entry (a JSON object)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRecord, A::Error> {
                let mut fields: HashMap<String, Vec<String>> = HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    fields.entry(k).or_default().extend(field_values(v));
                }
                Ok(JsonRecord { fields })
            }
        }

        d.deserialize_map(Fields)
    }
}

/// The values of one journal field as `journalctl -o json` gives it: a string; an array of
/// numbers for a non-UTF-8 or binary value (decoded lossily); an array of those when the
/// field is repeated; `null` when it is over-size (no value).
fn field_values(v: Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        Value::String(s) => vec![s],
        Value::Array(items) => match byte_array(&items) {
            Some(bytes) => vec![String::from_utf8_lossy(&bytes).into_owned()],
            None => items.into_iter().flat_map(field_values).collect(),
        },
        Value::Object(_) => vec!["<object>".to_owned()],
    }
}

/// `items` as bytes, if it is a non-empty array of numbers 0..=255.
fn byte_array(items: &[Value]) -> Option<Vec<u8>> {
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|i| i.as_u64().and_then(|n| u8::try_from(n).ok()))
        .collect()
}
