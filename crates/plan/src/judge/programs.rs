//! The programs the launcher runs: the interpreter, the app's manage.py, the server.

use launcher_config::Config;

use crate::facts::Facts;
use crate::finding::Finding;
use crate::rule::Rule;

/// One finding per program that is missing; ok findings for those present.
pub fn judge(cfg: &Config, facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let python = cfg.app.python.display().to_string();
    if !facts.programs.python_executable {
        out.push(Finding::error(
            Rule::PythonInterpreter,
            python,
            "is not an executable file",
            "point app.python at the virtualenv's bin/python",
        ));
    }
    let src = cfg.app.source_dir.display().to_string();
    match &facts.source {
        Ok(s) if s.manage_py => {
            out.push(Finding::ok(Rule::AppSource, src.clone(), "holds manage.py"))
        }
        Ok(_) => out.push(Finding::error(
            Rule::AppSource,
            src.clone(),
            "has no manage.py",
            "point app.source_dir at the directory holding the app's manage.py",
        )),
        Err(e) => out.push(Finding::error(
            Rule::AppSource,
            src.clone(),
            format!("cannot be read: {e}"),
            "make the app source readable",
        )),
    }
    // The app's code: whoever may change it runs code as the service user.
    if let (Ok(_), Err(why)) = (&facts.source, &facts.trust.source) {
        let (message, fix) = super::data_dir::untrusted(
            why,
            "the app source",
            &cfg.app.source_dir,
            "install the app where only root can change it (such as /opt or /nix/store)",
        );
        out.push(Finding::error(Rule::AppSourceUntrusted, src, message, fix));
    }
    let server = cfg.server.command[0].clone();
    if facts.programs.server_executable {
        out.push(Finding::ok(Rule::ServerExecutable, server, "is executable"));
    } else {
        out.push(Finding::error(
            Rule::ServerExecutable,
            server,
            "is not an executable file",
            "fix server.command[0]",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture;

    #[test]
    fn missing_programs_are_errors_naming_the_key_to_fix() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.programs.python_executable = false;
        facts.programs.server_executable = false;
        let f = judge(&cfg, &facts);
        let errors: Vec<_> = f.iter().filter(|f| f.is_error()).collect();
        assert_eq!(errors.len(), 2, "{f:?}");
        assert!(errors[0].fix.as_deref().unwrap().contains("app.python"));
        assert!(errors[1].fix.as_deref().unwrap().contains("server.command"));
    }

    #[test]
    fn a_source_others_can_change_is_an_error_naming_the_directory_and_the_fix() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.trust.source = Err(crate::facts::Untrusted::Writable {
            dir: "/srv/pub".into(),
            mode: 0o777,
        });
        let f = judge(&cfg, &facts);
        let e = f.iter().find(|f| f.is_error()).expect("an error");
        assert!(
            e.message
                .contains("/srv/pub on the way to the app source is writable by every user"),
            "{e}"
        );
        assert!(
            e.fix.as_deref().unwrap().contains("chmod go-w /srv/pub"),
            "{e}"
        );
    }

    #[test]
    fn a_source_without_manage_py_is_an_error() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.source.as_mut().unwrap().manage_py = false;
        let f = judge(&cfg, &facts);
        assert!(
            f.iter()
                .any(|f| f.is_error() && f.message == "has no manage.py"),
            "{f:?}"
        );
    }
}
