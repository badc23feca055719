//! What a judgement says about one subject: a severity, a message and, for anything short
//! of ok, a fix sentence. `run` refuses on an [`Severity::Error`] finding and logs the rest;
//! `check` prints every finding (its JSON form is documented in docs/check.md).

use std::fmt;

/// How bad a finding is, from "nothing to do" to "`run` refuses".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The subject area of a finding; also decides `run`'s exit status for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Config,
    Check,
    Account,
    DataDir,
    Secrets,
    Python,
    App,
    Prepare,
    Database,
    Server,
    Systemd,
}

impl Group {
    /// In the order `check` prints them.
    pub const ALL: [Group; 11] = [
        Group::Config,
        Group::Check,
        Group::Account,
        Group::DataDir,
        Group::Secrets,
        Group::Python,
        Group::App,
        Group::Prepare,
        Group::Database,
        Group::Server,
        Group::Systemd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Config => "config",
            Group::Check => "check",
            Group::Account => "account",
            Group::DataDir => "data_dir",
            Group::Secrets => "secrets",
            Group::Python => "python",
            Group::App => "app",
            Group::Prepare => "prepare",
            Group::Database => "database",
            Group::Server => "server",
            Group::Systemd => "systemd",
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub group: Group,
    pub subject: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(group: Group, subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Severity::Ok, group, subject, message, None)
    }

    pub fn info(group: Group, subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Severity::Info, group, subject, message, None)
    }

    pub fn warning(
        group: Group,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Warning, group, subject, message, Some(fix.into()))
    }

    pub fn error(
        group: Group,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Error, group, subject, message, Some(fix.into()))
    }

    pub fn new(
        severity: Severity,
        group: Group,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Finding {
        Finding {
            severity,
            group,
            subject: subject.into(),
            message: message.into(),
            fix,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// "subject: message (fix: ...)", the form `run` logs and fails with.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// The errors among `findings`, as one text for `run`'s failure (None when there are none).
pub fn refusal(findings: &[Finding]) -> Option<String> {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.is_error()).collect();
    match errors.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        many => Some(format!(
            "{} problems:{}",
            many.len(),
            many.iter()
                .map(|f| format!("\n  - {f}"))
                .collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_from_ok_to_error() {
        assert!(Severity::Ok < Severity::Info);
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Warning < Severity::Error);
    }

    #[test]
    fn refusal_lists_only_errors() {
        let f = [
            Finding::ok(Group::Account, "user x", "exists"),
            Finding::error(Group::DataDir, "/d", "is a symbolic link", "replace it"),
        ];
        assert_eq!(
            refusal(&f).unwrap(),
            "/d: is a symbolic link; fix: replace it"
        );
        assert_eq!(refusal(&f[..1]), None);
    }
}
