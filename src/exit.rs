//! Failures of a subcommand, with the exit code they map to.

use std::fmt;

/// A failure: its exit code and the error to print once.
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

pub const RUNTIME: u8 = 1;
pub const CONFIG: u8 = 2;
pub const SYSTEM: u8 = 3;
pub const PRIVILEGES: u8 = 4;

impl Exit {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Exit {
        Exit {
            code,
            error: error.into(),
        }
    }

    /// Log the error once (to the journal with its fields, or as text on stderr) and
    /// return the exit code.
    pub fn report(self) -> std::process::ExitCode {
        let message = format!("{:#}", self.error);
        tracing::error!(exit_code = self.code, "{message}");
        std::process::ExitCode::from(self.code)
    }
}

impl fmt::Debug for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {}: {:#}", self.code, self.error)
    }
}

/// Attach an exit code to any error.
pub trait OrExit<T> {
    fn or_exit(self, code: u8) -> Result<T, Exit>;
}

impl<T, E: Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: u8) -> Result<T, Exit> {
        self.map_err(|e| Exit::new(code, e))
    }
}
