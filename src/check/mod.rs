//! `bitpoll-launcher check`: validate a deployment read-only and say how to fix each
//! problem, like `nginx -t`, but reporting every problem at once.
//!
//! It observes the host with the same facts layer as `run` (crate::observe) and prints
//! the very same judgements (launcher_plan::judge) as findings: what `run` would refuse is
//! an error here, what it would repair or create is info, and each preparation step says
//! whether the next start runs or skips it and why. On top come the probes only check
//! makes: the app itself (probe.rs, Django's `check --deploy`, the database as Django sees
//! it), the server's ports (server.rs) and the systemd unit (systemd.rs). It never writes
//! anything: no directory is created, no secret generated, no bytecode written, no
//! database file opened for writing.

mod probe;
mod report;
mod server;
mod systemd;

use std::path::{Path, PathBuf};

use launcher_config::Config;
use launcher_plan::env::{self, Purpose};
use launcher_plan::facts::{Facts, Observer, View};
use launcher_plan::finding::Severity;
use launcher_plan::judge::{self, Command, SecretPlan, Start};
use launcher_plan::rule::Rule;
use launcher_plan::secret::SecretValue;

use crate::cli::CheckArgs;
use crate::exit::Exit;
use crate::observe::{self, Options, Postgres};
use report::Report;

/// Who runs the check, relative to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Root,
    ServiceUser,
    Other,
}

pub fn run(args: &CheckArgs) -> Result<u8, Exit> {
    let mut report = Report::default();
    let cfg = match crate::config::load(&args.config) {
        Ok(cfg) => {
            report.ok(
                Rule::ConfigValid,
                args.config.display().to_string(),
                "valid",
            );
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
                report.error(Rule::ConfigInvalid, subject, p.message.clone(), fix);
            }
            None
        }
    };
    if let Some(cfg) = &cfg {
        check_deployment(cfg, args, &mut report);
        // What the admin accepts counts as info; an entry that does not apply is a warning.
        let django_checked = report.findings.iter().any(|f| {
            f.rule == Rule::DjangoCheck
                || (f.rule == Rule::AppDeployCheck && f.severity == Severity::Ok)
        });
        let unused =
            launcher_plan::accept::apply(&cfg.check.accept, &mut report.findings, django_checked);
        for f in unused {
            report.push(f);
        }
    }
    report::print(&report, &args.config, args.json);
    Ok(match report.worst() {
        Severity::Ok | Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
    })
}

fn check_deployment(cfg: &Config, args: &CheckArgs, r: &mut Report) {
    let unit = args.unit.as_deref().unwrap_or("bitpoll");
    let mut ids = match launcher_sys::privs::Identity::of_process() {
        Ok(ids) => ids,
        Err(e) => {
            r.error(
                Rule::CheckIdentity,
                "identity",
                e.to_string(),
                "check that /proc is mounted",
            );
            return;
        }
    };
    let facts = observe::observe(
        &mut ids,
        cfg,
        &Options {
            view: View::Outside,
            unit,
            postgres: Postgres::Once,
        },
    );
    let viewer = match facts.observer {
        Observer::Root => Viewer::Root,
        Observer::ServiceUser => Viewer::ServiceUser,
        Observer::Other => Viewer::Other,
    };
    if viewer == Viewer::Other {
        r.warn(
            Rule::CheckPartialView,
            format!("uid {}", facts.euid),
            format!(
                "running as neither root nor {}: files only they can read were not checked, and the app was probed as uid {}",
                cfg.service.user, facts.euid
            ),
            format!(
                "run `sudo bitpoll-launcher check --config {}` for a complete check",
                args.config.display()
            ),
        );
    }

    // Exactly what `run` judges before it changes anything, and what the next start does
    // about preparation.
    let mut start = judge::start(cfg, &facts, Command::Check, crate::now());
    for f in &start.findings {
        r.push(f.clone());
    }
    let values = probe_values(&mut start);
    let account = launcher_sys::account::lookup(&cfg.service.user, &cfg.service.group)
        .ok()
        .flatten();
    let probe = probe(
        cfg,
        &facts,
        account.as_ref(),
        viewer,
        &values,
        &start.locale_paths(),
        r,
    );
    let uid = facts.account.user.as_ref().map(|u| u.uid);
    if let Some(p) = &probe {
        let first = r.findings.len();
        probe::report_probe(cfg, p, uid, r);
        if viewer == Viewer::Other {
            // The probe ran as this user, not as the service user: what failed for it
            // may well work for the service.
            for f in &mut r.findings[first..] {
                if f.severity == Severity::Error {
                    f.severity = Severity::Warning;
                    f.message = format!(
                        "{} (seen as uid {}, not as the service user)",
                        f.message, facts.euid
                    );
                }
            }
        }
    }
    server::check_server(cfg, uid.map(Into::into), probe.as_ref(), r);
    if let Some(unit) = args.unit.as_deref().map(str::to_string).or_else(|| {
        facts
            .systemd
            .invocation
            .then(|| systemd::current_unit().unwrap_or_else(|| "bitpoll".into()))
    }) {
        systemd::check_unit(cfg, &unit, facts.account.user.is_some(), r);
    }
}

