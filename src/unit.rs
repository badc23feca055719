//! `bitpoll-launcher unit`: print a complete systemd unit for hosts without NixOS.
//!
//! The hardening directives come from nixos/hardening.toml, the same file the NixOS module
//! reads with `builtins.fromTOML`; it is compiled into the binary, so the unit printed here
//! and the module's unit cannot drift. Its `[Service]` table is shared by both modes, and
//! `[Privileged]` or `[Unprivileged]` adds what the mode needs. The limits and restart
//! policy come from the config's `[unit]` table (defaults: nixos/unit-defaults.toml, also
//! read by the module). Everything else that depends on the deployment (paths,
//! credentials, the data directory, the account) comes from the launcher's config.
//!
//! With `--socket`, the service is activated by a `.socket` unit that holds the listening
//! socket across restarts; `--socket-unit` prints that unit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use launcher_config::{Config, Database, Ready, SecretSource, Section};

use crate::cli::UnitArgs;
use crate::exit::{self, Exit, OrExit};

/// The shared hardening list, as shipped.
pub const HARDENING: &str = include_str!("../nixos/hardening.toml");

/// The unit's name (`bitpoll.service`, `bitpoll.socket`): a socket activates the service
/// of the same name, and `check`/`manage` look for this unit's credentials.
pub const NAME: &str = "bitpoll";

/// Where the directories `StateDirectory=` creates live.
const STATE_ROOT: &str = "/var/lib";

/// How the launcher starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `User=`: the launcher starts as root and drops privileges itself.
    Privileged,
    /// `User=`/`Group=`/`StateDirectory=`: systemd starts it as the service user.
    Unprivileged,
}

impl Mode {
    /// The table of the hardening file with this mode's own directives.
    pub fn table(self) -> &'static str {
        match self {
            Mode::Privileged => "Privileged",
            Mode::Unprivileged => "Unprivileged",
        }
    }
}

/// Where the `.socket` unit listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `host:port` (IPv6 in brackets).
    Tcp(String),
    /// A unix socket path, for a web server on the same host.
    Unix(PathBuf),
}

impl Listen {
    /// From `--listen` or a gunicorn `--bind` value: `unix:/path`, `/path`, `host:port`.
    pub fn parse(s: &str) -> anyhow::Result<Listen> {
        let s = s.trim();
        if launcher_plan::layout::binds_unix_socket(s) {
            let p = s.strip_prefix("unix:").unwrap_or(s);
            let p = PathBuf::from(p);
            if !p.is_absolute() || p.as_os_str().len() > 107 {
                bail!(
                    "{s:?}: a unix socket needs an absolute path of at most 107 bytes, e.g. /run/bitpoll/http.sock"
                );
            }
            return Ok(Listen::Unix(p));
        }
        let port = s
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        match port {
            Some(_) => Ok(Listen::Tcp(s.to_string())),
            None => bail!(
                "{s:?} is neither HOST:PORT (127.0.0.1:8000, [::1]:8000) nor a unix socket path"
            ),
        }
    }
}

/// What to render besides the config.
pub struct Options<'a> {
    pub config_path: &'a Path,
    pub binary: &'a Path,
    pub hardening: &'a str,
    pub credentials: &'a BTreeMap<String, PathBuf>,
    pub mode: Mode,
    /// Socket activation: the address of the `.socket` unit.
    pub socket: Option<Listen>,
}

pub fn run(args: &UnitArgs) -> Result<(), Exit> {
    let config_path = std::path::absolute(&args.config)
        .with_context(|| format!("cannot resolve {}", args.config.display()))
        .or_exit(exit::CONFIG)?;
    let cfg = crate::config::load(&config_path).or_exit(exit::CONFIG)?;
    let hardening = match &args.hardening {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read hardening file {}", path.display()))
            .or_exit(exit::CONFIG)?,
        None => HARDENING.to_string(),
    };
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("cannot find the launcher's own path; pass --binary")
            .or_exit(exit::RUNTIME)?,
    };
    let credentials = parse_credentials(&args.credential).or_exit(exit::CONFIG)?;
    let socket = if args.socket || args.socket_unit || args.listen.is_some() {
        Some(listen_address(&cfg, args.listen.as_deref()).or_exit(exit::CONFIG)?)
    } else {
        None
    };
    let text = if args.socket_unit {
        let listen = socket.expect("set above");
        render_socket(&cfg, &listen)
    } else {
        let opts = Options {
            config_path: &config_path,
            binary: &binary,
            hardening: &hardening,
            credentials: &credentials,
            mode: if args.unprivileged {
                Mode::Unprivileged
            } else {
                Mode::Privileged
            },
            socket,
        };
        render(&cfg, &opts).or_exit(exit::CONFIG)?
    };
    print!("{text}");
    Ok(())
}

