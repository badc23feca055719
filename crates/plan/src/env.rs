//! The app's environment, built from scratch.
//!
//! Nothing of the caller's environment reaches the app: a start from a root shell and a
//! start by systemd give it the same variables, byte for byte, but for those the service
//! manager sets for this one start ([`ALLOWLIST`], [`SERVER_ONLY`]). `PATH` is the
//! interpreter's directory and a fixed system path, `LANG` a fixed default; `[environment]`
//! sets either. The inputs are explicit arguments (the inherited environment is a slice,
//! not read here), so the result is a pure function of them.

use std::collections::BTreeMap;
use std::path::Path;

use launcher_config::{Config, DATA_DIR_VAR, Database};
use zeroize::Zeroizing;

use crate::secret::SecretValue;

/// The app's environment, sorted by name. Every value sits in a zeroizing buffer (some are
/// secrets), until the exec copies them into its argument block (launcher_sys::exec, which
/// zeroizes its copy should the exec fail) or the value is dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Env(Vec<(String, Zeroizing<String>)>);

impl Env {
    /// The entries, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The entries borrowed, for the exec.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.iter().collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Set `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: String, value: String) {
        let value = Zeroizing::new(value);
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (name, value)),
        }
    }

    /// An environment of these entries (later ones win).
    pub fn of(pairs: impl IntoIterator<Item = (String, String)>) -> Env {
        let mut env = Env::default();
        for (k, v) in pairs {
            env.set(k, v);
        }
        env
    }

    /// A plain copy, for tests and messages that compare whole environments.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl FromIterator<(String, String)> for Env {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Env {
        Env::of(pairs)
    }
}

/// Who the environment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The preparation child: its output is piped to the launcher, it must not notify
    /// systemd and does not get passed sockets.
    Prepare,
    /// The server, exec'd in place of the launcher: it inherits the launcher's PID, so
    /// systemd's notify socket and socket activation variables are valid for it.
    Server,
    /// `manage`: an admin's command on a terminal; like Prepare, plus TERM, and HOME is
    /// [`ADMIN_HOME`].
    Manage,
    /// `check`'s probe of the app: like Prepare, and HOME is [`ADMIN_HOME`].
    Probe,
}

/// HOME for the app's code started by an admin's command (`check`'s probe, `manage`): a
/// directory that does not exist and that only root could create. The service's own HOME
/// is its data directory, which the app can write; a file it planted there (Django's shell
/// runs `~/.pythonrc.py`, IPython `~/.ipython/profile_default/startup/`) must not run in
/// an admin's session.
pub const ADMIN_HOME: &str = "/nonexistent";

/// Inherited variables that pass through to the app unchanged: the ones systemd sets for
/// the unit's process (a shell has none of them). Nothing a shell sets passes: not
/// `PATH`, the locale (`LANG`, `LC_*`) or `TZ`.
pub const ALLOWLIST: &[&str] = &[
    "INVOCATION_ID",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
];

/// Inherited variables that only make sense for the process holding the launcher's PID
/// and standard streams.
const SERVER_ONLY: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// The app's `PATH` after the interpreter's directory, whatever `PATH` the launcher got.
pub const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
pub const DEFAULT_LANG: &str = "C.UTF-8";
/// Variables the launcher sets to fixed values unless `[environment]` sets them; like the
/// inherited ones, they do not count in a preparation stamp's fingerprint unless
/// configured (they never vary by themselves; TZ follows BITPOLL_TIME_ZONE, which counts).
pub const DEFAULTS: &[&str] = &["PATH", "LANG", "TZ"];

/// The variable of the app's environment that names its zone (Bitpoll's settings read it
/// into TIME_ZONE).
pub const TIME_ZONE_VAR: &str = "BITPOLL_TIME_ZONE";
/// Bitpoll's TIME_ZONE when `BITPOLL_TIME_ZONE` does not set one (its settings.py).
pub const DEFAULT_TIME_ZONE: &str = "Europe/Berlin";

/// The app's zone as the config gives it: `BITPOLL_TIME_ZONE` of `[environment]`, else
/// Bitpoll's default. The launcher's text log tells time in it, and the app gets it as
/// `TZ`, so that what runs before Django sets its TIME_ZONE (gunicorn's arbiter without
/// `--preload`) tells time in it too.
pub fn time_zone(cfg: &Config) -> &str {
    cfg.environment
        .get(TIME_ZONE_VAR)
        .map_or(DEFAULT_TIME_ZONE, String::as_str)
}

