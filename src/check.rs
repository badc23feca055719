//! `bitpoll-launcher check`: validate a deployment read-only and say how to fix each
//! problem, like `nginx -t`, but reporting every problem at once.
//!
//! It runs the same config validation as `run`, then read-only probes: the account, the
//! data directory, every secret, the interpreter and the app (as the service user, with
//! the app's environment, through an embedded probe script), the database, the server
//! command and, when asked, the systemd unit. It never writes anything: no directory is
//! created, no secret generated, no bytecode written, no database file opened that does
//! not exist yet.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

use launcher_config::{Config, Database};
use launcher_plan::env::{self, Purpose};
use launcher_plan::layout::{SECRETS_DIR, STATE_DIR, TREE};
use launcher_plan::secret::SecretValue;
use launcher_sys::Uid;
use launcher_sys::tree::{self, Inspected, Observed};

use crate::cli::CheckArgs;
use crate::exit::Exit;
use crate::secrets;

const PROBE: &str = include_str!("check.py");
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Below this much free space in the data directory's file system: a warning.
const LOW_DISK: u64 = 512 * 1024 * 1024;
/// Below this: an error (a migration or collectstatic would fail).
const CRITICAL_DISK: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Severity::Ok => "\x1b[32m",
            Severity::Info => "\x1b[36m",
            Severity::Warning => "\x1b[33m",
            Severity::Error => "\x1b[31m",
        }
    }
}

/// One finding. The JSON form is the documented, stable interface (docs/check.md).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub group: &'static str,
    pub subject: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The order groups are printed in.
const GROUP_ORDER: &[&str] = &[
    "config", "check", "account", "data_dir", "secrets", "python", "app", "database", "server",
    "systemd",
];

#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn add(
        &mut self,
        severity: Severity,
        group: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        // One line per finding: a multi-line text (a tool's stderr) is joined.
        let one_line = |t: String| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.findings.push(Finding {
            severity,
            group,
            subject: one_line(subject.into()),
            message: one_line(message.into()),
            fix: fix.map(one_line),
        });
    }
    fn ok(&mut self, group: &'static str, subject: impl Into<String>, message: impl Into<String>) {
        self.add(Severity::Ok, group, subject, message, None);
    }
    fn info(
        &mut self,
        group: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.add(Severity::Info, group, subject, message, None);
    }
    fn warn(
        &mut self,
        group: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(Severity::Warning, group, subject, message, Some(fix.into()));
    }
    fn error(
        &mut self,
        group: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(Severity::Error, group, subject, message, Some(fix.into()));
    }
    fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    config: String,
    checked_as_uid: u32,
    summary: BTreeMap<&'static str, usize>,
    findings: &'a [Finding],
}

/// Who runs the check, relative to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Viewer {
    Root,
    ServiceUser,
    Other,
}

pub fn run(args: &CheckArgs) -> Result<u8, Exit> {
    let mut report = Report::default();
    let cfg = match crate::config::load(&args.config) {
        Ok(cfg) => {
            report.ok("config", args.config.display().to_string(), "valid");
            Some(cfg)
        }
        Err(e) => {
            for p in e.problems() {
                let subject = if p.key.is_empty() {
                    args.config.display().to_string()
                } else {
                    p.key.clone()
                };
                let fix = p
                    .hint
                    .clone()
                    .unwrap_or_else(|| format!("edit {}", args.config.display()));
                report.error("config", subject, p.message.clone(), fix);
            }
            None
        }
    };
    if let Some(cfg) = &cfg {
        check_deployment(cfg, args, &mut report);
    }
    print(&report, args);
    Ok(match report.worst() {
        Severity::Ok | Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
    })
}