pub fn parse_credentials(items: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (id, path) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--credential {item:?}: write it as ID=/path/to/file"))?;
        if !Path::new(path).is_absolute() {
            bail!("--credential {item:?}: the path must be absolute");
        }
        out.insert(id.to_string(), PathBuf::from(path));
    }
    Ok(out)
}

/// `--listen`, or else the first `--bind`/`-b` of server.command.
fn listen_address(cfg: &Config, listen: Option<&str>) -> anyhow::Result<Listen> {
    if let Some(l) = listen {
        return Listen::parse(l).context("--listen");
    }
    if let Some(v) = launcher_plan::layout::server_bind(cfg) {
        return Listen::parse(v).with_context(|| {
            format!("server.command binds {v:?}; pass --listen for the socket unit")
        });
    }
    bail!("server.command has no --bind; pass --listen ADDRESS (HOST:PORT or a unix socket path)")
}

/// One `Directive=value` line per value of the hardening table `table`, in file order.
pub fn hardening_lines(text: &str, table: &str) -> anyhow::Result<Vec<String>> {
    let doc: toml::Table = toml::from_str(text).context("hardening file is not valid TOML")?;
    let service = doc
        .get(table)
        .and_then(|v| v.as_table())
        .ok_or_else(|| anyhow!("hardening file has no [{table}] table"))?;
    let mut lines = Vec::new();
    for (key, value) in service {
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Integer(i) => i.to_string(),
                other => bail!("hardening {key}: unsupported value {other}"),
            })
        };
        match value {
            toml::Value::Array(items) => {
                for item in items {
                    lines.push(format!("{key}={}", scalar(item)?));
                }
            }
            v => lines.push(format!("{key}={}", scalar(v)?)),
        }
    }
    Ok(lines)
}

/// The directives of `[Service]` and of the mode's table; refuses a mode table that
/// repeats a shared key (the NixOS module merges the two tables, which would drop one).
pub fn mode_hardening(text: &str, mode: Mode) -> anyhow::Result<Vec<String>> {
    let shared = hardening_lines(text, "Service")?;
    let own = hardening_lines(text, mode.table())?;
    let name = |l: &String| l.split('=').next().unwrap_or_default().to_string();
    if let Some(dup) = own
        .iter()
        .map(name)
        .find(|n| shared.iter().any(|l| name(l) == *n))
    {
        bail!(
            "hardening file: {dup} is in both [Service] and [{}]; keep a key in one of them",
            mode.table()
        );
    }
    Ok(shared.into_iter().chain(own).collect())
}

/// `StateDirectory=` for the data directory: its path below /var/lib.
pub fn state_directory(data_dir: &Path) -> anyhow::Result<String> {
    let rel = data_dir
        .strip_prefix(STATE_ROOT)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .ok_or_else(|| {
            anyhow!(
                "service.data_dir is {}, but the unprivileged unit keeps its data where systemd's StateDirectory= creates it for the service user, below {STATE_ROOT}: set service.data_dir = \"{STATE_ROOT}/bitpoll\" (and move the data there), or use the privileged unit",
                data_dir.display()
            )
        })?;
    if rel.starts_with("private") {
        bail!(
            "service.data_dir {} is below {STATE_ROOT}/private, which systemd reserves for DynamicUser=",
            data_dir.display()
        );
    }
    Ok(rel.display().to_string())
}