/// Variables that differ on every start without changing what preparation does; left out
/// of stamp fingerprints.
pub const VOLATILE: &[&str] = &[
    "INVOCATION_ID",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// Everything the environment is built from.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub secrets: &'a [(String, SecretValue)],
    /// The launcher's own environment (only allowlisted entries are used).
    pub inherited: &'a [(String, String)],
    /// The service user's name and home directory.
    pub user: &'a str,
    pub home: &'a Path,
    /// Directories of translation catalogs compiled into the data directory, which the app
    /// puts first in LOCALE_PATHS (see judge::prepare::catalog_targets); empty when the
    /// app's own source carries them compiled.
    pub locale_paths: &'a [std::path::PathBuf],
}

/// The variable that tells the app where the launcher compiled its catalogs.
pub const LOCALE_PATHS_VAR: &str = "BITPOLL_LOCALE_PATHS";

/// The environment, sorted by name. Later sources win: allowlisted inherited variables,
/// the launcher's own variables, `[environment]`, then the secrets. Config validation
/// already refuses overlaps between the last three.
pub fn build(inputs: &Inputs<'_>, purpose: Purpose) -> Env {
    let cfg = inputs.config;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in inputs.inherited {
        let allowed = ALLOWLIST.contains(&k.as_str())
            || (purpose == Purpose::Server && SERVER_ONLY.contains(&k.as_str()))
            || (purpose == Purpose::Manage && k == "TERM");
        if allowed {
            env.insert(k.clone(), v.clone());
        }
    }
    env.insert("PATH".into(), app_path(&cfg.app.python));
    env.insert("LANG".into(), DEFAULT_LANG.into());
    env.insert("TZ".into(), time_zone(cfg).into());

    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    let home = match purpose {
        Purpose::Manage | Purpose::Probe => Path::new(ADMIN_HOME),
        Purpose::Prepare | Purpose::Server => inputs.home,
    };
    set("HOME", home.display().to_string());
    set("USER", inputs.user.to_string());
    set("LOGNAME", inputs.user.to_string());
    set("PYTHONPATH", cfg.app.source_dir.display().to_string());
    set("DJANGO_SETTINGS_MODULE", cfg.app.settings_module.clone());
    set("PYTHONUNBUFFERED", "1".into());
    // No user site directory (~/.local/lib/pythonX.Y/site-packages, whose
    // usercustomize.py every interpreter would run): the app's code and libraries come
    // from the source directory and the interpreter's environment only.
    set("PYTHONNOUSERSITE", "1".into());
    set(DATA_DIR_VAR, cfg.service.data_dir.display().to_string());
    // Only where the launcher collects: with collectstatic off the app's own default
    // stands (a package's tree built with it, as the Nix package's).
    if let (true, crate::layout::StaticLayout::Versioned { .. }) =
        (cfg.prepare.collectstatic, crate::layout::static_layout(cfg))
    {
        set(
            "BITPOLL_STATIC_ROOT",
            crate::layout::static_root(cfg).display().to_string(),
        );
    }
    if !inputs.locale_paths.is_empty() {
        let paths: Vec<String> = inputs
            .locale_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        set(LOCALE_PATHS_VAR, paths.join(":"));
    }
    match &cfg.database {
        Database::Sqlite { path } => {
            set("BITPOLL_DB_ENGINE", "sqlite".into());
            set("BITPOLL_DB_PATH", path.display().to_string());
        }
        Database::Postgresql {
            name,
            user,
            host,
            port,
            sslmode,
            sslrootcert,
            ..
        } => {
            set("BITPOLL_DB_ENGINE", "postgresql".into());
            set("BITPOLL_DB_NAME", name.clone());
            if let Some(user) = user {
                set("BITPOLL_DB_USER", user.clone());
            }
            if let Some(host) = host {
                set("BITPOLL_DB_HOST", host.clone());
            }
            if let Some(port) = port {
                set("BITPOLL_DB_PORT", port.to_string());
            }
            // libpq's own variables: the app's driver honours them whatever its
            // settings_local says, so the app and the launcher's connection agree.
            set("PGSSLMODE", sslmode.as_str().into());
            if let Some(ca) = sslrootcert {
                set("PGSSLROOTCERT", ca.display().to_string());
            }
        }
    }
    for (k, v) in &cfg.environment {
        env.insert(k.clone(), v.clone());
    }
    let mut out = Env::of(env);
    for (k, v) in inputs.secrets {
        out.set(k.clone(), v.expose().to_string());
    }
    out
}

