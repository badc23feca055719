//! The systemd unit, when asked (--unit) or when check runs inside one: the settings the
//! launcher depends on (Type=notify, NotifyAccess=main, the capabilities of the drop).

use std::collections::BTreeMap;
use std::process::Stdio;

use launcher_config::{Config, Ready};
use launcher_plan::rule::Rule;

use super::report::Report;

/// The unit this process runs in, from its cgroup path ("/system.slice/bitpoll.service").
pub fn current_unit() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .filter_map(|l| l.rsplit('/').next())
        .find(|name| name.ends_with(".service"))
        .map(str::to_string)
}

pub fn check_unit(cfg: &Config, unit: &str, user_exists: bool, r: &mut Report) {
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
                Rule::SystemdQuery,
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
                Rule::SystemdQuery,
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
            Rule::SystemdNotLoaded,
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
            r.ok(Rule::SystemdType, format!("{unit} Type"), "notify")
        }
        other => r.error(
            Rule::SystemdType,
            format!("{unit} Type"),
            format!(
                "is {}, so systemd does not wait for the server's READY=1",
                other.unwrap_or(&"?")
            ),
            "set Type=notify",
        ),
    }
    let worker = cfg.server.ready.from_worker();
    match (props.get("NotifyAccess"), worker) {
        (Some(&"main"), false) if cfg.server.ready == Ready::Answer => r.ok(
            Rule::SystemdNotifyAccess,
            format!("{unit} NotifyAccess"),
            "main (server.ready = \"answer\": gunicorn's arbiter sends READY=1 once a worker answered its warm-up request)",
        ),
        (Some(&"main"), false) => r.ok(Rule::SystemdNotifyAccess, format!("{unit} NotifyAccess"), "main"),
        (Some(&"all"), true) => r.ok(
            Rule::SystemdNotifyAccess,
            format!("{unit} NotifyAccess"),
            "all (server.ready = \"worker\": a gunicorn worker sends READY=1)",
        ),
        (Some(&"all") | Some(&"exec"), false) => r.warn(
            Rule::SystemdNotifyAccess,
            format!("{unit} NotifyAccess"),
            "lets processes other than the main one (gunicorn's workers) notify",
            "set NotifyAccess=main",
        ),
        (Some(&"main") | Some(&"exec"), true) => r.error(
            Rule::SystemdNotifyAccess,
            format!("{unit} NotifyAccess"),
            "ignores the READY=1 of gunicorn's worker (server.ready = \"worker\"), so the start times out",
            "set NotifyAccess=all (bitpoll-launcher unit renders it)",
        ),
        (other, _) => r.error(
            Rule::SystemdNotifyAccess,
            format!("{unit} NotifyAccess"),
            format!(
                "is {}: the launcher's STATUS and gunicorn's READY=1 are ignored",
                other.unwrap_or(&"?")
            ),
            if worker {
                "set NotifyAccess=all"
            } else {
                "set NotifyAccess=main"
            },
        ),
    }
    let runs_as_root = props
        .get("User")
        .is_none_or(|u| u.is_empty() || *u == "root");
    if runs_as_root {
        let caps = props.get("CapabilityBoundingSet").copied().unwrap_or("");
        let needed = ["cap_setuid", "cap_setgid", "cap_setpcap"];
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !caps.contains(c))
            .collect();
        if missing.is_empty() {
            r.ok(
                Rule::SystemdCapabilities,
                format!("{unit} CapabilityBoundingSet"),
                "allows the privilege drop",
            );
        } else {
            r.error(
                Rule::SystemdCapabilities,
                format!("{unit} CapabilityBoundingSet"),
                format!("lacks {}", missing.join(", ")),
                "use the hardening list of nixos/hardening.toml (bitpoll-launcher unit)",
            );
        }
        let strict = matches!(props.get("ProtectSystem"), Some(&"strict") | Some(&"full"));
        if strict && cfg.service.create_user && !user_exists {
            r.error(
                Rule::SystemdProtectSystem,
                format!("{unit} ProtectSystem"),
                "makes /etc read-only, so the missing user cannot be created at start",
                "declare the user ahead (bitpoll-launcher sysusers) and set create_user = false",
            );
        }
    } else {
        r.info(
            Rule::SystemdUnprivileged,
            unit,
            "runs the launcher unprivileged (User= set): account and directories are only verified",
        );
    }
}
