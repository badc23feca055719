//! Failures of a subcommand, with the exit code they map to and the rule that explains
//! them in the journal (its MESSAGE_ID and catalog entry, launcher_plan::rule).

use std::fmt;

use launcher_plan::finding::Finding;
use launcher_plan::rule::Rule;
use launcher_sys::StopSignal;

/// A failure: its exit code, the error to print once, and its rule.
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
    /// Stopped by this signal: after reporting, the launcher dies of it.
    pub signal: Option<StopSignal>,
    pub rule: Rule,
    /// A refusal for several problems: each is logged as a record of its own first.
    pub problems: Vec<Finding>,
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

/// The rule of a failure that names none: the one of its exit code.
fn rule_of(code: u8) -> Rule {
    match code {
        CONFIG => Rule::ConfigInvalid,
        SYSTEM => Rule::LauncherSystem,
        PRIVILEGES => Rule::LauncherPrivileges,
        _ => Rule::LauncherFailed,
    }
}

impl Exit {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Exit {
        Exit {
            code,
            error: error.into(),
            signal: None,
            rule: rule_of(code),
            problems: Vec::new(),
        }
    }

    /// The same failure under a rule of its own.
    pub fn rule(self, rule: Rule) -> Exit {
        Exit { rule, ..self }
    }

    /// The refusal of a start (or of manage's command) for the errors among `findings`
    /// (exit status 3), worded as `check` words them: one error is the record itself,
    /// under its rule; several are logged one by one, each under its rule, before a
    /// record that sums them up. None when there is no error.
    pub fn refused(findings: &[Finding]) -> Option<Exit> {
        let errors: Vec<Finding> = findings.iter().filter(|f| f.is_error()).cloned().collect();
        Some(match errors.as_slice() {
            [] => return None,
            [one] => Exit::new(SYSTEM, anyhow::anyhow!("{one}")).rule(one.rule),
            many => {
                let subjects: Vec<&str> = many.iter().map(|f| f.subject.as_str()).collect();
                let text = format!(
                    "refused: {} problems, each logged above: {}",
                    many.len(),
                    subjects.join("; ")
                );
                Exit {
                    problems: errors,
                    ..Exit::new(SYSTEM, anyhow::anyhow!("{text}")).rule(Rule::LauncherRefused)
                }
            }
        })
    }

    /// Stopped by `signal`: exit code 128+N, as a death by the signal shows in a shell,
    /// for the case that dying of it does not work.
    pub fn stopped(signal: StopSignal, error: impl Into<anyhow::Error>) -> Exit {
        Exit {
            code: stopped_code(signal),
            error: error.into(),
            signal: Some(signal),
            rule: Rule::LauncherStopped,
            problems: Vec::new(),
        }
    }

    /// Log the error once (to the journal with its fields, or as text on stderr) and
    /// return the exit code. Each record carries its rule's MESSAGE_ID and id.
    pub fn report(self) -> std::process::ExitCode {
        for f in &self.problems {
            tracing::error!(
                message_id = f.rule.message_id(),
                finding_id = %f.id(),
                subject = %f.subject,
                "{f}"
            );
        }
        let message = format!("{:#}", self.error);
        tracing::error!(
            exit_code = self.code,
            message_id = self.rule.message_id(),
            finding_id = self.rule.id(),
            "{message}"
        );
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

    #[test]
    fn a_failure_carries_the_rule_of_its_code_unless_it_names_one() {
        let rule = |code| Exit::new(code, anyhow::anyhow!("x")).rule;
        assert_eq!(rule(RUNTIME), Rule::LauncherFailed);
        assert_eq!(rule(CONFIG), Rule::ConfigInvalid);
        assert_eq!(rule(SYSTEM), Rule::LauncherSystem);
        assert_eq!(rule(PRIVILEGES), Rule::LauncherPrivileges);
        let stopped = Exit::stopped(StopSignal::Term, anyhow::anyhow!("x"));
        assert_eq!(stopped.rule, Rule::LauncherStopped);
        let e = Exit::new(RUNTIME, anyhow::anyhow!("x")).rule(Rule::PrepareFailed);
        assert_eq!((e.code, e.rule), (RUNTIME, Rule::PrepareFailed));
    }

    #[test]
    fn a_refusal_is_one_record_under_its_rule_or_each_problem_and_a_summary() {
        let ok = Finding::ok(Rule::AccountUser, "user bitpoll", "exists");
        let owner = Finding::error(Rule::DataDirForeignOwner, "/d", "is alice's", "chown");
        let exposed = Finding::error(Rule::SecretExposed, "K (file /k)", "mode 0644", "chmod");
        assert!(Exit::refused(std::slice::from_ref(&ok)).is_none());
        let one = Exit::refused(&[ok.clone(), owner.clone()]).unwrap();
        assert_eq!((one.code, one.rule), (SYSTEM, Rule::DataDirForeignOwner));
        assert!(one.problems.is_empty());
        assert_eq!(one.error.to_string(), "/d: is alice's; fix: chown");
        let many = Exit::refused(&[owner, ok, exposed]).unwrap();
        assert_eq!(many.rule, Rule::LauncherRefused);
        let rules: Vec<Rule> = many.problems.iter().map(|f| f.rule).collect();
        assert_eq!(rules, [Rule::DataDirForeignOwner, Rule::SecretExposed]);
        assert_eq!(
            many.error.to_string(),
            "refused: 2 problems, each logged above: /d; K (file /k)"
        );
    }
}