/// The values the probe starts the app with: every secret the judgement hands over, and a
/// throwaway value for one the first start would generate (never stored).
fn probe_values(start: &mut Start) -> Vec<(String, SecretValue)> {
    let mut values = start.take_values();
    for plan in &start.secrets {
        if let SecretPlan::Generate { name, kind } = plan {
            let mut failed = false;
            let v = launcher_plan::secret::generate(*kind, |b| {
                failed |= launcher_sys::random_bytes(b).is_err()
            });
            if !failed {
                values.push((name.clone(), v));
            }
        }
    }
    values
}

/// What the probe answers about; named when it cannot run.
const PROBED: &str = "Django's start with the settings, check --deploy, the static files, the database as Django sees it and gunicorn's version";

/// Start the app probe when everything it needs is there; otherwise say what was not
/// checked. Before the first start (no account yet) the app is probed as a stand-in: as
/// root, a uid/gid no account or process holds; otherwise as the caller; either way with a
/// throw-away data directory, removed afterwards.
fn probe(
    cfg: &Config,
    facts: &Facts,
    account: Option<&launcher_sys::account::Account>,
    viewer: Viewer,
    values: &[(String, SecretValue)],
    locale_paths: &[PathBuf],
    r: &mut Report,
) -> Option<probe::Probe> {
    if !facts.programs.python_executable {
        r.info(
            Rule::AppNotProbed,
            "probe",
            format!(
                "the app was not probed: app.python cannot be run, so {PROBED} were not checked"
            ),
        );
        return None;
    }
    let missing: Vec<&str> = cfg
        .secrets
        .keys()
        .filter(|k| !values.iter().any(|(n, _)| n == *k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        r.info(
            Rule::AppNotProbed,
            "probe",
            format!(
                "the app was not started: secret(s) {} could not be loaded here, so {PROBED} were not checked",
                missing.join(", ")
            ),
        );
        return None;
    }
    let build = |cfg: &Config, user: &str, locale_paths: &[PathBuf]| {
        env::build(
            &env::Inputs {
                config: cfg,
                secrets: values,
                inherited: &facts.inherited,
                user,
                home: &cfg.service.data_dir,
                locale_paths,
            },
            Purpose::Probe,
        )
    };
    if let Some(account) = account {
        // The app as an admin's command starts it.
        let app_env = build(cfg, &account.user, locale_paths);
        let (who, paths) = match viewer {
            Viewer::Root => (
                probe::As::Account(account, true),
                probe::writable_paths(cfg, facts),
            ),
            Viewer::ServiceUser => (
                probe::As::Account(account, false),
                probe::writable_paths(cfg, facts),
            ),
            // Another user's view of write access says nothing about the service user's.
            Viewer::Other => (probe::As::Caller, Vec::new()),
        };
        return probe::probe_app(cfg, who, app_env, &paths, true, r);
    }
    first_start_probe(cfg, viewer, locale_paths, build, r)
}

/// The probe before the first start (see [`probe`]).
fn first_start_probe(
    cfg: &Config,
    viewer: Viewer,
    locale_paths: &[PathBuf],
    build: impl Fn(&Config, &str, &[PathBuf]) -> env::Env,
    r: &mut Report,
) -> Option<probe::Probe> {
    let stand_in = match viewer {
        Viewer::Root => match launcher_sys::stand_in::pick() {
            Ok(id) => Some(id),
            Err(e) => {
                r.info(
                    Rule::AppNotProbed,
                    "probe",
                    format!(
                        "the service account does not exist yet and the app was not probed: {e}; {PROBED} were not checked"
                    ),
                );
                return None;
            }
        },
        _ => None,
    };
    let dir = match launcher_sys::stand_in::ThrowAway::create(stand_in) {
        Ok(dir) => dir,
        Err(e) => {
            r.info(
                Rule::AppNotProbed,
                "probe",
                format!(
                    "the service account does not exist yet and the app was not probed: cannot make a throw-away data directory ({e}); {PROBED} were not checked"
                ),
            );
            return None;
        }
    };
    // The app's view of the data directory, moved to the throw-away one.
    let data_dir = &cfg.service.data_dir;
    let moved = |p: &Path| match p.strip_prefix(data_dir) {
        Ok(rest) => dir.path().join(rest),
        Err(_) => p.to_path_buf(),
    };
    let mut probed = cfg.clone();
    probed.service.data_dir = dir.path().to_path_buf();
    if let launcher_config::Database::Sqlite { path } = &mut probed.database {
        *path = moved(path);
    }
    let locale_paths: Vec<PathBuf> = locale_paths.iter().map(|p| moved(p)).collect();
    let app_env = build(&probed, &cfg.service.user, &locale_paths);
    let who = match stand_in {
        Some(id) => {
            r.info(
                Rule::AppStandIn,
                "probe",
                format!(
                    "the service account does not exist yet: the app was probed as uid and gid {id} (held by no account or process, as systemd's DynamicUser does) with the throw-away data directory {}, removed afterwards; write access and the database as Django sees it are checked once the account exists",
                    dir.path().display()
                ),
            );
            probe::As::StandIn(id)
        }
        None => {
            r.info(
                Rule::AppStandIn,
                "probe",
                format!(
                    "the service account does not exist yet: the app was probed as this user with the throw-away data directory {}, removed afterwards",
                    dir.path().display()
                ),
            );
            probe::As::Caller
        }
    };
    let mut answer = probe::probe_app(&probed, who, app_env, &[], false, r);
    if let Some(a) = &mut answer {
        a.relocate(dir.path(), data_dir);
    }
    drop(dir);
    answer
}
