//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const RUN_EXIT_CODES: &str = "\
Exit status (run never returns on success: it becomes the server):
  1    a preparation step failed, the server could not be executed, PostgreSQL did not
       accept a connection within database.wait_timeout_sec, a lock's holder hung, or the
       launcher itself failed (its runtime, its stop signals, leaving the terminal)
  2    the configuration file is missing or invalid, or the command line is wrong
  3    the system is not as required (account, data directory, secrets), or PostgreSQL
       refused the login, the database or TLS
  4    privileges could not be changed or dropped for good
  128+N  stopped by SIGTERM, SIGINT, SIGHUP or SIGQUIT before the exec: the launcher ends
         the wait or step, then dies of the same signal (shells show 128+N; as a
         container's PID 1, which cannot die of it, it exits 128+N)
Each failure is logged with the MESSAGE_ID and FINDING_ID of its rule (journalctl -x).";

#[derive(Debug, Parser)]
#[command(
    name = "bitpoll-launcher",
    version,
    about = "Prepare and start Bitpoll (a Django app) as a systemd service",
    long_about = "bitpoll-launcher is the ExecStart of the Bitpoll unit. As root it creates or verifies \
the service account and data directory, loads secrets, runs migrate, collectstatic and \
compilemessages as the service user (skipping what has nothing to do), drops every privilege \
and executes the server in its own place, so the server keeps the PID and reports READY=1."
)]
pub struct Cli {
    /// Least severe log level to emit.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "info",
        env = "BITPOLL_LAUNCHER_LOG"
    )]
    pub log_level: LogLevel,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prepare the app and exec the server (the unit's ExecStart).
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// Validate a deployment read-only and say how to fix each problem.
    #[command(after_help = CHECK_EXIT_CODES)]
    Check(CheckArgs),
    /// Run manage.py exactly as the service would: as the service user, with its
    /// environment, secrets and working directory (from a root terminal, on a terminal of
    /// its own).
    #[command(after_help = MANAGE_EXIT_CODES)]
    Manage(ManageArgs),
    /// Print a hardened systemd unit for this config (hosts without NixOS).
    Unit(UnitArgs),
    /// Print the service account as a sysusers.d entry.
    Sysusers(ConfigArgs),
    /// Print the data directory as a tmpfiles.d entry.
    Tmpfiles(ConfigArgs),
    /// Install the unit, the account, the data directory and the journal catalog on a
    /// systemd host (not NixOS).
    #[command(
        long_about = "Install Bitpoll's unit on a systemd host without NixOS: write what `unit`, \
`sysusers`, `tmpfiles` and `catalog` print to /etc/systemd/system/bitpoll.service, \
/etc/sysusers.d/USER.conf, /etc/tmpfiles.d/USER.conf and \
/usr/local/lib/systemd/catalog/bitpoll-launcher.catalog, create the account \
(systemd-sysusers) and the data directory (systemd-tmpfiles --create), update the journal's \
catalog database (journalctl --update-catalog), and reload systemd. \
Each file is replaced atomically and only when its content changes, so running install \
again after a config change updates exactly what changed. A file install did not write, or \
one edited since, is left alone unless --force is given: install refuses before changing \
anything. It does not start the unit.",
        after_help = INSTALL_EXIT_CODES
    )]
    Install(InstallArgs),
    /// Print the journal catalog: what each MESSAGE_ID of the launcher's records means and
    /// what to do (systemd's catalog format, for /usr/local/lib/systemd/catalog/).
    #[command(
        long_about = "Print the journal catalog of the launcher in systemd's catalog format: one \
entry per rule that can refuse a start, fail it or warn, under the MESSAGE_ID its journal \
records carry, with what it means, the documented fix and where the docs say more. \
`journalctl -x` shows the entry under each such record once the catalog is installed: \
`bitpoll-launcher install` and the NixOS module do that; by hand, write it to \
/usr/local/lib/systemd/catalog/bitpoll-launcher.catalog (journalctl reads catalogs there and \
in /usr/lib/systemd/catalog/, not below /etc) and run `journalctl --update-catalog`."
    )]
    Catalog,
    /// Stop the unit and remove what install wrote; keep the account and the data.
    #[command(
        long_about = "Stop and disable bitpoll.service and remove the four files install wrote, \
then reload systemd and update the journal's catalog database. Only files install wrote and nobody edited are removed (edited ones \
too with --force; a file install did not write never). The account and the data directory \
(database, secrets, uploads) are kept.",
        after_help = INSTALL_EXIT_CODES
    )]
    Uninstall(UninstallArgs),
}