fn check_deployment(cfg: &Config, args: &CheckArgs, r: &mut Report) {
    let euid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_name(&cfg.service.user)
        .ok()
        .flatten();
    let group = nix::unistd::Group::from_name(&cfg.service.group)
        .ok()
        .flatten();
    let viewer = if euid.is_root() {
        Viewer::Root
    } else if user.as_ref().is_some_and(|u| u.uid == euid) {
        Viewer::ServiceUser
    } else {
        Viewer::Other
    };
    if viewer == Viewer::Other {
        r.warn(
            "check",
            format!("uid {euid}"),
            format!("running as neither root nor {}: files only they can read were not checked, and the app was probed as uid {euid}", cfg.service.user),
            format!("run `sudo bitpoll-launcher check --config {}` for a complete check", args.config.display()),
        );
    }

    check_account(cfg, user.as_ref(), group.as_ref(), r);
    let uid = user.as_ref().map(|u| u.uid);
    let dirs = check_data_dir(cfg, uid, viewer, r);
    let state_fd = dirs
        .iter()
        .find(|d| d.spec.name == STATE_DIR)
        .and_then(|d| d.fd());
    let evidence = crate::prepare::database_evidence(cfg, state_fd);
    let loaded = check_secrets(
        cfg,
        args,
        &dirs,
        uid.unwrap_or(euid),
        evidence.as_deref(),
        viewer,
        r,
    );
    check_sources(cfg, r);
    let probe = match (&user, &group) {
        (Some(u), Some(g)) => probe_app(cfg, u, g, viewer, &dirs, &loaded, r),
        _ => {
            python_is_executable(cfg, r);
            r.info(
                "app",
                "probe",
                "the app was not probed: the service account does not exist yet",
            );
            None
        }
    };
    if let Some(p) = &probe {
        let first = r.findings.len();
        report_probe(cfg, p, uid, r);
        if viewer == Viewer::Other {
            // The probe ran as this user, not as the service user: what failed for it
            // may well work for the service.
            for f in &mut r.findings[first..] {
                if f.severity == Severity::Error {
                    f.severity = Severity::Warning;
                    f.message = format!(
                        "{} (seen as uid {euid}, not as the service user)",
                        f.message
                    );
                }
            }
        }
    }
    check_server(cfg, uid, probe.as_ref(), r);
    if let Some(unit) = args.unit.as_deref().map(str::to_string).or_else(|| {
        std::env::var_os("INVOCATION_ID")
            .map(|_| current_unit().unwrap_or_else(|| "bitpoll".into()))
    }) {
        check_unit(cfg, &unit, user.is_some(), r);
    }
}

fn check_account(
    cfg: &Config,
    user: Option<&nix::unistd::User>,
    group: Option<&nix::unistd::Group>,
    r: &mut Report,
) {
    let svc = &cfg.service;
    let declare = "declare it ahead: `bitpoll-launcher sysusers --config FILE > /etc/sysusers.d/bitpoll.conf && systemd-sysusers`, or users.users on NixOS";
    match group {
        Some(g) if g.gid.as_raw() == 0 => r.error(
            "account",
            format!("group {}", svc.group),
            "has gid 0",
            "use a dedicated group",
        ),
        Some(g) => r.ok(
            "account",
            format!("group {}", svc.group),
            format!("exists (gid {})", g.gid),
        ),
        None if svc.create_user => r.info(
            "account",
            format!("group {}", svc.group),
            "does not exist yet; `run` creates it as root (create_user = true)",
        ),
        None => r.error(
            "account",
            format!("group {}", svc.group),
            "does not exist and service.create_user = false",
            declare,
        ),
    }
    match user {
        Some(u) if u.uid.is_root() => r.error(
            "account",
            format!("user {}", svc.user),
            "has uid 0",
            "give the service its own unprivileged account",
        ),
        Some(u) => {
            r.ok(
                "account",
                format!("user {}", svc.user),
                format!("exists (uid {}, primary gid {})", u.uid, u.gid),
            );
            if u.dir != svc.data_dir {
                r.warn(
                    "account",
                    format!("user {}", svc.user),
                    format!(
                        "home is {}, not the data directory {}",
                        u.dir.display(),
                        svc.data_dir.display()
                    ),
                    format!("usermod -d {} {}", svc.data_dir.display(), svc.user),
                );
            }
            let shell = u.shell.to_string_lossy();
            if !(shell.ends_with("nologin") || shell.ends_with("false")) {
                r.warn(
                    "account",
                    format!("user {}", svc.user),
                    format!("has a login shell ({shell})"),
                    format!("usermod -s /usr/sbin/nologin {}", svc.user),
                );
            }
            if let Some(g) = group {
                if u.gid != g.gid && !g.mem.contains(&u.name) {
                    r.info(
                        "account",
                        format!("user {}", svc.user),
                        format!(
                            "is not a member of {}; the launcher runs the app with gid {} anyway",
                            svc.group, g.gid
                        ),
                    );
                }
            }
        }
        None if svc.create_user => {
            if launcher_sys::account::etc_is_read_only() {
                r.error(
                    "account",
                    format!("user {}", svc.user),
                    "does not exist, and /etc is read-only here so `run` cannot create it",
                    declare,
                );
            } else {
                r.info(
                    "account",
                    format!("user {}", svc.user),
                    "does not exist yet; `run` creates it as a system user (create_user = true)",
                );
            }
        }
        None => r.error(
            "account",
            format!("user {}", svc.user),
            "does not exist and service.create_user = false",
            declare,
        ),
    }
}

