//! A private podman for one test process: its own configuration (runc, cgroupfs, ulimits
//! within the host's, see ../shared/docs/ENGINES.md), its own image store, run root,
//! temporary directory and network configurations, all named `blt-podman-<pid>-<start>`.
//!
//! Dropping the [`Podman`] removes every container, pod and network of that store, the
//! store itself (images, volumes, secrets), the cgroup directories podman leaves behind
//! (`libpod_parent/<pod>` after `kube down`), and what netavark added to the host (its
//! firewall chains, bridge interfaces, its run directory) when none of it was there
//! before: the machine is left as it was found, also when the test panicked. A store of a
//! test process that no longer runs (killed) is removed by the next [`Podman::new`].

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const PREFIX: &str = "blt-podman-";
const STORE_ROOT: &str = "/var/tmp";
const RUN_ROOT: &str = "/run";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// What rootful podman 4.3 creates outside its store whatever the configuration says:
/// netavark's state and aardvark-dns's configuration (/run/containers/networks), the
/// network namespaces (a mount), runc's state, the image layers' blob cache.
const OUTSIDE: [&str; 5] = [
    "/run/containers",
    "/run/netns",
    "/run/runc",
    "/run/libpod",
    "/var/lib/containers",
];

/// What podman and netavark may add to the host outside the store, as found before.
#[derive(Debug, Default)]
struct HostState {
    /// `libpod_parent` cgroup directories that existed.
    cgroup_parents: BTreeSet<PathBuf>,
    /// (command, table) pairs that had a NETAVARK chain.
    firewall: BTreeSet<(String, String)>,
    links: BTreeSet<String>,
    /// Which of [`OUTSIDE`] existed.
    outside: BTreeSet<&'static str>,
    aardvark: BTreeSet<u32>,
}

/// One private podman; see the module documentation.
pub struct Podman {
    pub name: String,
    /// The store's directory: configuration files, `root/` (images, containers, volumes),
    /// `networks/`, and whatever the test puts there (secrets, sources).
    pub dir: PathBuf,
    runroot: PathBuf,
    before: HostState,
    /// Pods seen, for their cgroup directories (podman forgets a pod at `kube down`).
    pods: Mutex<BTreeSet<String>>,
}

fn proc_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn conf(dir: &Path, runroot: &Path) -> (String, String) {
    let containers = format!(
        "[containers]\n\
         default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         netns = \"host\"\n\
         [engine]\n\
         runtime = \"runc\"\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n\
         tmp_dir = \"{}\"\n\
         [network]\n\
         network_config_dir = \"{}\"\n",
        runroot.join("libpod").display(),
        dir.join("networks").display()
    );
    let storage = format!(
        "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        dir.join("root").display(),
        runroot.display()
    );
    (containers, storage)
}

fn write_conf(dir: &Path, runroot: &Path) {
    fs::create_dir_all(dir.join("networks")).expect("mkdir networks");
    let (containers, storage) = conf(dir, runroot);
    fs::write(dir.join("containers.conf"), containers).expect("write containers.conf");
    fs::write(dir.join("storage.conf"), storage).expect("write storage.conf");
}