/// The interpreter's directory first, as a virtualenv's activate script would do, so tools
/// installed beside it are found, then [`SYSTEM_PATH`].
pub fn app_path(python: &Path) -> String {
    match python.parent() {
        Some(bin) if !SYSTEM_PATH.split(':').any(|p| Path::new(p) == bin) => {
            format!("{}:{SYSTEM_PATH}", bin.display())
        }
        _ => SYSTEM_PATH.to_string(),
    }
}

/// Variables the caller of `manage` passes through for one command: every
/// `DJANGO_SUPERUSER_*` of the caller's environment (what `createsuperuser --noinput`
/// reads), and each `--env NAME=VALUE` or `--env NAME` (the caller's value). Variables the
/// launcher sets and secrets cannot be replaced this way.
pub fn manage_extras(
    requested: &[String],
    caller: &[(String, String)],
    config: &Config,
) -> Result<Vec<(String, String)>, String> {
    let mut out: BTreeMap<String, String> = caller
        .iter()
        .filter(|(k, _)| k.starts_with("DJANGO_SUPERUSER_"))
        .cloned()
        .collect();
    for item in requested {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = caller
                    .iter()
                    .find(|(k, _)| k == item)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        format!("--env {item}: {item} is not set in your environment; write --env {item}=VALUE")
                    })?;
                (item.clone(), v)
            }
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "--env {item}: {name:?} is not an environment variable name"
            ));
        }
        if launcher_config::RESERVED_VARIABLES.contains(&name.as_str()) {
            return Err(format!("--env {name}: set by the launcher itself"));
        }
        if config.secrets.contains_key(&name)
            || launcher_config::SECRET_VARIABLES.contains(&name.as_str())
        {
            return Err(format!(
                "--env {name}: a secret comes from its configured source, not the command line"
            ));
        }
        if value.contains('\0') || value.len() > launcher_config::MAX_ENV_VALUE {
            return Err(format!(
                "--env {name}: the value must be at most {} bytes without NUL",
                launcher_config::MAX_ENV_VALUE
            ));
        }
        out.insert(name, value);
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        launcher_config::parse_str(config_text()).unwrap()
    }

    fn config_text() -> &'static str {
        r#"