fn check_data_dir(
    cfg: &Config,
    uid: Option<Uid>,
    viewer: Viewer,
    r: &mut Report,
) -> Vec<Inspected> {
    let data_dir = &cfg.service.data_dir;
    let dirs = tree::inspect(data_dir, TREE);
    for d in &dirs {
        let subject = d.path.display().to_string();
        match &d.observed {
            Observed::Missing if d.spec.name.is_empty() => {
                let parent = data_dir.parent().unwrap_or(Path::new("/"));
                if parent.is_dir() {
                    r.info(
                        "data_dir",
                        subject,
                        format!("does not exist yet; `run` creates it ({:04o})", d.spec.mode),
                    );
                } else {
                    r.error(
                        "data_dir",
                        subject,
                        format!("its parent {} does not exist", parent.display()),
                        format!(
                            "create {} or choose another service.data_dir",
                            parent.display()
                        ),
                    );
                }
            }
            Observed::Missing => {
                if dirs[0].fd().is_some() {
                    r.info(
                        "data_dir",
                        subject,
                        format!("does not exist yet; `run` creates it ({:04o})", d.spec.mode),
                    );
                }
            }
            Observed::Symlink => r.error(
                "data_dir",
                subject,
                "is a symbolic link; the launcher refuses to follow links here",
                "replace it with a real directory",
            ),
            Observed::NotADirectory => {
                r.error("data_dir", subject, "is not a directory", "move it away")
            }
            Observed::Unreadable(e) => {
                let sev_fix = format!("run check as root or as {}", cfg.service.user);
                if viewer == Viewer::Root {
                    r.error(
                        "data_dir",
                        subject,
                        format!("cannot be inspected: {e}"),
                        "check the file system",
                    );
                } else {
                    r.warn(
                        "data_dir",
                        subject,
                        format!("cannot be inspected as this user: {e}"),
                        sev_fix,
                    );
                }
            }
            Observed::Present {
                uid: owner,
                gid,
                mode,
            } => {
                let is_user = uid.is_some_and(|u| u.as_raw() == *owner);
                if !is_user && *owner != 0 {
                    let name = nix::unistd::User::from_uid(Uid::from_raw(*owner))
                        .ok()
                        .flatten()
                        .map_or_else(|| format!("uid {owner}"), |u| u.name);
                    r.error("data_dir", subject.clone(), format!("is owned by {name}, not {}; `run` refuses to take it over", cfg.service.user), format!("if it belongs to the service: chown -R {}: {}; otherwise choose another data_dir", cfg.service.user, d.path.display()));
                    continue;
                }
                let mut notes = Vec::new();
                if *owner == 0 {
                    notes.push(format!(
                        "owned by root; `run` gives it to {}",
                        cfg.service.user
                    ));
                }
                if *mode != d.spec.mode {
                    notes.push(format!("mode {mode:04o}; `run` sets {:04o}", d.spec.mode));
                }
                if notes.is_empty() {
                    r.ok(
                        "data_dir",
                        subject,
                        format!("owner {owner}:{gid}, mode {mode:04o}"),
                    );
                } else {
                    r.info("data_dir", subject, notes.join("; "));
                }
            }
        }
    }
    let probe_path = if data_dir.exists() {
        data_dir.clone()
    } else {
        data_dir.parent().unwrap_or(Path::new("/")).to_path_buf()
    };
    if let Some(free) = tree::free_bytes(&probe_path) {
        let mib = free / (1024 * 1024);
        let subject = format!("free space at {}", probe_path.display());
        if free < CRITICAL_DISK {
            r.error(
                "data_dir",
                subject,
                format!("{mib} MiB free"),
                "free disk space before starting: migrations and collectstatic need room",
            );
        } else if free < LOW_DISK {
            r.warn(
                "data_dir",
                subject,
                format!("only {mib} MiB free"),
                "free some disk space",
            );
        } else {
            r.ok("data_dir", subject, format!("{mib} MiB free"));
        }
    }
    dirs
}

