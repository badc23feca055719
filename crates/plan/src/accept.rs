//! `[check] accept`: the warnings an admin has looked at and accepts (an HTTP-only test
//! host's `django:security.W004`, a single PostgreSQL instance's generated key). An
//! accepted warning counts as info: `check` prints it as such and its exit status does not
//! change, and `run` logs it at info. An error cannot be accepted: `run` refuses on it, or
//! the deployment is unsafe. An entry that does not apply is itself a warning, so the list
//! does not outlive what it accepted.

use crate::finding::{Finding, Severity};
use crate::rule::{DJANGO_PREFIX, Rule};

/// Whether `f` is a warning `accept` names.
pub fn accepts(accept: &[String], f: &Finding) -> bool {
    f.severity == Severity::Warning && accept.iter().any(|id| *id == f.id())
}

/// Marks the accepted warnings of `findings` (severity info, `accepted`), and returns a
/// finding for each entry of `accept` that does not apply: it names an error, no rule of
/// this launcher, or a finding that did not occur. `django_checked`: Django's checks ran,
/// so a `django:` id that did not occur is really gone (otherwise it cannot be told).
pub fn apply(accept: &[String], findings: &mut [Finding], django_checked: bool) -> Vec<Finding> {
    for f in findings.iter_mut() {
        if accepts(accept, f) {
            f.severity = Severity::Info;
            f.accepted = true;
        }
    }
    let mut out = Vec::new();
    for id in accept {
        let occurred: Vec<&Finding> = findings.iter().filter(|f| f.id() == *id).collect();
        let quoted = format!("{id:?}");
        let problem = if occurred.iter().any(|f| f.is_error()) {
            Some((
                format!(
                    "{quoted} is an error here, and an error cannot be accepted: `run` refuses on it, or the deployment is unsafe"
                ),
                "fix the error; remove the id from check.accept".to_string(),
            ))
        } else if !occurred.is_empty() {
            None
        } else if let Some(django) = id.strip_prefix(DJANGO_PREFIX) {
            django_checked.then(|| {
                (
                    format!(
                        "{quoted} did not occur: Django's check --deploy no longer reports {django}"
                    ),
                    "remove it from check.accept".to_string(),
                )
            })
        } else if Rule::from_id(id).is_some() {
            Some((
                format!("{quoted} did not occur in this check: the condition it accepted is gone"),
                "remove it from check.accept".to_string(),
            ))
        } else {
            let known: Vec<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
            let hint = launcher_config::did_you_mean(id, &known)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            Some((
                format!("{quoted} is the id of no finding of this launcher{hint}"),
                "correct it, or remove it from check.accept (docs/check.md lists the ids)"
                    .to_string(),
            ))
        };
        if let Some((message, fix)) = problem {
            out.push(Finding::warning(
                Rule::CheckAccept,
                "check.accept",
                message,
                fix,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> Vec<Finding> {
        vec![
            Finding::django(
                Severity::Warning,
                "security.W004",
                "manage.py check --deploy",
                "no HSTS",
                Some("set it".into()),
            ),
            Finding::warning(
                Rule::SecretSharedByInstances,
                "BITPOLL_SECRET_KEY (generate django-secret-key)",
                "generated",
                "share it",
            ),
            Finding::error(
                Rule::DataDirFreeSpace,
                "free space at /",
                "1 MiB free",
                "free",
            ),
            Finding::ok(Rule::AccountUser, "user bitpoll", "exists"),
        ]
    }

    fn ids(v: &[String]) -> Vec<String> {
        v.to_vec()
    }

    #[test]
    fn an_accepted_warning_becomes_accepted_info_and_others_stay() {
        let mut f = findings();
        let accept = ids(&["django:security.W004".into()]);
        let unused = apply(&accept, &mut f, true);
        assert!(unused.is_empty(), "{unused:?}");
        assert_eq!((f[0].severity, f[0].accepted), (Severity::Info, true));
        assert_eq!((f[1].severity, f[1].accepted), (Severity::Warning, false));
    }

    #[test]
    fn an_error_is_not_accepted_and_the_entry_says_so() {
        let mut f = findings();
        let unused = apply(&["data_dir.free_space".into()], &mut f, true);
        assert_eq!(f[2].severity, Severity::Error);
        assert_eq!(unused.len(), 1);
        assert_eq!(unused[0].rule, Rule::CheckAccept);
        assert!(
            unused[0].message.contains("cannot be accepted"),
            "{:?}",
            unused[0]
        );
    }

    #[test]
    fn an_entry_that_no_longer_occurs_is_a_warning_and_a_typo_gets_the_closest_id() {
        let mut f = findings();
        let unused = apply(
            &[
                "django:security.W008".into(),
                "server.control_socket".into(),
                "secrets.shared_by_instance".into(),
                "account.user".into(),
            ],
            &mut f,
            true,
        );
        let messages: Vec<&str> = unused.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(unused.len(), 3, "{messages:?}");
        assert!(
            messages[0].contains("no longer reports security.W008"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("did not occur in this check"),
            "{messages:?}"
        );
        assert!(
            messages[2].contains("did you mean `secrets.shared_by_instances`?"),
            "{messages:?}"
        );
        assert!(unused.iter().all(|f| f.severity == Severity::Warning));
    }

    #[test]
    fn a_django_id_is_not_judged_when_django_did_not_run() {
        let mut f = findings();
        assert!(apply(&["django:security.W008".into()], &mut f, false).is_empty());
    }
}