fn podman_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .stdin(Stdio::null());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Podman {
    /// A fresh store for this test process (after removing those of dead ones).
    pub fn new() -> Podman {
        remove_stale();
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}-{}", proc_start(pid).unwrap_or(0));
        let dir = Path::new(STORE_ROOT).join(&name);
        let runroot = Path::new(RUN_ROOT).join(&name);
        let before = host_state();
        fs::create_dir_all(&dir).expect("mkdir the store");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod the store");
        write_conf(&dir, &runroot);
        Podman {
            name,
            dir,
            runroot,
            before,
            pods: Mutex::new(BTreeSet::new()),
        }
    }

    /// `podman ARGS` with this store's configuration.
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = podman_cmd(&self.dir);
        cmd.args(args);
        cmd
    }

    /// Runs `podman ARGS` and returns its output.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = self.cmd(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run podman: {e}"))
    }

    /// Runs `podman ARGS`, panics with its output unless it succeeds; returns stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            let argv: Vec<String> = args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect();
            panic!("podman {argv:?} failed ({}):\n{}", out.status, text(&out));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The environment that makes any podman (podman-compose's too) use this store.
    pub fn env(&self) -> Vec<(String, PathBuf)> {
        vec![
            ("CONTAINERS_CONF".into(), self.dir.join("containers.conf")),
            (
                "CONTAINERS_STORAGE_CONF".into(),
                self.dir.join("storage.conf"),
            ),
        ]
    }

    /// Remembers the store's current pods (their cgroup directories outlive them).
    pub fn note_pods(&self) {
        let ids = self.ok(&["pod", "ps", "-q", "--no-trunc"]);
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.extend(ids.lines().map(str::to_owned));
    }

    /// A container's log (stdout and stderr).
    pub fn logs(&self, name: &str) -> String {
        text(&self.run(&["logs", name]))
    }

    /// `podman inspect -f FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name])
    }

    /// The container's address on its (only) network.
    pub fn ip(&self, name: &str) -> String {
        let ip = self.inspect(
            name,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        assert!(!ip.is_empty(), "{name} has no address");
        ip
    }

    /// True while the container runs.
    pub fn running(&self, name: &str) -> bool {
        self.run(&["inspect", "-f", "{{.State.Running}}", name])
            .stdout
            .starts_with(b"true")
    }

    /// Polls `pred` over the container's log until it holds; panics (with the log) when the
    /// container exits first or `timeout` passes.
    pub fn wait_log(&self, name: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.logs(name);
            if pred(&log) {
                return log;
            }
            if !self.running(name) {
                let log = self.logs(name);
                if pred(&log) {
                    return log;
                }
                panic!("{name} exited before its log showed what was expected:\n{log}");
            }
            if Instant::now() >= deadline {
                panic!("{name}: the log did not show what was expected in {timeout:?}:\n{log}");
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let t = Instant::now();
        self.note_pods();
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut problems = remove_store(&self.dir, &self.runroot, &pods);
        problems.extend(restore_host(&self.before));
        if problems.is_empty() {
            eprintln!(
                "[podman] store {} removed in {:.1}s",
                self.name,
                t.elapsed().as_secs_f64()
            );
        } else {
            eprintln!(
                "[podman] store {} removed in {:.1}s WITH PROBLEMS: {}",
                self.name,
                t.elapsed().as_secs_f64(),
                problems.join("; ")
            );
        }
    }
}

/// Everything of the store at `dir`; returns what could not be done.
fn remove_store(dir: &Path, runroot: &Path, pods: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if dir.join("containers.conf").exists() {
        let quiet = |args: &[&str]| {
            let mut cmd = podman_cmd(dir);
            cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
            let _ = cmd.status();
        };
        let ids = |args: &[&str]| -> Vec<String> {
            let mut cmd = podman_cmd(dir);
            cmd.args(args);
            cmd.output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut pods = pods.clone();
        pods.extend(ids(&["pod", "ps", "-q", "--no-trunc"]));
        let containers = ids(&["ps", "-aq", "--no-trunc"]);
        // Containers and networks have state outside the store (processes, mounts,
        // netavark's interfaces and firewall rules); images, volumes and secrets are
        // files in it, removed with it below.
        quiet(&["pod", "rm", "-af", "-t", "0"]);
        quiet(&["rm", "-af", "-t", "0"]);
        for net in ids(&["network", "ls", "-q", "--format", "{{.Name}}"]) {
            if net != "podman" {
                quiet(&["network", "rm", "-f", &net]);
            }
        }
        problems.extend(remove_cgroups(&pods, &containers));
    }
    for top in [dir, runroot] {
        // Anything still mounted below (an overlay of a container podman failed to clean).
        for mnt in mounts_under(top).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
        if top.exists() {
            if let Err(e) = fs::remove_dir_all(top) {
                problems.push(format!("rm -r {}: {e}", top.display()));
            }
        }
    }
    problems
}

/// The `libpod_parent` directories of every cgroup hierarchy.
fn cgroup_parents() -> Vec<PathBuf> {
    let mut out = vec![Path::new(CGROUP_ROOT).join("libpod_parent")];
    if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
        for e in entries.flatten() {
            out.push(e.path().join("libpod_parent"));
        }
    }
    out.into_iter().filter(|p| p.is_dir()).collect()
}

/// Removes the cgroup directories of these pods and containers, deepest first.
fn remove_cgroups(pods: &BTreeSet<String>, containers: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names: Vec<String> = pods.iter().cloned().collect();
    for c in containers {
        names.push(format!("libpod-{c}"));
        names.push(format!("libpod-conmon-{c}"));
    }
    for parent in cgroup_parents() {
        for name in &names {
            let dir = parent.join(name);
            if dir.is_dir() && !rmdir_tree(&dir) {
                problems.push(format!("rmdir {}", dir.display()));
            }
        }
    }
    problems
}

fn rmdir_tree(top: &Path) -> bool {
    let mut dirs = Vec::new();
    collect_dirs(top, &mut dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let deadline = Instant::now() + Duration::from_secs(5);
    for d in dirs {
        while fs::remove_dir(&d).is_err() && d.exists() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    true
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn firewall_tools() -> Vec<String> {
    ["iptables", "ip6tables"]
        .iter()
        .filter(|t| {
            Command::new(t)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|t| t.to_string())
        .collect()
}

fn rules(tool: &str, table: &str) -> Vec<String> {
    Command::new(tool)
        .args(["-t", table, "-S"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn links() -> BTreeSet<String> {
    fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn aardvark_pids() -> BTreeSet<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("aardvark-dns"))
                .unwrap_or(false)
        })
        .collect()
}

fn host_state() -> HostState {
    let mut firewall = BTreeSet::new();
    for tool in firewall_tools() {
        for table in ["filter", "nat"] {
            if rules(&tool, table).iter().any(|l| l.contains("NETAVARK")) {
                firewall.insert((tool.clone(), table.to_owned()));
            }
        }
    }
    HostState {
        cgroup_parents: cgroup_parents().into_iter().collect(),
        firewall,
        links: links(),
        outside: OUTSIDE
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .collect(),
        aardvark: aardvark_pids(),
    }
}

/// Undoes what podman and netavark added to the host and was not there before.
fn restore_host(before: &HostState) -> Vec<String> {
    let mut problems = Vec::new();
    // aardvark-dns exits by itself once no container needs it; one started during the test
    // and still running is ours.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ours: Vec<u32> = aardvark_pids()
            .difference(&before.aardvark)
            .copied()
            .collect();
        if ours.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for pid in &ours {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for link in links().difference(&before.links) {
        if link.starts_with("podman") || link.starts_with("veth") {
            let _ = Command::new("ip").args(["link", "del", link]).status();
        }
    }
    for tool in firewall_tools() {
        for table in ["filter", "nat"] {
            if before.firewall.contains(&(tool.clone(), table.to_owned())) {
                continue;
            }
            let lines = rules(&tool, table);
            // Jumps from the built-in chains first, then netavark's own chains.
            for rule in lines.iter().filter(|l| {
                l.starts_with("-A ") && !l.starts_with("-A NETAVARK") && l.contains("NETAVARK")
            }) {
                let args = shell_words(&rule[3..]);
                let mut cmd = Command::new(&tool);
                cmd.args(["-t", table, "-D"]).args(&args);
                if !cmd.status().is_ok_and(|s| s.success()) {
                    problems.push(format!("{tool} -t {table} -D {}", &rule[3..]));
                }
            }
            let chains: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| c.starts_with("NETAVARK"))
                .collect();
            for chain in &chains {
                let _ = Command::new(&tool)
                    .args(["-t", table, "-F", chain])
                    .status();
            }
            for chain in &chains {
                if !Command::new(&tool)
                    .args(["-t", table, "-X", chain])
                    .status()
                    .is_ok_and(|s| s.success())
                {
                    problems.push(format!("{tool} -t {table} -X {chain}"));
                }
            }
        }
    }
    for parent in cgroup_parents() {
        if !before.cgroup_parents.contains(&parent) {
            // Empty by now unless something else uses it: then rmdir fails and it stays.
            let _ = fs::remove_dir(parent.join("conmon"));
            let _ = fs::remove_dir(&parent);
        }
    }
    // Directories podman made outside the store, once nothing of podman runs any more.
    if aardvark_pids().is_empty() && !conmon_running() {
        for path in OUTSIDE.iter().filter(|p| !before.outside.contains(*p)) {
            let path = Path::new(path);
            for mnt in mounts_under(path).into_iter().rev() {
                let _ = Command::new("umount").arg(&mnt).status();
            }
            if path.exists() {
                if let Err(e) = fs::remove_dir_all(path) {
                    problems.push(format!("rm -r {}: {e}", path.display()));
                }
            }
        }
    }
    problems
}

fn conmon_running() -> bool {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten().any(|e| {
                fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "conmon")
            })
        })
        .unwrap_or(false)
}

/// Splits an `iptables -S` rule into arguments (double quotes group words).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            _ => {
                cur.push(ch);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Removes the stores of test processes that no longer run.
fn remove_stale() {
    let Ok(entries) = fs::read_dir(STORE_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(start)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if proc_start(pid) == Some(start) {
            continue;
        }
        let runroot = Path::new(RUN_ROOT).join(&name);
        let problems = remove_store(&e.path(), &runroot, &BTreeSet::new());
        eprintln!(
            "[podman] removed the store {name} of a test process that no longer runs{}",
            if problems.is_empty() {
                String::new()
            } else {
                format!(": {}", problems.join("; "))
            }
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn firewall_rules_split_into_arguments() {
        assert_eq!(
            super::shell_words(
                "FORWARD -m comment --comment \"netavark firewall plugin rules\" -j NETAVARK_FORWARD"
            ),
            [
                "FORWARD",
                "-m",
                "comment",
                "--comment",
                "netavark firewall plugin rules",
                "-j",
                "NETAVARK_FORWARD"
            ]
        );
    }
}
