//! The app probe: the interpreter runs check's probe script (probe.py) as the service
//! user with the app's environment and answers what only the app knows: Django's
//! version and `check --deploy`, the database as Django sees it, pending migrations, the
//! static manifest, gunicorn and msgfmt on the app's PATH, write access to the data tree.
//! It never writes (no bytecode, no database file created, no state-changing command).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use launcher_config::{Config, Database};
use launcher_plan::facts::{DirState, Facts};
use launcher_plan::finding::{Finding, Severity};
use launcher_plan::rule::Rule;

use super::report::Report;

const PROBE: &str = include_str!("probe.py");
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// The probe's answer (check.py).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Probe {
    python: Option<String>,
    #[serde(default)]
    access: BTreeMap<String, Access>,
    pub gunicorn: Option<String>,
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
    encrypted: Option<Encrypted>,
}

impl Probe {
    /// The answer as if the probe had run on `to` instead of the throw-away `from` data
    /// directory: the paths it names are the deployment's.
    pub fn relocate(&mut self, from: &std::path::Path, to: &std::path::Path) {
        let moved = |p: &mut String| {
            if let Ok(rest) = std::path::Path::new(p.as_str()).strip_prefix(from) {
                *p = to.join(rest).display().to_string();
            }
        };
        if let Some(m) = &mut self.manifest {
            moved(&mut m.path);
        }
        if let Some(name) = self.db.as_mut().and_then(|d| d.name.as_mut()) {
            moved(name);
        }
    }
}

/// One stored encrypted value, decrypted (or not) with the configured keys.
#[derive(Debug, serde::Deserialize)]
struct Encrypted {
    field: String,
    ok: bool,
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
    #[serde(default)]
    exists: bool,
    /// Not connected to: the probe was told to leave the database alone.
    #[serde(default)]
    skipped: bool,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    path: String,
    exists: bool,
}

/// Who the probe runs as.
pub enum As<'a> {
    /// The service user; `privileged`: check runs as root and drops to the account.
    Account(&'a launcher_sys::account::Account, bool),
    /// A uid/gid without an account, before the first start (launcher_sys::stand_in).
    StandIn(u32),
    /// The user running check: neither root nor the service user.
    Caller,
}

/// Paths the service user must be able to write, limited to what the observer found to
/// be real directories and regular files: the probe must never look through a link.
pub fn writable_paths(cfg: &Config, facts: &Facts) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = facts
        .tree
        .dirs
        .iter()
        .filter(|d| matches!(d.state, DirState::Present { .. }))
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
        if facts
            .database
            .sqlite
            .as_ref()
            .is_some_and(|d| d.kind == launcher_plan::facts::FileKind::Regular)
        {
            paths.push(path.clone());
        }
    }
    paths
}

