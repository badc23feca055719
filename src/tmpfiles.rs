//! `bitpoll-launcher tmpfiles`: the data directory as a tmpfiles.d(5) entry. A unit with
//! ProtectSystem=strict cannot create it below a read-only /var/lib.

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
    format!(
        "# Bitpoll data directory; install as /etc/tmpfiles.d/{}.conf and run systemd-tmpfiles --create.\nd {} 0750 {} {} -\n",
        s.user,
        s.data_dir.display(),
        s.user,
        s.group
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tmpfiles_creates_the_data_dir_with_its_owner() {
        let cfg = launcher_config::parse_str(
            r#"
[service]
user = "bitpoll"
group = "web"
data_dir = "/var/lib/bitpoll"
[app]
python = "/p/bin/python"
source_dir = "/p/src"
[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { generate = "fernet-key" }
[server]
command = ["/p/bin/gunicorn"]
"#,
        )
        .unwrap();
        let text = super::render(&cfg);
        assert!(
            text.ends_with("d /var/lib/bitpoll 0750 bitpoll web -\n"),
            "{text}"
        );
    }
}