fn check_secrets(
    cfg: &Config,
    args: &CheckArgs,
    dirs: &[Inspected],
    uid: Uid,
    evidence: Option<&str>,
    viewer: Viewer,
    r: &mut Report,
) -> Vec<(String, SecretValue)> {
    let secrets_dir = dirs
        .iter()
        .find(|d| d.spec.name == SECRETS_DIR)
        .and_then(|d| d.fd().map(|fd| (fd, d.path.as_path())));
    // Another user may not see into the data directory at all.
    let hidden = viewer == Viewer::Other
        && dirs
            .iter()
            .any(|d| matches!(d.observed, Observed::Unreadable(_)));
    let unit = args.unit.as_deref().unwrap_or("bitpoll");
    let creds = secrets::credentials_dir_for(unit);
    let mut values = Vec::new();
    for (name, source, result) in
        secrets::observe(cfg, secrets_dir, uid, creds.as_deref(), evidence)
    {
        let subject = format!("{name} ({source})");
        match result {
            Ok(secrets::Observed::Loaded(l)) => {
                r.ok(
                    "secrets",
                    subject,
                    format!("usable: {}, {} bytes", l.origin, l.value.len()),
                );
                values.push((name, l.value));
            }
            Ok(secrets::Observed::WillGenerate(_)) if hidden => {
                r.warn(
                    "secrets",
                    subject,
                    "cannot be seen as this user (the data directory is not readable)",
                    "run check as root or as the service user",
                );
            }
            Ok(secrets::Observed::WillGenerate(kind)) => {
                r.info(
                    "secrets",
                    subject,
                    "not generated yet; the first `run` generates and keeps it",
                );
                // The probe gets a throwaway value so Django can start; it is never stored.
                let mut failed = false;
                let v = launcher_plan::secret::generate(kind, |b| {
                    failed |= launcher_sys::random_bytes(b).is_err()
                });
                if !failed {
                    values.push((name, v));
                }
            }
            Err(message) if message.contains("CREDENTIALS_DIRECTORY is not set") => {
                r.info("secrets", subject, format!("not visible outside the running unit (no /run/credentials/{unit}.service); make sure the unit has LoadCredential= for it"));
            }
            Err(message) if viewer != Viewer::Root && message.contains("EACCES") => {
                r.warn(
                    "secrets",
                    subject,
                    format!("cannot be read by this user ({message})"),
                    "run check as root: the launcher reads secrets as root",
                );
            }
            Err(message) => {
                let fix = fix_for_secret(&message);
                r.error("secrets", subject, message, fix);
            }
        }
    }
    values
}

fn fix_for_secret(message: &str) -> String {
    // A directory or link on the path failed the trust rule; the message ends with its fix.
    if message.contains(": directory ")
        || message.contains(": symbolic link ")
        || message.contains("a directory others can write")
    {
        "keep the file where only root can change it (see the message)".into()
    } else if message.contains("readable by every user")
        || message.contains("writable by every user")
        || message.contains("accessible to other users")
    {
        "chmod 0600 the file (see the message)".into()
    } else if message.contains("publicly known sample") {
        "generate a fresh key; never reuse a published one".into()
    } else if message.contains("does not exist") {
        "create the file, or change the secret's source".into()
    } else if message.contains("Fernet") || message.contains("database exists") {
        "restore the key that encrypted the existing data".into()
    } else {
        "fix the secret's file or source (see the message)".into()
    }
}

/// What the app source looks like: manage.py, translation catalogs.
fn check_sources(cfg: &Config, r: &mut Report) {
    let src = &cfg.app.source_dir;
    if !src.join("manage.py").is_file() {
        r.error(
            "app",
            src.display().to_string(),
            "has no manage.py",
            "point app.source_dir at the directory holding manage.py",
        );
        return;
    }
    r.ok("app", src.display().to_string(), "holds manage.py");
    let (po, fresh) = match crate::prepare::SourceTree::of(cfg) {
        Ok(tree) => (tree.po_files, tree.fresh_mo_files),
        Err(e) => {
            r.error(
                "app",
                src.display().to_string(),
                format!("cannot be read: {e}"),
                "make the app source readable",
            );
            return;
        }
    };
    if po == 0 {
        return;
    }
    let subject = format!("translations in {}", src.display());
    if fresh == po {
        r.ok(
            "app",
            subject,
            format!("{po} catalog(s), all compiled and up to date"),
        );
    } else if cfg.prepare.compilemessages {
        r.info(
            "app",
            subject,
            format!(
                "{} of {po} catalog(s) need compiling; `run` compiles them",
                po - fresh
            ),
        );
    } else {
        r.warn("app", subject, format!("{} of {po} catalog(s) are not compiled (or older than their .po) and prepare.compilemessages = false", po - fresh), "compile them at build/deploy time (manage.py compilemessages) or enable prepare.compilemessages");
    }
}

/// The probe's answer (check.py).
#[derive(Debug, Default, serde::Deserialize)]
struct Probe {
    python: Option<String>,
    #[serde(default)]
    access: BTreeMap<String, Access>,
    gunicorn: Option<String>,
    msgfmt: Option<String>,
    django: Option<String>,
    django_error: Option<String>,
    setup_error: Option<String>,
    checks: Option<Vec<DjangoCheck>>,
    checks_error: Option<String>,
    db: Option<DbInfo>,
    pending: Option<Vec<String>>,
    manifest: Option<Manifest>,
    static_error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Access {
    exists: bool,
    writable: bool,
}

#[derive(Debug, serde::Deserialize)]
struct DjangoCheck {
    level: u32,
    id: Option<String>,
    msg: String,
    hint: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct DbInfo {
    vendor: String,
    name: Option<String>,
    exists: bool,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    path: String,
    exists: bool,
}

/// Paths the service user must be able to write, limited to what the inspection found to
/// be real directories and regular files: the probe must never look through a link.
fn writable_paths(cfg: &Config, dirs: &[Inspected]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| matches!(d.observed, Observed::Present { .. }))
        .map(|d| d.path.clone())
        .collect();
    if let Database::Sqlite { path } = &cfg.database {
        if let Some(parent) = path.parent() {
            let real_dir = std::fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir());
            let in_tree = parent == cfg.service.data_dir;
            if real_dir
                && !paths.iter().any(|p| p == parent)
                && (!in_tree || paths.contains(&cfg.service.data_dir))
            {
                paths.push(parent.to_path_buf());
            }
        }
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
            paths.push(path.clone());
        }
    }
    paths
}

