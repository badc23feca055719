//! The findings of one check and how they are printed: grouped text for people, with
//! every control character escaped (launcher_plan::text), and JSON for tools (the schema
//! is docs/check.md; version 1), whose strings carry the text as it is.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use serde::Serialize;

use launcher_plan::finding::{Finding, Group, Severity};
use launcher_plan::rule::Rule;
use launcher_plan::text::printable;

#[derive(Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Add a finding; a multi-line text (a tool's stderr) is joined into one line.
    pub fn push(&mut self, f: Finding) {
        let one_line = |t: &str| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.findings.push(Finding {
            subject: one_line(&f.subject),
            message: one_line(&f.message),
            fix: f.fix.as_deref().map(one_line),
            ..f
        });
    }

    pub fn ok(&mut self, rule: Rule, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Finding::ok(rule, subject, message));
    }

    pub fn info(&mut self, rule: Rule, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Finding::info(rule, subject, message));
    }

    pub fn warn(
        &mut self,
        rule: Rule,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Finding::warning(rule, subject, message, fix));
    }

    pub fn error(
        &mut self,
        rule: Rule,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Finding::error(rule, subject, message, fix));
    }

    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }

    fn counts(&self) -> BTreeMap<&'static str, usize> {
        [
            Severity::Ok,
            Severity::Info,
            Severity::Warning,
            Severity::Error,
        ]
        .into_iter()
        .map(|sev| {
            (
                sev.label(),
                self.findings.iter().filter(|f| f.severity == sev).count(),
            )
        })
        .collect()
    }
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    id: String,
    severity: &'static str,
    accepted: bool,
    group: &'static str,
    subject: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    config: String,
    checked_as_uid: u32,
    summary: BTreeMap<&'static str, usize>,
    findings: Vec<JsonFinding<'a>>,
}

fn colour(s: Severity) -> &'static str {
    match s {
        Severity::Ok => "\x1b[32m",
        Severity::Info => "\x1b[36m",
        Severity::Warning => "\x1b[33m",
        Severity::Error => "\x1b[31m",
    }
}

/// Print the report on stdout.
pub fn print(report: &Report, config: &std::path::Path, json: bool) {
    let counts = report.counts();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        let json = JsonReport {
            version: 1,
            config: config.display().to_string(),
            checked_as_uid: nix::unistd::geteuid().as_raw(),
            summary: counts,
            findings: report
                .findings
                .iter()
                .map(|f| JsonFinding {
                    id: f.id(),
                    severity: f.severity.label(),
                    accepted: f.accepted,
                    group: f.group().name(),
                    subject: &f.subject,
                    message: &f.message,
                    fix: f.fix.as_deref(),
                })
                .collect(),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return;
    }
    let colour_on = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for g in Group::ALL
        .into_iter()
        .filter(|g| report.findings.iter().any(|f| f.group() == *g))
    {
        let _ = writeln!(out, "{g}:");
        for f in report.findings.iter().filter(|f| f.group() == g) {
            let label = format!("{:<7}", f.severity.label());
            let label = if colour_on {
                format!("{}{label}\x1b[0m", colour(f.severity))
            } else {
                label
            };
            // Subjects, messages and fixes carry outside text (the app's check messages,
            // a server's errors, file names): shown, never acted on by the terminal.
            let _ = write!(
                out,
                "  {label} {}: {}",
                printable(&f.subject),
                printable(&f.message)
            );
            let accepted = if f.accepted { ", accepted" } else { "" };
            let _ = write!(out, " [{}{accepted}]", printable(&f.id()));
            if let Some(fix) = f.fix.as_ref().filter(|_| !f.accepted) {
                let _ = write!(out, "\n          fix: {}", printable(fix));
            }
            let _ = writeln!(out);
        }
    }
    let accepted = report.findings.iter().filter(|f| f.accepted).count();
    let _ = writeln!(
        out,
        "{} error(s), {} warning(s), {} info, {} ok{}",
        counts["error"],
        counts["warning"],
        counts["info"],
        counts["ok"],
        if accepted > 0 {
            format!(" ({accepted} of the info accepted in check.accept)")
        } else {
            String::new()
        }
    );
}
