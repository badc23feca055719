//! bitpoll-launcher: prepares and starts Bitpoll under systemd.
//!
//! `main` parses the command line, sets up logging, runs one subcommand and turns its
//! failure into one message and an exit code. Nothing below calls `exit()`.

mod cli;
mod exit;
mod notify;
mod observability;
mod prepare;
mod run;
mod secrets;
mod sysusers;
mod unit;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    observability::init(cli.log_level);
    let result = match cli.command {
        Command::Run(args) => run::run(&args).map(|never| match never {}),
        Command::Unit(args) => unit::run(&args),
        Command::Sysusers(args) => sysusers::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(exit) => exit.report(),
    }
}