/// Reported in every case, also before the account exists (when the probe cannot run).
fn python_is_executable(cfg: &Config, r: &mut Report) -> bool {
    let python = &cfg.app.python;
    let executable =
        std::fs::metadata(python).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        r.error(
            "python",
            python.display().to_string(),
            "is not an executable file",
            "point app.python at the virtualenv's bin/python",
        );
    }
    executable
}

fn probe_app(
    cfg: &Config,
    user: &nix::unistd::User,
    group: &nix::unistd::Group,
    viewer: Viewer,
    dirs: &[Inspected],
    secrets: &[(String, SecretValue)],
    r: &mut Report,
) -> Option<Probe> {
    if !python_is_executable(cfg, r) {
        return None;
    }
    let python = &cfg.app.python;
    let missing: Vec<&str> = cfg
        .secrets
        .keys()
        .filter(|k| !secrets.iter().any(|(n, _)| n == *k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        r.info(
            "app",
            "probe",
            format!(
                "the app was not started: secret(s) {} could not be loaded here",
                missing.join(", ")
            ),
        );
        return None;
    }
    let account = match launcher_sys::account::lookup(&user.name, &group.name) {
        Ok(Some(a)) => a,
        _ => return None,
    };
    let inherited = crate::run::inherited_env();
    let mut app_env = env::build(
        &env::Inputs {
            config: cfg,
            secrets,
            inherited: &inherited,
            user: &account.user,
            home: &cfg.service.data_dir,
        },
        Purpose::Prepare,
    );
    app_env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    // Another user's view of write access says nothing about the service user's.
    let paths: Vec<String> = if viewer == Viewer::Other {
        Vec::new()
    } else {
        writable_paths(cfg, dirs)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    };
    let mut cmd = std::process::Command::new(python);
    cmd.arg("-c")
        .arg(PROBE)
        .arg(serde_json::to_string(&paths).unwrap_or_else(|_| "[]".into()))
        .current_dir(&cfg.app.source_dir)
        .env_clear()
        .envs(app_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let drop = match viewer {
        Viewer::Root => Some(true),
        Viewer::ServiceUser => Some(false),
        Viewer::Other => None,
    };
    if let Some(privileged) = drop {
        match launcher_sys::privs::Target::for_account(&account, privileged) {
            Ok(t) => launcher_sys::privs::drop_in_child(&mut cmd, t),
            Err(e) => {
                r.error(
                    "python",
                    "probe",
                    format!("cannot prepare the privilege drop: {e}"),
                    "check /proc is mounted",
                );
                return None;
            }
        }
    }
    let output = match run_with_timeout(cmd, PROBE_TIMEOUT) {
        Ok(o) => o,
        Err(e) => {
            r.error(
                "python",
                python.display().to_string(),
                format!("cannot run: {e}"),
                "check app.python",
            );
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| l.starts_with('{'));
    match last.and_then(|l| serde_json::from_str::<Probe>(l).ok()) {
        Some(p) => Some(p),
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            r.error(
                "python",
                python.display().to_string(),
                format!("the probe failed ({}): {}", output.status, tail.join(" | ")),
                "run the interpreter by hand as the service user to see why",
            );
            None
        }
    }
}

fn run_with_timeout(
    mut cmd: std::process::Command,
    timeout: Duration,
) -> std::io::Result<std::process::Output> {
    let child = cmd.spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(std::io::Error::other(format!(
                "no answer within {} s",
                timeout.as_secs()
            )))
        }
    }
}