/// Run the probe as `who` with the app's environment `app_env`: whether each of `paths`
/// is writable, and with `database` the database as Django sees it.
pub fn probe_app(
    cfg: &Config,
    who: As<'_>,
    mut app_env: launcher_plan::env::Env,
    paths: &[PathBuf],
    database: bool,
    r: &mut Report,
) -> Option<Probe> {
    let python = &cfg.app.python;
    app_env.set("PYTHONDONTWRITEBYTECODE".into(), "1".into());
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let options = serde_json::json!({ "database": database });
    let mut cmd = std::process::Command::new(python);
    cmd.arg("-c")
        .arg(PROBE)
        .arg(serde_json::to_string(&paths).unwrap_or_else(|_| "[]".into()))
        .arg(options.to_string())
        .current_dir(&cfg.app.source_dir)
        .env_clear()
        .envs(app_env.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The probe runs the app's code: in a session of its own, without the admin's
    // terminal, and nothing the launcher inherited reaches it.
    launcher_sys::session::new_session_in_child(&mut cmd);
    launcher_sys::fds::close_in_child(&mut cmd, 0..0);
    let target = match who {
        As::Account(account, privileged) => Some(launcher_sys::privs::Target::for_account(
            account, privileged,
        )),
        As::StandIn(id) => Some(launcher_sys::privs::Target::stand_in(id)),
        As::Caller => None,
    };
    if let Some(target) = target {
        match target {
            Ok(t) => launcher_sys::privs::drop_in_child(&mut cmd, t),
            Err(e) => {
                r.error(
                    Rule::PythonProbeFailed,
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
                Rule::PythonProbeFailed,
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
                Rule::PythonProbeFailed,
                python.display().to_string(),
                format!("the probe failed ({}): {}", output.status, tail.join(" | ")),
                "run the interpreter by hand as the service user to see why",
            );
            None
        }
    }
}

/// At most this much of the probe's stdout (its answer is one JSON line) and stderr is
/// kept: the probe runs the app's code, which may print without end.
const PROBE_STDOUT_MAX: u64 = 1024 * 1024;
const PROBE_STDERR_MAX: u64 = 64 * 1024;

fn run_with_timeout(
    mut cmd: std::process::Command,
    timeout: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Read a bounded prefix of each stream, then drain the rest without keeping it.
    let bounded = |stream: Option<Box<dyn Read + Send>>, max: u64| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut s) = stream {
                let _ = (&mut s).take(max).read_to_end(&mut kept);
                let _ = std::io::copy(&mut s, &mut std::io::sink());
            }
            kept
        })
    };
    let boxed = |s: Option<Box<dyn Read + Send>>| s;
    let out = bounded(
        boxed(child.stdout.take().map(|s| Box::new(s) as _)),
        PROBE_STDOUT_MAX,
    );
    let err = bounded(
        boxed(child.stderr.take().map(|s| Box::new(s) as _)),
        PROBE_STDERR_MAX,
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(status) => status?,
        Err(_) => {
            // The probe leads its own process group: whatever it started goes too.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(std::io::Error::other(format!(
                "no answer within {} s",
                timeout.as_secs()
            )));
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

