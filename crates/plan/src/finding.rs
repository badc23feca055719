//! What a judgement says about one subject: the rule that says it (its stable id, see
//! [`crate::rule`]), a severity, a message and, for anything short of ok, a fix sentence.
//! `run` refuses on an [`Severity::Error`] finding and logs the rest; `check` prints every
//! finding (its JSON form is documented in docs/check.md).

use std::fmt;

use crate::rule::Rule;

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
    /// The launcher's own failures while acting (never a finding of `check`).
    Launcher,
}

impl Group {
    /// In the order `check` prints them.
    pub const ALL: [Group; 12] = [
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
        Group::Launcher,
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
            Group::Launcher => "launcher",
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
    pub rule: Rule,
    /// The id another program gave it, for a rule that passes on that program's findings
    /// (Django's check ids for [`Rule::DjangoCheck`]).
    pub external: Option<String>,
    pub subject: String,
    pub message: String,
    pub fix: Option<String>,
    /// A warning the admin accepted (`[check] accept`): it counts as info.
    pub accepted: bool,
}

impl Finding {
    pub fn ok(rule: Rule, subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Severity::Ok, rule, subject, message, None)
    }

    pub fn info(rule: Rule, subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Severity::Info, rule, subject, message, None)
    }

    pub fn warning(
        rule: Rule,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Warning, rule, subject, message, Some(fix.into()))
    }

    pub fn error(
        rule: Rule,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Error, rule, subject, message, Some(fix.into()))
    }

    /// A finding of `rule`; one that can make `check` fail must have a catalog entry
    /// (an explanation and a fix in the rule table).
    pub fn new(
        severity: Severity,
        rule: Rule,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Finding {
        debug_assert!(
            severity < Severity::Warning || rule.in_catalog(),
            "{rule}: a warning or error needs an explanation in the rule table"
        );
        Finding {
            severity,
            rule,
            external: None,
            subject: subject.into(),
            message: message.into(),
            fix,
            accepted: false,
        }
    }

    /// One of Django's own findings, under its id (`security.W004`).
    pub fn django(
        severity: Severity,
        id: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Finding {
        Finding {
            external: Some(id.to_string()),
            ..Finding::new(severity, Rule::DjangoCheck, subject, message, fix)
        }
    }

    /// The stable id: the rule's (`data_dir.foreign_owner`), or for another program's
    /// finding the rule's prefix and that program's id (`django:security.W004`).
    pub fn id(&self) -> String {
        match &self.external {
            Some(external) => format!("{}:{external}", self.rule.id()),
            None => self.rule.id().to_string(),
        }
    }

    pub fn group(&self) -> Group {
        self.rule.group()
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
    fn a_finding_has_its_rules_id_and_group() {
        let f = Finding::error(Rule::DataDirForeignOwner, "/d", "is alice's", "chown");
        assert_eq!(
            (f.id().as_str(), f.group()),
            ("data_dir.foreign_owner", Group::DataDir)
        );
        let d = Finding::django(
            Severity::Warning,
            "security.W004",
            "s",
            "m",
            Some("h".into()),
        );
        assert_eq!(
            (d.id().as_str(), d.group()),
            ("django:security.W004", Group::App)
        );
    }

    #[test]
    fn refusal_lists_only_errors() {
        let f = [
            Finding::ok(Rule::AccountUser, "user x", "exists"),
            Finding::error(
                Rule::DataDirSymlink,
                "/d",
                "is a symbolic link",
                "replace it",
            ),
        ];
        assert_eq!(
            refusal(&f).unwrap(),
            "/d: is a symbolic link; fix: replace it"
        );
        assert_eq!(refusal(&f[..1]), None);
    }
}