fn report_probe(cfg: &Config, p: &Probe, uid: Option<Uid>, r: &mut Report) {
    let python = cfg.app.python.display().to_string();
    r.ok(
        "python",
        python,
        format!("Python {}", p.python.as_deref().unwrap_or("?")),
    );
    for (path, a) in &p.access {
        let who = uid.map_or_else(|| "the service user".to_string(), |u| format!("uid {u}"));
        if !a.exists {
            continue;
        }
        if a.writable {
            r.ok(
                "data_dir",
                format!("write access to {path}"),
                format!("{who} can write"),
            );
        } else {
            r.error(
                "data_dir",
                format!("write access to {path}"),
                format!("{who} cannot write"),
                format!(
                    "chown {} {path} (run fixes directories of the layout, not files inside them)",
                    cfg.service.user
                ),
            );
        }
    }
    if let Some(e) = &p.django_error {
        r.error(
            "app",
            "django",
            format!("cannot be imported: {e}"),
            "install Django into the interpreter's environment",
        );
        return;
    }
    r.ok(
        "app",
        "django",
        format!("Django {}", p.django.as_deref().unwrap_or("?")),
    );
    if let Some(e) = &p.setup_error {
        r.error(
            "app",
            cfg.app.settings_module.clone(),
            format!("the app does not start: {e}"),
            "fix the settings or the app's environment ([environment], [secrets])",
        );
        return;
    }
    r.ok(
        "app",
        cfg.app.settings_module.clone(),
        "imports and Django starts with the app's environment",
    );
    if let Some(e) = &p.checks_error {
        r.error(
            "app",
            "manage.py check --deploy",
            e.clone(),
            "run manage.py check --deploy as the service user",
        );
    }
    let checks = p.checks.as_deref().unwrap_or_default();
    if checks.is_empty() && p.checks_error.is_none() {
        r.ok("app", "manage.py check --deploy", "no issues");
    }
    for c in checks {
        let subject = format!("check --deploy {}", c.id.as_deref().unwrap_or("?"));
        let fix = c
            .hint
            .clone()
            .unwrap_or_else(|| "see Django's deployment checklist".into());
        match c.level {
            l if l >= 40 => r.error("app", subject, c.msg.clone(), fix),
            l if l >= 30 => r.warn("app", subject, c.msg.clone(), fix),
            _ => r.info("app", subject, c.msg.clone()),
        }
    }
    if let Some(db) = &p.db {
        let subject = match (&db.vendor[..], &db.name) {
            ("sqlite", Some(name)) => format!("sqlite {name}"),
            (vendor, _) => vendor.to_string(),
        };
        if !db.exists {
            r.info(
                "database",
                subject,
                "does not exist yet; migrate creates it",
            );
        } else if let Some(e) = &db.error {
            r.error(
                "database",
                subject,
                format!("not reachable: {e}"),
                "check the database settings and that the server is running",
            );
        } else {
            r.ok("database", subject.clone(), "reachable");
            match p.pending.as_deref() {
                Some([]) => r.ok("database", "migrations", "all applied"),
                Some(pending) if cfg.prepare.migrate => r.info("database", "migrations", format!("{} pending ({}); `run` applies them", pending.len(), abbreviate(pending))),
                Some(pending) => r.warn("database", "migrations", format!("{} pending ({}) and prepare.migrate = false", pending.len(), abbreviate(pending)), "run `bitpoll-launcher manage --config FILE -- migrate` or enable prepare.migrate"),
                None => {}
            }
        }
    }
    if let Some(m) = &p.manifest {
        if m.exists {
            r.ok(
                "app",
                "static files",
                format!("manifest {} present", m.path),
            );
        } else if cfg.prepare.collectstatic {
            r.info(
                "app",
                "static files",
                format!("no manifest at {} yet; `run` collects static files", m.path),
            );
        } else {
            r.error(
                "app",
                "static files",
                format!(
                    "no manifest at {} and prepare.collectstatic = false: every page will fail",
                    m.path
                ),
                "enable prepare.collectstatic or run collectstatic at deploy time",
            );
        }
    }
    if let Some(e) = &p.static_error {
        r.warn(
            "app",
            "static files",
            e.clone(),
            "check STATIC_ROOT and STORAGES",
        );
    }
    if cfg.prepare.compilemessages {
        match &p.msgfmt {
            Some(path) => r.ok("app", "msgfmt", format!("found at {path}")),
            None => r.error("app", "msgfmt", "GNU gettext's msgfmt is not on the app's PATH, and prepare.compilemessages = true", "install gettext, or compile the catalogs at build time and set compilemessages = false"),
        }
    }
}

fn abbreviate(items: &[String]) -> String {
    if items.len() <= 3 {
        items.join(", ")
    } else {
        format!("{}, ...", items[..3].join(", "))
    }
}

