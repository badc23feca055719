//! The server: gunicorn in the app's environment, and whether its --bind addresses are
//! free (or held by this very service).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use launcher_config::Config;
use launcher_plan::rule::Rule;
use launcher_sys::Uid;

use super::probe::Probe;
use super::report::Report;

/// gunicorn's version and options, and each --bind address (the program itself is
/// judged with the other programs in launcher_plan::judge::programs).
pub fn check_server(cfg: &Config, uid: Option<Uid>, probe: Option<&Probe>, r: &mut Report) {
    let cmd = &cfg.server.command;
    let program = Path::new(&cmd[0]);
    let is_gunicorn = program
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("gunicorn"));
    if is_gunicorn {
        match probe.and_then(|p| p.gunicorn.as_deref()) {
            Some(v) => {
                r.ok(
                    Rule::ServerGunicorn,
                    "gunicorn",
                    format!("version {v} in the app's environment"),
                );
                // The control socket (and --no-control-socket) came with gunicorn 25.1.0.
                let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                if version >= (25, 1)
                    && !cmd.iter().any(|a| {
                        a.starts_with("--no-control-socket") || a.starts_with("--control-socket")
                    })
                {
                    r.warn(
                        Rule::ServerControlSocket,
                        "gunicorn",
                        "gunicorn 25.1 or newer creates a control socket in the home directory by default",
                        "add \"--no-control-socket\" to server.command",
                    );
                }
            }
            None if probe.is_some() => r.error(
                Rule::ServerGunicorn,
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
                r.ok(Rule::ServerBind, subject, "the address is free");
                return;
            }
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
                r.error(
                    Rule::ServerBind,
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
        Some((1, _, comm)) => {
            r.ok(
                Rule::ServerBind,
                subject,
                format!("held by the service manager ({comm}, pid 1): a socket unit passes it to the server"),
            );
        }
        Some((pid, puid, comm)) if uid.is_some_and(|u| u.as_raw() == puid) => {
            r.ok(
                Rule::ServerBind,
                subject,
                format!("held by this service ({comm}, pid {pid})"),
            );
        }
        Some((pid, _, comm)) => r.error(
            Rule::ServerBind,
            subject,
            format!("already in use by {comm} (pid {pid})"),
            "stop that process or bind another port",
        ),
        None if !nix::unistd::geteuid().is_root() => r.warn(
            Rule::ServerBind,
            subject,
            "already in use; as this user the holder cannot be seen",
            "run check as root to see whether the service itself holds it",
        ),
        None => r.error(
            Rule::ServerBind,
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
}