const INSTALL_EXIT_CODES: &str = "\
Exit status:
  0  done (or, with --dry-run, shown)
  1  a file could not be written or a command failed (its output is shown)
  2  the configuration is invalid
  3  a file install did not write, or one edited since, is in the way (see --force), or
     not run as root";

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The launcher's TOML configuration (its absolute path goes into ExecStart).
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,

    /// Path of the launcher binary in ExecStart (default: this binary).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// A file for a credential source of the config: LoadCredential=ID:PATH. Repeatable.
    #[arg(long, value_name = "ID=PATH")]
    pub credential: Vec<String>,

    /// Print every file and command instead of writing or running anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Replace files install did not write or that were edited since.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The launcher's TOML configuration.
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,

    /// Print what would be stopped and removed instead of doing it.
    #[arg(long)]
    pub dry_run: bool,

    /// Also remove files install wrote that were edited since.
    #[arg(long)]
    pub force: bool,
}

const CHECK_EXIT_CODES: &str = "\
Exit status:
  0  no problems: only ok and info findings (a warning accepted in check.accept is info)
  1  warnings, no errors
  2  errors: `run` would fail or the deployment is unsafe (an invalid config too), or the
     command line is wrong";

const MANAGE_EXIT_CODES: &str = "\
Exit status: that of manage.py's command (128+N when signal N ended it). Before the
command starts, the launcher's own, after its error message on stderr:
  1  the launcher failed (the terminal relay, the exec)
  2  the configuration is invalid, an --env is refused, or the command line is wrong
  3  manage refuses what run would refuse, or what only a start can do (the account does
     not exist, a secret was never generated, a credential only the running unit has)
  4  privileges could not be dropped for good";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The launcher's TOML configuration.
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,

    /// Print the findings as JSON (schema in docs/check.md).
    #[arg(long)]
    pub json: bool,

    /// Also check this systemd unit's settings (Type, NotifyAccess, capabilities), and
    /// read credentials from the running unit's credentials directory.
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,
}

#[derive(Debug, Args)]
pub struct ManageArgs {
    /// The launcher's TOML configuration.
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,

    /// The unit whose credentials directory holds credential secrets (when run outside it).
    #[arg(long, value_name = "NAME", default_value = "bitpoll")]
    pub unit: String,

    /// Pass a variable to this one command: NAME=VALUE, or NAME for your own value
    /// (repeatable). DJANGO_SUPERUSER_* variables of your environment are passed always, so
    /// `createsuperuser --noinput` works. Launcher-set variables and secrets cannot be
    /// replaced.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,

    /// Arguments for manage.py, after `--`.
    #[arg(last = true, required = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The launcher's TOML configuration.
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct UnitArgs {
    /// The launcher's TOML configuration (its absolute path goes into ExecStart).
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,

    /// Path of the launcher binary in ExecStart (default: this binary).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// A file for a credential source of the config: LoadCredential=ID:PATH. Repeatable.
    #[arg(long, value_name = "ID=PATH")]
    pub credential: Vec<String>,

    /// Use this hardening list instead of the built-in copy of nixos/hardening.toml.
    #[arg(long, value_name = "FILE")]
    pub hardening: Option<PathBuf>,

    /// Start the launcher as the service user (User=, StateDirectory=, no capabilities)
    /// instead of as root. service.data_dir must be below /var/lib, and secrets come from
    /// credentials or are generated, not from root's files.
    #[arg(long)]
    pub unprivileged: bool,

    /// Activate the service by a bitpoll.socket unit that holds the listening socket across
    /// restarts (print that unit with --socket-unit).
    #[arg(long)]
    pub socket: bool,

    /// Print the bitpoll.socket unit instead of the service.
    #[arg(long)]
    pub socket_unit: bool,

    /// The socket unit's address: HOST:PORT or a unix socket path (default: the --bind of
    /// server.command). Implies --socket.
    #[arg(long, value_name = "ADDRESS")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The launcher's TOML configuration.
    #[arg(long, short, value_name = "FILE", env = "BITPOLL_LAUNCHER_CONFIG")]
    pub config: PathBuf,

    /// Run every enabled preparation step even when its stamp says nothing changed.
    #[arg(long)]
    pub force_prepare: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(l: LogLevel) -> tracing::Level {
        match l {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}