fn check_server(cfg: &Config, uid: Option<Uid>, probe: Option<&Probe>, r: &mut Report) {
    let cmd = &cfg.server.command;
    let program = Path::new(&cmd[0]);
    let executable = std::fs::metadata(program)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if executable {
        r.ok("server", program.display().to_string(), "is executable");
    } else {
        r.error(
            "server",
            program.display().to_string(),
            "is not an executable file",
            "fix server.command[0]",
        );
    }
    let is_gunicorn = program
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("gunicorn"));
    if is_gunicorn {
        match probe.and_then(|p| p.gunicorn.as_deref()) {
            Some(v) => {
                r.ok(
                    "server",
                    "gunicorn",
                    format!("version {v} in the app's environment"),
                );
                let major: u32 = v
                    .split('.')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                if major >= 27
                    && !cmd.iter().any(|a| {
                        a.starts_with("--no-control-socket") || a.starts_with("--control-socket")
                    })
                {
                    r.warn(
                        "server",
                        "gunicorn",
                        "gunicorn 27 creates a control socket in the home directory by default",
                        "add \"--no-control-socket\" to server.command",
                    );
                }
            }
            None if probe.is_some() => r.error(
                "server",
                "gunicorn",
                "not installed in the app's Python environment",
                "install gunicorn into the virtualenv",
            ),
            None => {}
        }
    }
    for bind in bind_addresses(cmd) {
        check_port(&bind, uid, r);
    }
}

/// The TCP addresses of --bind/-b options.
fn bind_addresses(cmd: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = cmd.iter().peekable();
    while let Some(a) = it.next() {
        let value = if a == "--bind" || a == "-b" {
            it.next().cloned()
        } else {
            a.strip_prefix("--bind=").map(str::to_string)
        };
        if let Some(v) = value {
            if !v.starts_with("unix:") && !v.starts_with("fd://") {
                out.push(v);
            }
        }
    }
    out
}

fn check_port(bind: &str, uid: Option<Uid>, r: &mut Report) {
    let addr = if bind.contains(':') {
        bind.to_string()
    } else {
        format!("{bind}:8000")
    };
    let subject = format!("--bind {bind}");
    let port: Option<u16> = addr.rsplit(':').next().and_then(|p| p.parse().ok());
    // Look for a listener first: binding the port, even for an instant, could make the
    // real server fail to start at that moment.
    let inodes = port.map(listening_inodes).unwrap_or_default();
    if inodes.is_empty() {
        match std::net::TcpListener::bind(&addr) {
            Ok(listener) => {
                drop(listener);
                r.ok("server", subject, "the address is free");
                return;
            }
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
                r.error(
                    "server",
                    subject,
                    format!("cannot be bound: {e}"),
                    "use an address of this host",
                );
                return;
            }
            Err(_) => {}
        }
    }
    match holder_of(&inodes) {
        Some((pid, puid, comm)) if uid.is_some_and(|u| u.as_raw() == puid) => {
            r.ok(
                "server",
                subject,
                format!("held by this service ({comm}, pid {pid})"),
            );
        }
        Some((pid, _, comm)) => r.error(
            "server",
            subject,
            format!("already in use by {comm} (pid {pid})"),
            "stop that process or bind another port",
        ),
        None if !nix::unistd::geteuid().is_root() => r.warn(
            "server",
            subject,
            "already in use; as this user the holder cannot be seen",
            "run check as root to see whether the service itself holds it",
        ),
        None => r.error(
            "server",
            subject,
            "already in use by another process",
            "stop it or bind another port",
        ),
    }
}

/// Socket inodes listening on a TCP port (any local address), from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "ADDR:PORT" in hex; st 0A = LISTEN; inode is field 9.
            if f.len() > 9
                && f[3] == "0A"
                && f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
            {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    inodes
}

/// The process holding one of these sockets: (pid, uid, command name).
fn holder_of(inodes: &[String]) -> Option<(u32, u32, String)> {
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == target) {
                    let uid = std::fs::metadata(entry.path())
                        .map(|m| m.uid())
                        .unwrap_or(u32::MAX);
                    let comm = std::fs::read_to_string(entry.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    return Some((pid, uid, comm));
                }
            }
        }
    }
    None
}

/// The unit this process runs in, from its cgroup path ("/system.slice/bitpoll.service").
fn current_unit() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .filter_map(|l| l.rsplit('/').next())
        .find(|name| name.ends_with(".service"))
        .map(str::to_string)
}

