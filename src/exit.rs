//! Failures of a subcommand, with the exit code they map to.

use std::fmt;

use launcher_sys::StopSignal;

/// A failure: its exit code and the error to print once.
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
    /// Stopped by this signal: after reporting, the launcher dies of it.
    pub signal: Option<StopSignal>,
}

pub const RUNTIME: u8 = 1;
pub const CONFIG: u8 = 2;
pub const SYSTEM: u8 = 3;
pub const PRIVILEGES: u8 = 4;

/// 128+N for signal N.
pub fn stopped_code(signal: StopSignal) -> u8 {
    // Stop signals are numbered below 32.
    128 + signal.raw() as u8
}

impl Exit {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Exit {
        Exit {
            code,
            error: error.into(),
            signal: None,
        }
    }

    /// Stopped by `signal`: exit code 128+N, as a death by the signal shows in a shell,
    /// for the case that dying of it does not work.
    pub fn stopped(signal: StopSignal, error: impl Into<anyhow::Error>) -> Exit {
        Exit {
            code: stopped_code(signal),
            error: error.into(),
            signal: Some(signal),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_maps_to_128_plus_the_signal_number() {
        let want = [
            (StopSignal::Hup, 129),
            (StopSignal::Int, 130),
            (StopSignal::Quit, 131),
            (StopSignal::Term, 143),
        ];
        for (signal, code) in want {
            let exit = Exit::stopped(signal, anyhow::anyhow!("stopped"));
            assert_eq!((exit.code, exit.signal), (code, Some(signal)));
        }
        assert_eq!(Exit::new(RUNTIME, anyhow::anyhow!("failed")).signal, None);
    }
}