[service]
user = "bitpoll"
data_dir = "/var/lib/bitpoll"
[app]
python = "/opt/venv/bin/python"
source_dir = "/opt/src"
[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { file = "/run/keys/fek" }
[environment]
BITPOLL_ALLOWED_HOSTS = "polls.example.org"
[server]
command = ["/opt/venv/bin/gunicorn", "bitpoll.wsgi:application"]
"#
    }

    fn inherited() -> Vec<(String, String)> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "42"),
            ("JOURNAL_STREAM", "8:1234"),
            ("INVOCATION_ID", "abc"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/bitpoll.service"),
            ("SUDO_USER", "admin"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("PYTHONSTARTUP", "/root/.pythonrc"),
            ("BITPOLL_DATA_DIR", "/wrong"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn build_for(purpose: Purpose) -> BTreeMap<String, String> {
        let cfg = config();
        let secret = crate::secret::from_bytes(b"s3cr3t-value-xyz".to_vec()).unwrap();
        let secrets = vec![("BITPOLL_SECRET_KEY".to_string(), secret)];
        let inherited = inherited();
        let inputs = Inputs {
            config: &cfg,
            secrets: &secrets,
            inherited: &inherited,
            user: "bitpoll",
            home: Path::new("/var/lib/bitpoll"),
            locale_paths: &[],
        };
        build(&inputs, purpose).to_map()
    }

    #[test]
    fn server_environment_is_built_from_scratch() {
        let env = build_for(Purpose::Server);
        let want: BTreeMap<String, String> = [
            ("BITPOLL_ALLOWED_HOSTS", "polls.example.org"),
            ("BITPOLL_DATA_DIR", "/var/lib/bitpoll"),
            ("BITPOLL_DB_ENGINE", "sqlite"),
            ("BITPOLL_DB_PATH", "/var/lib/bitpoll/db.sqlite3"),
            ("BITPOLL_SECRET_KEY", "s3cr3t-value-xyz"),
            ("BITPOLL_STATIC_ROOT", "/var/lib/bitpoll/static/current"),
            ("DJANGO_SETTINGS_MODULE", "bitpoll.settings"),
            ("HOME", "/var/lib/bitpoll"),
            ("INVOCATION_ID", "abc"),
            ("JOURNAL_STREAM", "8:1234"),
            ("LANG", "C.UTF-8"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "42"),
            ("LOGNAME", "bitpoll"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("PATH", "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"),
            ("PYTHONNOUSERSITE", "1"),
            ("PYTHONPATH", "/opt/src"),
            ("PYTHONUNBUFFERED", "1"),
            ("TZ", "Europe/Berlin"),
            ("USER", "bitpoll"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn preparation_gets_no_notify_socket_passed_fds_or_journal_stream() {
        let env = build_for(Purpose::Prepare);
        for k in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "JOURNAL_STREAM",
        ] {
            assert!(
                !env.contains_key(k),
                "{k} leaked into the preparation environment"
            );
        }
        assert_eq!(env["BITPOLL_DATA_DIR"], "/var/lib/bitpoll");
    }

    #[test]
    fn dangerous_inherited_variables_never_pass() {
        for purpose in [
            Purpose::Prepare,
            Purpose::Server,
            Purpose::Manage,
            Purpose::Probe,
        ] {
            let env = build_for(purpose);
            for k in [
                "LD_PRELOAD",
                "PYTHONSTARTUP",
                "SUDO_USER",
                "CREDENTIALS_DIRECTORY",
            ] {
                assert!(!env.contains_key(k), "{k} passed for {purpose:?}");
            }
        }
    }

    #[test]
    fn the_static_root_is_set_only_where_the_launcher_collects() {
        let inherited = inherited();
        let server_env = |cfg: &Config| -> BTreeMap<String, String> {
            let inputs = Inputs {
                config: cfg,
                secrets: &[],
                inherited: &inherited,
                user: "bitpoll",
                home: Path::new("/var/lib/bitpoll"),
                locale_paths: &[],
            };
            build(&inputs, Purpose::Server).to_map()
        };
        let mut cfg = config();
        let env = server_env(&cfg);
        assert_eq!(
            env["BITPOLL_STATIC_ROOT"],
            "/var/lib/bitpoll/static/current"
        );
        cfg.prepare.collectstatic = false;
        let env = server_env(&cfg);
        assert!(!env.contains_key("BITPOLL_STATIC_ROOT"), "{env:?}");
    }

    #[test]
    fn every_python_skips_the_user_site_and_admin_commands_get_a_home_the_app_cannot_write() {
        for (purpose, home) in [
            (Purpose::Prepare, "/var/lib/bitpoll"),
            (Purpose::Server, "/var/lib/bitpoll"),
            (Purpose::Manage, ADMIN_HOME),
            (Purpose::Probe, ADMIN_HOME),
        ] {
            let env = build_for(purpose);
            assert_eq!(env["PYTHONNOUSERSITE"], "1", "{purpose:?}");
            assert_eq!(env["HOME"], home, "{purpose:?}");
        }
    }

    #[test]
    fn manage_passes_superuser_variables_and_requested_ones_but_no_reserved_or_secret() {
        let cfg = config();
        let caller: Vec<(String, String)> = [
            ("DJANGO_SUPERUSER_USERNAME", "admin"),
            ("DJANGO_SUPERUSER_PASSWORD", "pw"),
            ("FOO", "from-caller"),
            ("LD_PRELOAD", "/tmp/x.so"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = manage_extras(&["FOO".into(), "BAR=1".into()], &caller, &cfg).unwrap();
        let got: BTreeMap<_, _> = got.into_iter().collect();
        assert_eq!(got["DJANGO_SUPERUSER_USERNAME"], "admin");
        assert_eq!(got["FOO"], "from-caller");
        assert_eq!(got["BAR"], "1");
        assert!(!got.contains_key("LD_PRELOAD"));
        for bad in [
            "BITPOLL_DATA_DIR=/x",
            "BITPOLL_SECRET_KEY=x",
            "MISSING",
            "1X=2",
        ] {
            assert!(
                manage_extras(&[bad.to_string()], &caller, &cfg).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn nothing_of_the_callers_shell_reaches_the_app() {
        let cfg = config();
        let shell: Vec<(String, String)> = [
            ("PATH", "/root/.cargo/bin:/root/bin:/usr/sbin:/usr/bin"),
            ("LANG", "de_DE.UTF-8"),
            ("LANGUAGE", "de"),
            ("LC_ALL", "de_DE.UTF-8"),
            ("TZ", "America/New_York"),
            ("TZDIR", "/root/zoneinfo"),
            ("LOCALE_ARCHIVE", "/root/locale-archive"),
            ("HOME", "/root"),
            ("SHELL", "/bin/zsh"),
            ("TERM", "xterm-256color"),
            ("SSH_AUTH_SOCK", "/tmp/ssh-x/agent.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for purpose in [
            Purpose::Prepare,
            Purpose::Server,
            Purpose::Manage,
            Purpose::Probe,
        ] {
            let build_with = |inherited: &[(String, String)]| {
                build(
                    &Inputs {
                        config: &cfg,
                        secrets: &[],
                        inherited,
                        user: "bitpoll",
                        home: Path::new("/var/lib/bitpoll"),
                        locale_paths: &[],
                    },
                    purpose,
                )
                .to_map()
            };
            let mut from_shell = build_with(&shell);
            let from_nothing = build_with(&[]);
            if purpose == Purpose::Manage {
                // manage's command runs on the admin's terminal.
                assert_eq!(from_shell.remove("TERM").as_deref(), Some("xterm-256color"));
            }
            assert_eq!(from_shell, from_nothing, "{purpose:?}");
            assert_eq!(
                from_nothing["PATH"],
                format!("/opt/venv/bin:{SYSTEM_PATH}"),
                "{purpose:?}"
            );
            assert_eq!(from_nothing["LANG"], DEFAULT_LANG, "{purpose:?}");
            assert_eq!(from_nothing["TZ"], DEFAULT_TIME_ZONE, "{purpose:?}");
        }
    }

    #[test]
    fn the_config_sets_path_and_the_locale_explicitly() {
        let cfg = launcher_config::parse_str(&config_text().replace(
            "[environment]\n",
            "[environment]\nPATH = \"/opt/tools/bin:/usr/bin\"\nLANG = \"de_DE.UTF-8\"\nTZ = \"UTC\"\n",
        ))
        .unwrap();
        let env = build(
            &Inputs {
                config: &cfg,
                secrets: &[],
                inherited: &inherited(),
                user: "bitpoll",
                home: Path::new("/var/lib/bitpoll"),
                locale_paths: &[],
            },
            Purpose::Server,
        )
        .to_map();
        assert_eq!(env["PATH"], "/opt/tools/bin:/usr/bin");
        assert_eq!(env["LANG"], "de_DE.UTF-8");
        assert_eq!(env["TZ"], "UTC");
    }

    #[test]
    fn tz_is_the_apps_zone() {
        let cfg = launcher_config::parse_str(&config_text().replace(
            "[environment]\n",
            "[environment]\nBITPOLL_TIME_ZONE = \"America/Chicago\"\n",
        ))
        .unwrap();
        let env = build(
            &Inputs {
                config: &cfg,
                secrets: &[],
                inherited: &[("TZ".to_string(), "Asia/Tokyo".to_string())],
                user: "bitpoll",
                home: Path::new("/var/lib/bitpoll"),
                locale_paths: &[],
            },
            Purpose::Server,
        )
        .to_map();
        assert_eq!(env["TZ"], "America/Chicago");
        assert_eq!(env["BITPOLL_TIME_ZONE"], "America/Chicago");
    }

    #[test]
    fn an_interpreter_in_a_system_directory_is_not_named_twice() {
        assert_eq!(app_path(Path::new("/usr/bin/python3")), SYSTEM_PATH);
        assert_eq!(
            app_path(Path::new("/opt/venv/bin/python")),
            format!("/opt/venv/bin:{SYSTEM_PATH}")
        );
    }

    #[test]
    fn postgresql_settings_reach_the_app_with_libpq_tls_variables() {
        let cfg = launcher_config::parse_str(&format!(
            "{}\n[database]\nengine = \"postgresql\"\nname = \"polls\"\nhost = \"db.internal\"\nport = 5433\nsslmode = \"verify-full\"\nsslrootcert = \"/etc/ssl/db-ca.pem\"\n",
            config_text()
        ))
        .unwrap();
        let inputs = Inputs {
            config: &cfg,
            secrets: &[],
            inherited: &[],
            user: "bitpoll",
            home: Path::new("/var/lib/bitpoll"),
            locale_paths: &[],
        };
        let env: BTreeMap<_, _> = build(&inputs, Purpose::Server).to_map();
        for (k, v) in [
            ("BITPOLL_DB_ENGINE", "postgresql"),
            ("BITPOLL_DB_NAME", "polls"),
            ("BITPOLL_DB_HOST", "db.internal"),
            ("BITPOLL_DB_PORT", "5433"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/etc/ssl/db-ca.pem"),
        ] {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!env.contains_key("BITPOLL_DB_PATH"));
    }
}