fn check_unit(cfg: &Config, unit: &str, user_exists: bool, r: &mut Report) {
    let out = std::process::Command::new("systemctl")
        .args([
            "show",
            unit,
            "-p",
            "LoadState,Type,NotifyAccess,ProtectSystem,CapabilityBoundingSet,User",
        ])
        .stdin(Stdio::null())
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            r.warn(
                "systemd",
                unit,
                format!(
                    "cannot query systemd: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                "run check on the host that runs the unit",
            );
            return;
        }
        Err(e) => {
            r.warn(
                "systemd",
                unit,
                format!("cannot run systemctl: {e}"),
                "run check on the host that runs the unit",
            );
            return;
        }
    };
    let props: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    if props.get("LoadState") != Some(&"loaded") {
        r.error(
            "systemd",
            unit,
            format!(
                "is not loaded (LoadState={})",
                props.get("LoadState").unwrap_or(&"?")
            ),
            "install the unit (bitpoll-launcher unit) and systemctl daemon-reload",
        );
        return;
    }
    match props.get("Type") {
        Some(&"notify") | Some(&"notify-reload") => {
            r.ok("systemd", format!("{unit} Type"), "notify")
        }
        other => r.error(
            "systemd",
            format!("{unit} Type"),
            format!(
                "is {}, so systemd does not wait for the server's READY=1",
                other.unwrap_or(&"?")
            ),
            "set Type=notify",
        ),
    }
    match props.get("NotifyAccess") {
        Some(&"main") => r.ok("systemd", format!("{unit} NotifyAccess"), "main"),
        Some(&"all") | Some(&"exec") => r.warn(
            "systemd",
            format!("{unit} NotifyAccess"),
            "lets processes other than the main one (gunicorn's workers) notify",
            "set NotifyAccess=main",
        ),
        other => r.error(
            "systemd",
            format!("{unit} NotifyAccess"),
            format!(
                "is {}: the launcher's STATUS and gunicorn's READY=1 are ignored",
                other.unwrap_or(&"?")
            ),
            "set NotifyAccess=main",
        ),
    }
    let runs_as_root = props
        .get("User")
        .is_none_or(|u| u.is_empty() || *u == "root");
    if runs_as_root {
        let caps = props.get("CapabilityBoundingSet").copied().unwrap_or("");
        let needed = ["cap_setuid", "cap_setgid", "cap_setpcap", "cap_chown"];
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !caps.contains(c))
            .collect();
        if missing.is_empty() {
            r.ok(
                "systemd",
                format!("{unit} CapabilityBoundingSet"),
                "allows the privilege drop",
            );
        } else {
            r.error(
                "systemd",
                format!("{unit} CapabilityBoundingSet"),
                format!("lacks {}", missing.join(", ")),
                "use the hardening list of nixos/hardening.toml (bitpoll-launcher unit)",
            );
        }
        let strict = matches!(props.get("ProtectSystem"), Some(&"strict") | Some(&"full"));
        if strict && cfg.service.create_user && !user_exists {
            r.error(
                "systemd",
                format!("{unit} ProtectSystem"),
                "makes /etc read-only, so the missing user cannot be created at start",
                "declare the user ahead (bitpoll-launcher sysusers) and set create_user = false",
            );
        }
    } else {
        r.info(
            "systemd",
            unit,
            "runs the launcher unprivileged (User= set): account and directories are only verified",
        );
    }
}

fn print(report: &Report, args: &CheckArgs) {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for sev in [
        Severity::Ok,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
    ] {
        counts.insert(
            sev.label(),
            report.findings.iter().filter(|f| f.severity == sev).count(),
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let json = JsonReport {
            version: 1,
            config: args.config.display().to_string(),
            checked_as_uid: nix::unistd::geteuid().as_raw(),
            summary: counts,
            findings: &report.findings,
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return;
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut groups: Vec<&'static str> = GROUP_ORDER.to_vec();
    for f in &report.findings {
        if !groups.contains(&f.group) {
            groups.push(f.group);
        }
    }
    for g in groups
        .into_iter()
        .filter(|g| report.findings.iter().any(|f| f.group == *g))
    {
        let _ = writeln!(out, "{g}:");
        for f in report.findings.iter().filter(|f| f.group == g) {
            let label = format!("{:<7}", f.severity.label());
            let label = if colour {
                format!("{}{label}\x1b[0m", f.severity.colour())
            } else {
                label
            };
            let _ = write!(out, "  {label} {}: {}", f.subject, f.message);
            if let Some(fix) = &f.fix {
                let _ = write!(out, "\n          fix: {fix}");
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(
        out,
        "{} error(s), {} warning(s), {} info, {} ok",
        counts["error"], counts["warning"], counts["info"], counts["ok"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_are_found_in_every_spelling() {
        let cmd: Vec<String> = [
            "/g",
            "--bind",
            "127.0.0.1:3008",
            "-b",
            "[::1]:9",
            "--bind=0.0.0.0:80",
            "--bind",
            "unix:/run/x.sock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            bind_addresses(&cmd),
            ["127.0.0.1:3008", "[::1]:9", "0.0.0.0:80"]
        );
    }

    #[test]
    fn severity_orders_from_ok_to_error() {
        assert!(
            Severity::Ok < Severity::Info
                && Severity::Info < Severity::Warning
                && Severity::Warning < Severity::Error
        );
    }
}
