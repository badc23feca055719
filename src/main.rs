//! bitpoll-launcher: prepares and starts Bitpoll under systemd.
//!
//! `main` parses the command line, sets up logging, runs one subcommand and turns its
//! failure into one message and an exit code. Nothing below calls `exit()`.

mod check;
mod cli;
mod config;
mod exit;
mod install;
mod lock;
mod manage;
mod notify;
mod observability;
mod observe;
mod postgres;
mod prepare;
mod ready;
mod run;
mod signals;
mod sqlite;
mod sysusers;
mod tmpfiles;
mod unit;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Seconds since the epoch, for the names and records a start writes.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    observability::init(cli.log_level);
    // Secrets are read into this process as root: no core file, no ptrace by others.
    if let Err(e) = launcher_sys::no_core_dumps() {
        tracing::warn!("cannot make the launcher non-dumpable: {e}");
    }
    let result = match cli.command {
        Command::Run(args) => run::run(&args).map(|never| match never {}),
        Command::Check(args) => check::run(&args),
        Command::Manage(args) => manage::run(&args),
        Command::Unit(args) => unit::run(&args).map(|()| 0),
        Command::Sysusers(args) => sysusers::run(&args).map(|()| 0),
        Command::Tmpfiles(args) => tmpfiles::run(&args).map(|()| 0),
        Command::Install(args) => install::install(&args),
        Command::Uninstall(args) => install::uninstall(&args),
        Command::Catalog => {
            print!("{}", launcher_plan::rule::catalog());
            Ok(0)
        }
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(exit) => {
            let signal = exit.signal;
            let status = exit.report();
            // Stopped during preparation: die of the same signal, as an unhandled stop
            // would, so systemd records a clean stop and shells print 128+N.
            if let Some(signal) = signal {
                launcher_sys::die_of_signal(signal);
            }
            status
        }
    }
}