/// The service unit's text.
pub fn render(cfg: &Config, o: &Options<'_>) -> anyhow::Result<String> {
    let wanted: Vec<&str> = cfg
        .secrets
        .values()
        .filter_map(|s| match s {
            SecretSource::Credential(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|id| !o.credentials.contains_key(*id))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the config reads credential{} {} but no file was given for {}: add --credential ID=/path/to/file",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        );
    }
    if let Some(extra) = o
        .credentials
        .keys()
        .find(|id| !wanted.contains(&id.as_str()))
    {
        bail!("--credential {extra}: no secret in the config uses credential {extra:?}");
    }
    let state_dir = match o.mode {
        Mode::Privileged => None,
        Mode::Unprivileged => {
            if let Some((name, path)) = cfg.secrets.iter().find_map(|(n, s)| match s {
                SecretSource::File(p) => Some((n, p)),
                _ => None,
            }) {
                bail!(
                    "secrets.{name} is read from the file {}, but the unprivileged launcher cannot read root's files: hand it over as a credential, `{name} = {{ credential = \"{name}\" }}` in the config and --credential {name}={}",
                    path.display(),
                    path.display()
                );
            }
            Some(state_directory(&cfg.service.data_dir)?)
        }
    };
    let hardening = mode_hardening(o.hardening, o.mode)?;

    let mut u = String::new();
    let w = &mut u;
    let mut flags = String::new();
    if o.mode == Mode::Unprivileged {
        flags.push_str(" --unprivileged");
    }
    if o.socket.is_some() {
        flags.push_str(" --socket");
    }
    writeln!(
        w,
        "# Generated by `bitpoll-launcher unit --config {}{flags}`; install as /etc/systemd/system/{NAME}.service.",
        o.config_path.display()
    )?;
    writeln!(
        w,
        "# Hardening from nixos/hardening.toml ([Service] and [{}], shared with the NixOS module); see docs/hardening.md.",
        o.mode.table()
    )?;
    writeln!(w, "[Unit]")?;
    writeln!(w, "Description=Bitpoll (started by bitpoll-launcher)")?;
    let mut after = vec!["network.target".to_string()];
    if matches!(cfg.database, Database::Postgresql { .. }) {
        after.push("postgresql.service".into());
    }
    if o.socket.is_some() {
        after.push(format!("{NAME}.socket"));
        writeln!(
            w,
            "# systemd holds the listening socket ({NAME}.socket) while the service restarts."
        )?;
        writeln!(w, "Requires={NAME}.socket")?;
    }
    writeln!(w, "After={}", after.join(" "))?;
    let limits = cfg.unit.directives();
    writeln!(
        w,
        "# Restarts allowed in the window ([unit] start_limit_*); one more and the unit stays failed."
    )?;
    for d in limits.iter().filter(|d| d.section == Section::Unit) {
        writeln!(w, "{}={}", d.name, d.value)?;
    }
    writeln!(w)?;
    writeln!(w, "[Service]")?;
    writeln!(w, "Type=notify")?;
    match cfg.server.ready {
        Ready::Arbiter => writeln!(w, "NotifyAccess=main")?,
        Ready::Answer => {
            writeln!(
                w,
                "# [server] ready = \"answer\": gunicorn's arbiter sends READY=1 once a worker answered its warm-up request."
            )?;
            writeln!(w, "NotifyAccess=main")?;
        }
        Ready::Worker => {
            writeln!(
                w,
                "# [server] ready = \"worker\": READY=1 comes from gunicorn's first worker, not the main process."
            )?;
            writeln!(w, "NotifyAccess=all")?;
        }
    }
    writeln!(
        w,
        "ExecStart={} run --config {}",
        quote(o.binary),
        quote(o.config_path)
    )?;
    writeln!(
        w,
        "# The server's stdout/stderr; the launcher's own records say bitpoll-launcher."
    )?;
    writeln!(w, "SyslogIdentifier=bitpoll")?;
    writeln!(w, "Restart=on-failure")?;
    writeln!(
        w,
        "# Invalid config, system not as required, failed drop: a restart cannot fix them,"
    )?;
    writeln!(
        w,
        "# and a restart loop would hide the launcher's message from systemctl status."
    )?;
    writeln!(w, "RestartPreventExitStatus=2 3 4")?;
    match &state_dir {
        None => {
            // Not StateDirectory=: without User= systemd would chown that tree back to
            // root on every start. The directory is created ahead (bitpoll-launcher
            // tmpfiles); "-" lets the launcher, not the namespace setup, explain a missing
            // one.
            writeln!(w, "ReadWritePaths=-{}", quote(&cfg.service.data_dir))?;
        }
        Some(rel) => {
            writeln!(
                w,
                "# Started as the service user (declare it ahead: bitpoll-launcher sysusers)."
            )?;
            writeln!(w, "User={}", cfg.service.user)?;
            writeln!(w, "Group={}", cfg.service.group)?;
            writeln!(
                w,
                "# systemd creates {} for the user; the launcher makes the tree below it.",
                cfg.service.data_dir.display()
            )?;
            writeln!(w, "StateDirectory={rel}")?;
            writeln!(w, "StateDirectoryMode=0750")?;
        }
    }
    for (id, path) in o.credentials {
        writeln!(w, "LoadCredential={id}:{}", path.display())?;
    }
    writeln!(
        w,
        "# Limits and restart backoff from the config's [unit] table (docs/configuration.md)."
    )?;
    for d in limits.iter().filter(|d| d.section == Section::Service) {
        writeln!(w, "{}={}", d.name, d.value)?;
    }
    for line in hardening {
        writeln!(w, "{line}")?;
    }
    writeln!(w)?;
    writeln!(w, "[Install]")?;
    writeln!(w, "WantedBy=multi-user.target")?;
    Ok(u)
}

/// The `.socket` unit's text.
pub fn render_socket(cfg: &Config, listen: &Listen) -> String {
    let mut u = String::new();
    let w = &mut u;
    let _ = writeln!(
        w,
        "# Generated by `bitpoll-launcher unit --socket-unit`; install as /etc/systemd/system/{NAME}.socket"
    );
    let _ = writeln!(
        w,
        "# next to {NAME}.service and enable it: systemctl enable --now {NAME}.socket"
    );
    let _ = writeln!(w, "[Unit]");
    let _ = writeln!(
        w,
        "Description=Bitpoll's listening socket (held across restarts of {NAME}.service)"
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "[Socket]");
    match listen {
        Listen::Tcp(addr) => {
            let _ = writeln!(w, "ListenStream={addr}");
            let _ = writeln!(w, "NoDelay=true");
        }
        Listen::Unix(path) => {
            let _ = writeln!(w, "ListenStream={}", path.display());
            let _ = writeln!(
                w,
                "# The web server (nginx) reaches it as a member of the service group."
            );
            let _ = writeln!(w, "SocketGroup={}", cfg.service.group);
            let _ = writeln!(w, "SocketMode=0660");
            let _ = writeln!(w, "RemoveOnStop=true");
        }
    }
    let _ = writeln!(
        w,
        "# Connections wait in the queue while the service restarts, prepares and migrates."
    );
    let _ = writeln!(w, "Backlog=1024");
    let _ = writeln!(w);
    let _ = writeln!(w, "[Install]");
    let _ = writeln!(w, "WantedBy=sockets.target");
    u
}

/// Quote a path for a unit file when it contains spaces.
fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        launcher_config::parse_str(&format!(
            r#"
[service]
user = "bitpoll"
create_user = false
data_dir = "/var/lib/bitpoll"
[app]
python = "/opt/bitpoll/venv/bin/python"
source_dir = "/opt/bitpoll/src"
[prepare]
compilemessages = false
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ credential = "fek" }}
[server]
command = ["/opt/bitpoll/venv/bin/gunicorn", "--bind", "127.0.0.1:3008", "bitpoll.wsgi:application"]
{extra}"#
        ))
        .unwrap()
    }

    fn creds() -> BTreeMap<String, PathBuf> {
        [("fek".to_string(), PathBuf::from("/etc/bitpoll/fek"))].into()
    }

    fn render_with(cfg: &Config, mode: Mode, socket: Option<Listen>) -> anyhow::Result<String> {
        render(
            cfg,
            &Options {
                config_path: Path::new("/etc/bitpoll/launcher.toml"),
                binary: Path::new("/usr/bin/bitpoll-launcher"),
                hardening: HARDENING,
                credentials: &creds(),
                mode,
                socket,
            },
        )
    }

    fn has(unit: &str, line: &str) -> bool {
        unit.lines().any(|l| l == line)
    }

    #[test]
    fn renders_a_notify_unit_with_the_shared_hardening() {
        let unit = render_with(&config(""), Mode::Privileged, None).unwrap();
        for want in [
            "Type=notify",
            "NotifyAccess=main",
            "ExecStart=/usr/bin/bitpoll-launcher run --config /etc/bitpoll/launcher.toml",
            "ReadWritePaths=-/var/lib/bitpoll",
            "LoadCredential=fek:/etc/bitpoll/fek",
        ] {
            assert!(has(&unit, want), "missing {want:?} in\n{unit}");
        }
        for line in mode_hardening(HARDENING, Mode::Privileged).unwrap() {
            assert!(has(&unit, &line), "hardening line {line:?} missing");
        }
        assert!(
            !unit.contains("ReadWritePaths=/opt/bitpoll/src"),
            "never write access to the app source: catalogs go into the data directory"
        );
        assert!(!unit.contains("User="), "{unit}");
    }

    #[test]
    fn a_credential_without_a_file_is_an_error() {
        let err = render(
            &config(""),
            &Options {
                config_path: Path::new("/c.toml"),
                binary: Path::new("/b"),
                hardening: HARDENING,
                credentials: &BTreeMap::new(),
                mode: Mode::Privileged,
                socket: None,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("reads credential fek but no file was given"),
            "{err}"
        );
    }

    #[test]
    fn arrays_render_one_line_per_element_in_order() {
        let lines = hardening_lines(
            "[Service]\nA = [\"x\", \"~y\"]\nB = true\nC = 5\n",
            "Service",
        )
        .unwrap();
        assert_eq!(lines, ["A=x", "A=~y", "B=true", "C=5"]);
    }

    #[test]
    fn the_mode_tables_never_repeat_a_shared_directive() {
        for mode in [Mode::Privileged, Mode::Unprivileged] {
            mode_hardening(HARDENING, mode).unwrap();
        }
        let err = mode_hardening("[Service]\nA = 1\n[Privileged]\nA = 2\n", Mode::Privileged)
            .unwrap_err();
        assert!(err.to_string().contains("A is in both"), "{err}");
    }

    #[test]
    fn the_privileged_unit_has_no_state_directory_that_systemd_would_chown_to_root() {
        let unit = render_with(&config(""), Mode::Privileged, None).unwrap();
        assert!(!unit.contains("StateDirectory="), "{unit}");
        assert!(has(&unit, "ReadWritePaths=-/var/lib/bitpoll"), "{unit}");
    }

    #[test]
    fn the_unprivileged_unit_runs_as_the_user_in_its_state_directory_without_capabilities() {
        let unit = render_with(&config(""), Mode::Unprivileged, None).unwrap();
        for want in [
            "User=bitpoll",
            "Group=bitpoll",
            "StateDirectory=bitpoll",
            "StateDirectoryMode=0750",
            "CapabilityBoundingSet=",
            "PrivateUsers=true",
            "NoNewPrivileges=true",
            "SystemCallFilter=@system-service",
            "SystemCallFilter=~@privileged @resources",
            "LoadCredential=fek:/etc/bitpoll/fek",
        ] {
            assert!(has(&unit, want), "missing {want:?} in\n{unit}");
        }
        for absent in ["ReadWritePaths=-/var/lib/bitpoll", "@setuid", "CAP_"] {
            assert!(!unit.contains(absent), "{absent:?} in\n{unit}");
        }
    }

    #[test]
    fn the_unprivileged_unit_refuses_a_data_dir_outside_var_lib_and_root_only_files() {
        let mut cfg = config("");
        cfg.service.data_dir = "/srv/bitpoll".into();
        let err = render_with(&cfg, Mode::Unprivileged, None).unwrap_err();
        assert!(err.to_string().contains("below /var/lib"), "{err}");
        cfg.service.data_dir = "/var/lib/private/bitpoll".into();
        assert!(render_with(&cfg, Mode::Unprivileged, None).is_err());
        cfg.service.data_dir = "/var/lib/bitpoll/site-a".into();
        let unit = render_with(&cfg, Mode::Unprivileged, None).unwrap();
        assert!(has(&unit, "StateDirectory=bitpoll/site-a"), "{unit}");

        let mut cfg = config("");
        cfg.secrets.insert(
            "BITPOLL_DB_PASSWORD".into(),
            SecretSource::File("/run/keys/db".into()),
        );
        let err = render_with(&cfg, Mode::Unprivileged, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("--credential BITPOLL_DB_PASSWORD=/run/keys/db"),
            "{err}"
        );
    }

    #[test]
    fn limits_and_backoff_come_from_the_unit_table() {
        let unit = render_with(
            &config("[unit]\nmemory_max = \"2G\"\nrestart_sec = 3\nstart_limit_burst = 4\n"),
            Mode::Privileged,
            None,
        )
        .unwrap();
        let (unit_section, service) = unit.split_once("\n[Service]\n").unwrap();
        for want in ["StartLimitIntervalSec=600s", "StartLimitBurst=4"] {
            assert!(
                has(unit_section, want),
                "missing {want:?} in [Unit]:\n{unit}"
            );
        }
        for want in [
            "RestartSec=3s",
            "MemoryHigh=1G",
            "MemoryMax=2G",
            "TasksMax=512",
            "LimitNOFILE=8192",
        ] {
            assert!(has(service, want), "missing {want:?} in [Service]:\n{unit}");
        }
        assert!(!unit.contains("RestartSteps"), "{unit}");
    }

    #[test]
    fn socket_activation_needs_the_socket_and_listens_where_gunicorn_would_bind() {
        let cfg = config("");
        let listen = listen_address(&cfg, None).unwrap();
        assert_eq!(listen, Listen::Tcp("127.0.0.1:3008".into()));
        let unit = render_with(&cfg, Mode::Unprivileged, Some(listen.clone())).unwrap();
        assert!(has(&unit, "Requires=bitpoll.socket"), "{unit}");
        assert!(has(&unit, "After=network.target bitpoll.socket"), "{unit}");
        let socket = render_socket(&cfg, &listen);
        assert!(has(&socket, "ListenStream=127.0.0.1:3008"), "{socket}");
        assert!(has(&socket, "WantedBy=sockets.target"), "{socket}");

        let unix = Listen::parse("unix:/run/bitpoll/http.sock").unwrap();
        let socket = render_socket(&cfg, &unix);
        for want in [
            "ListenStream=/run/bitpoll/http.sock",
            "SocketGroup=bitpoll",
            "SocketMode=0660",
        ] {
            assert!(has(&socket, want), "missing {want:?} in\n{socket}");
        }
        for bad in ["localhost", ":80", "run/x.sock", "host:0"] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Listen::parse("[::1]:8000").unwrap(),
            Listen::Tcp("[::1]:8000".into())
        );
    }

    #[test]
    fn notify_access_is_all_only_when_a_worker_sends_ready() {
        for (ready, access, not) in [
            ("worker", "NotifyAccess=all", "NotifyAccess=main"),
            ("answer", "NotifyAccess=main", "NotifyAccess=all"),
            ("arbiter", "NotifyAccess=main", "NotifyAccess=all"),
        ] {
            let cfg = launcher_config::parse_str(&format!(
                r#"
[service]
user = "bitpoll"
data_dir = "/var/lib/bitpoll"
[app]
python = "/v/bin/python"
source_dir = "/src"
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ credential = "fek" }}
[server]
command = ["/v/bin/gunicorn", "app:wsgi"]
ready = "{ready}"
"#
            ))
            .unwrap();
            let unit = render_with(&cfg, Mode::Privileged, None).unwrap();
            assert!(has(&unit, access), "ready = {ready}: {unit}");
            assert!(!has(&unit, not), "ready = {ready}: {unit}");
        }
    }
}