pub fn report_probe(cfg: &Config, p: &Probe, uid: Option<u32>, r: &mut Report) {
    let python = cfg.app.python.display().to_string();
    r.ok(
        Rule::PythonInterpreter,
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
                Rule::DataDirWriteAccess,
                format!("write access to {path}"),
                format!("{who} can write"),
            );
        } else {
            r.error(
                Rule::DataDirWriteAccess,
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
            Rule::AppDjango,
            "django",
            format!("cannot be imported: {e}"),
            "install Django into the interpreter's environment",
        );
        return;
    }
    r.ok(
        Rule::AppDjango,
        "django",
        format!("Django {}", p.django.as_deref().unwrap_or("?")),
    );
    if let Some(e) = &p.setup_error {
        r.error(
            Rule::AppSettings,
            cfg.app.settings_module.clone(),
            format!("the app does not start: {e}"),
            "fix the settings or the app's environment ([environment], [secrets])",
        );
        return;
    }
    r.ok(
        Rule::AppSettings,
        cfg.app.settings_module.clone(),
        "imports and Django starts with the app's environment",
    );
    if let Some(e) = &p.checks_error {
        r.error(
            Rule::AppDeployCheck,
            "manage.py check --deploy",
            e.clone(),
            "run manage.py check --deploy as the service user",
        );
    }
    let checks = p.checks.as_deref().unwrap_or_default();
    if checks.is_empty() && p.checks_error.is_none() {
        r.ok(
            Rule::AppDeployCheck,
            "manage.py check --deploy",
            "no issues",
        );
    }
    for c in checks {
        let fix = c
            .hint
            .clone()
            .unwrap_or_else(|| "see Django's deployment checklist".into());
        // The app's cookie settings come from the environment contract; the HTTPS
        // settings do not apply to a site served over plain HTTP (a test host) or behind
        // a TLS proxy that sets them itself.
        let id = c.id.as_deref().unwrap_or("unnamed");
        let fix = match id {
            "security.W012" | "security.W016" => format!(
                "{fix}; when the site is served over HTTPS, set BITPOLL_SECURE_COOKIES = \"true\" in [environment]; on a site served over plain HTTP, accept it: [check] accept = [\"django:{id}\"]"
            ),
            "security.W004" | "security.W008" => format!(
                "{fix}; where a TLS proxy in front does this, or the site is served over plain HTTP, accept it: [check] accept = [\"django:{id}\"]"
            ),
            _ => fix,
        };
        let severity = match c.level {
            l if l >= 40 => Severity::Error,
            l if l >= 30 => Severity::Warning,
            _ => Severity::Info,
        };
        let fix = (severity >= Severity::Warning).then_some(fix);
        r.push(Finding::django(
            severity,
            id,
            format!("check --deploy {id}"),
            c.msg.clone(),
            fix,
        ));
    }
    if let Some(db) = &p.db {
        let subject = match (&db.vendor[..], &db.name) {
            ("sqlite", Some(name)) => format!("sqlite {name}"),
            (vendor, _) => vendor.to_string(),
        };
        if db.skipped {
            r.info(
                Rule::DatabaseApp,
                subject,
                "not probed as Django sees it before the first start: Django's connection depends on the service user",
            );
        } else if !db.exists {
            r.info(
                Rule::DatabaseApp,
                subject,
                "does not exist yet; migrate creates it",
            );
        } else if let Some(e) = &db.error {
            r.error(
                Rule::DatabaseApp,
                subject,
                format!("not reachable: {e}"),
                "check the database settings and that the server is running",
            );
        } else {
            r.ok(Rule::DatabaseApp, subject.clone(), "reachable");
            match p.pending.as_deref() {
                Some([]) => r.ok(Rule::DatabaseMigrations, "migrations", "all applied"),
                Some(pending) if cfg.prepare.migrate => r.info(Rule::DatabaseMigrations, "migrations", format!("{} pending ({}); `run` applies them", pending.len(), abbreviate(pending))),
                Some(pending) => r.warn(Rule::DatabaseMigrations, "migrations", format!("{} pending ({}) and prepare.migrate = false", pending.len(), abbreviate(pending)), "run `bitpoll-launcher manage --config FILE -- migrate` or enable prepare.migrate"),
                None => {}
            }
        }
    }
    if let Some(e) = &p.encrypted {
        let subject = format!("encrypted data ({})", e.field);
        if e.ok {
            r.ok(
                Rule::DatabaseEncrypted,
                subject,
                "a stored value decrypts with the configured FIELD_ENCRYPTION_KEY",
            );
        } else {
            r.error(
                Rule::DatabaseEncrypted,
                subject,
                "a stored value does not decrypt with the configured FIELD_ENCRYPTION_KEY: the app shows ciphertext instead of the data",
                "configure the key the data was encrypted with (or a rotation list \"NEW,OLD\" holding it)",
            );
        }
    }
    if let Some(m) = &p.manifest {
        if m.exists {
            r.ok(
                Rule::AppStaticFiles,
                "static files",
                format!("manifest {} present", m.path),
            );
        } else if cfg.prepare.collectstatic {
            r.info(
                Rule::AppStaticFiles,
                "static files",
                format!("no manifest at {} yet; `run` collects static files", m.path),
            );
        } else {
            r.error(
                Rule::AppStaticFiles,
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
            Rule::AppStaticFiles,
            "static files",
            e.clone(),
            "check STATIC_ROOT and STORAGES",
        );
    }
    if cfg.prepare.compilemessages {
        match &p.msgfmt {
            Some(path) => r.ok(Rule::AppMsgfmt, "msgfmt", format!("found at {path}")),
            None => r.error(Rule::AppMsgfmt, "msgfmt", "GNU gettext's msgfmt is not on the app's PATH, and prepare.compilemessages = true", "install gettext, or compile the catalogs at build time and set compilemessages = false"),
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
