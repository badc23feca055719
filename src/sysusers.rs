//! `bitpoll-launcher sysusers`: the service account as a sysusers.d(5) entry, for hosts
//! where the unit's hardening (read-only /etc) forbids creating it at start.

use std::fmt::Write as _;

use launcher_config::Config;

use crate::cli::ConfigArgs;
use crate::exit::{self, Exit, OrExit};

pub fn run(args: &ConfigArgs) -> Result<(), Exit> {
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
    print!("{}", render(&cfg));
    Ok(())
}

pub fn render(cfg: &Config) -> String {
    let s = &cfg.service;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Bitpoll service account; install as /etc/sysusers.d/{}.conf and run systemd-sysusers.",
        s.user
    );
    if s.group == s.user {
        let _ = writeln!(
            out,
            "u {} - \"Bitpoll service\" {} -",
            s.user,
            s.data_dir.display()
        );
    } else {
        let _ = writeln!(out, "g {} -", s.group);
        let _ = writeln!(
            out,
            "u {} - \"Bitpoll service\" {} -",
            s.user,
            s.data_dir.display()
        );
        let _ = writeln!(out, "m {} {}", s.user, s.group);
    }
    out
}

#[cfg(test)]
mod tests {
    fn cfg(group: &str) -> launcher_config::Config {
        launcher_config::parse_str(&format!(
            r#"
[service]
user = "bitpoll"
group = "{group}"
data_dir = "/var/lib/bitpoll"
[app]
python = "/p/bin/python"
source_dir = "/p/src"
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ generate = "fernet-key" }}
[server]
command = ["/p/bin/gunicorn"]
"#
        ))
        .unwrap()
    }

    #[test]
    fn same_named_group_is_one_line() {
        let text = super::render(&cfg("bitpoll"));
        assert!(
            text.ends_with("u bitpoll - \"Bitpoll service\" /var/lib/bitpoll -\n"),
            "{text}"
        );
    }

    #[test]
    fn other_group_gets_a_membership_line() {
        let text = super::render(&cfg("web"));
        assert!(
            text.contains("g web -\n") && text.contains("m bitpoll web\n"),
            "{text}"
        );
    }
}
