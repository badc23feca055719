//! The data directory tree the launcher maintains, and where things live in it.

use std::path::{Path, PathBuf};

use launcher_config::{Config, Database};

/// A directory the launcher keeps with an exact mode, owned by the service user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// Relative to the data directory; empty for the data directory itself.
    pub name: &'static str,
    pub mode: u32,
}

/// Sub-directory holding generated secrets (0700).
pub const SECRETS_DIR: &str = "secrets";
/// Sub-directory holding preparation stamps.
pub const STATE_DIR: &str = "state";
pub const STATIC_DIR: &str = "static";
pub const MEDIA_DIR: &str = "media";
/// Sub-directory holding backups of the SQLite database taken before migrations (0700:
/// they hold everything the database holds).
pub const BACKUPS_DIR: &str = "backups";
/// Sub-directory holding the translation catalogs compiled from a source the service may
/// not write (created by the preparation as the service user).
pub const LOCALE_DIR: &str = "locale";

/// The tree, parents first. The data directory and static/ are group-readable so a web
/// server in the service group can serve static files; secrets/ is the user's alone.
pub const TREE: &[DirSpec] = &[
    DirSpec {
        name: "",
        mode: 0o750,
    },
    DirSpec {
        name: STATIC_DIR,
        mode: 0o750,
    },
    DirSpec {
        name: MEDIA_DIR,
        mode: 0o750,
    },
    DirSpec {
        name: STATE_DIR,
        mode: 0o750,
    },
    DirSpec {
        name: SECRETS_DIR,
        mode: 0o700,
    },
    DirSpec {
        name: BACKUPS_DIR,
        mode: 0o700,
    },
];

/// A backup's file name for a time (seconds since the epoch): names sort by age.
pub fn backup_name(secs: u64) -> String {
    format!(
        "db-{}.sqlite3",
        crate::stamp::utc(secs)
            .replace([' ', ':'], "")
            .trim_end_matches("UTC")
            .replace('-', "")
    )
}

/// Is `name` a backup's file name (see [`backup_name`])?
pub fn is_backup_name(name: &str) -> bool {
    name.strip_prefix("db-")
        .and_then(|n| n.strip_suffix(".sqlite3"))
        .is_some_and(|t| t.len() == 14 && t.bytes().all(|b| b.is_ascii_digit()))
}

/// The PID in the name of a temporary file the launcher or its preparation process
/// writes in directory `dir` of the layout and renames into place when complete (None for
/// any other name): `.NAME.tmp-PID` in secrets/ and state/, and a backup's
/// `db-TIME.sqlite3.tmp-PID` (with SQLite's `-journal` beside it) in backups/. What such
/// a file is left by (a start that was killed) is never used, and the next start removes it.
pub fn temporary_pid(dir: &str, name: &str) -> Option<u32> {
    let digits = |s: &str| {
        (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    match dir {
        SECRETS_DIR | STATE_DIR => {
            let (stem, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
            (!stem.is_empty() && !stem.contains('/')).then_some(())?;
            digits(pid)
        }
        BACKUPS_DIR => {
            let (backup, rest) = name.split_once(".tmp-")?;
            is_backup_name(backup).then_some(())?;
            digits(rest.strip_suffix("-journal").unwrap_or(rest))
        }
        _ => None,
    }
}

/// Mode of generated secret files.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// The umask of `run` and `manage`, and so of everything the app creates: nothing it
/// writes is readable by others (the web server in the group may read what the tree's
/// modes let it).
pub const UMASK: u32 = 0o027;
/// Mode of stamp files.
pub const STAMP_FILE_MODE: u32 = 0o600;

/// File name, inside [`STATE_DIR`], of the gunicorn config with the readiness hooks that
/// `[server] ready = "worker"` or `"answer"` passes to the server (written on every start).
pub const READY_HOOK_FILE: &str = "gunicorn-ready.py";

/// The server's argv: `server.command`, plus `-c <hook>` when readiness waits for the
/// first worker, not only gunicorn's arbiter (gunicorn takes options after the app too).
pub fn server_argv(cfg: &Config) -> Vec<String> {
    let mut argv = cfg.server.command.clone();
    if cfg.server.ready.uses_hook() {
        argv.push("-c".into());
        argv.push(
            cfg.service
                .data_dir
                .join(STATE_DIR)
                .join(READY_HOOK_FILE)
                .display()
                .to_string(),
        );
    }
    argv
}
/// File name of the key record (crate::keys) inside [`STATE_DIR`].
pub const KEYS_FILE: &str = "keys";

/// File name of a step's stamp inside [`STATE_DIR`].
pub fn stamp_file_name(step: crate::Step) -> String {
    format!("{}.stamp", step.name())
}

/// The link inside `<data_dir>/static` that names the static tree being served.
pub const STATIC_CURRENT: &str = "current";

/// Where collected static files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticLayout {
    /// The default: each collectstatic fills a fresh `<dir>/v-<time>` tree, and the link
    /// `<dir>/current` is switched to it in one rename once it is complete; the app's
    /// STATIC_ROOT (and a web server's alias) is `<dir>/current`.
    Versioned { dir: PathBuf },
    /// The admin's own BITPOLL_STATIC_ROOT: collected in place.
    Fixed(PathBuf),
}

impl StaticLayout {
    /// The app's STATIC_ROOT.
    pub fn root(&self) -> PathBuf {
        match self {
            StaticLayout::Versioned { dir } => dir.join(STATIC_CURRENT),
            StaticLayout::Fixed(root) => root.clone(),
        }
    }
}

pub fn static_layout(cfg: &Config) -> StaticLayout {
    match cfg.environment.get("BITPOLL_STATIC_ROOT") {
        Some(root) => StaticLayout::Fixed(PathBuf::from(root)),
        None => StaticLayout::Versioned {
            dir: cfg.service.data_dir.join(STATIC_DIR),
        },
    }
}

/// Where the app's STATIC_ROOT is (see [`static_layout`]).
pub fn static_root(cfg: &Config) -> PathBuf {
    static_layout(cfg).root()
}

/// The address the server binds: the first `--bind`/`-b`/`--bind=` of server.command.
pub fn server_bind(cfg: &Config) -> Option<&str> {
    let mut it = cfg.server.command.iter();
    while let Some(a) = it.next() {
        if a == "--bind" || a == "-b" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix("--bind=") {
            return Some(v);
        }
    }
    None
}

/// A bind address that is a Unix socket (`unix:/path` or `/path`), not `host:port`.
pub fn binds_unix_socket(bind: &str) -> bool {
    let b = bind.trim();
    b.starts_with("unix:") || b.starts_with('/')
}

/// Where uploaded files go: the app's BITPOLL_MEDIA_ROOT, or <data_dir>/media.
pub fn media_root(cfg: &Config) -> PathBuf {
    cfg.environment
        .get("BITPOLL_MEDIA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cfg.service.data_dir.join(MEDIA_DIR))
}

/// The SQLite database and the side files SQLite keeps next to it.
pub fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ["", "-journal", "-wal", "-shm"]
        .iter()
        .map(|suffix| db.with_file_name(format!("{name}{suffix}")))
        .collect()
}

/// The SQLite database and its side files by name, when the database lives directly in
/// the data directory (the launcher adopts and protects those; elsewhere they are the
/// admin's).
pub fn sqlite_files_in_data_dir(cfg: &Config) -> Vec<String> {
    match &cfg.database {
        Database::Sqlite { path } if path.parent() == Some(cfg.service.data_dir.as_path()) => {
            sqlite_files(path)
                .iter()
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Where the catalogs of the source's translation base directory `rel` (relative to the
/// source, e.g. `locale` or `bitpoll/poll/locale`) are compiled to: the data directory's
/// locale/ mirrors the source layout without the trailing `locale` component
/// (`locale` -> `<data_dir>/locale`, `bitpoll/poll/locale` -> `<data_dir>/locale/bitpoll/poll`).
pub fn catalog_target(cfg: &Config, rel: &Path) -> PathBuf {
    let rel = if rel.file_name().is_some_and(|n| n == "locale") {
        rel.parent().unwrap_or(Path::new(""))
    } else {
        rel
    };
    cfg.service.data_dir.join(LOCALE_DIR).join(rel)
}

/// What the app writes inside its own source directory when told to (a static root,
/// media root or SQLite database placed there): outputs, never inputs of a fingerprint.
pub fn app_outputs(cfg: &Config) -> Vec<PathBuf> {
    let mut outputs = vec![
        static_root(cfg),
        media_root(cfg),
        cfg.service.data_dir.clone(),
    ];
    if let Database::Sqlite { path } = &cfg.database {
        outputs.extend(sqlite_files(path));
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_hooks_are_passed_as_gunicorns_config_file() {
        let text = r#"
[service]
user = "bitpoll"
data_dir = "/var/lib/bitpoll"
[app]
python = "/v/bin/python"
source_dir = "/src"
[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { generate = "fernet-key" }
[server]
command = ["/v/bin/gunicorn", "app:wsgi"]
"#;
        let hooked = [
            "/v/bin/gunicorn",
            "app:wsgi",
            "-c",
            "/var/lib/bitpoll/state/gunicorn-ready.py",
        ];
        // ready = "answer", the default for gunicorn, and "worker" pass the hooks.
        let cfg = launcher_config::parse_str(text).unwrap();
        assert_eq!(server_argv(&cfg), hooked);
        let cfg = launcher_config::parse_str(&format!("{text}ready = \"worker\"\n")).unwrap();
        assert_eq!(server_argv(&cfg), hooked);
        let cfg = launcher_config::parse_str(&format!("{text}ready = \"arbiter\"\n")).unwrap();
        assert_eq!(server_argv(&cfg), ["/v/bin/gunicorn", "app:wsgi"]);
    }

    #[test]
    fn temporaries_are_recognized_by_directory_and_name_only() {
        for (dir, name, pid) in [
            (SECRETS_DIR, ".BITPOLL_SECRET_KEY.tmp-4242", Some(4242)),
            (STATE_DIR, ".keys.tmp-7", Some(7)),
            (BACKUPS_DIR, "db-20261125193926.sqlite3.tmp-99", Some(99)),
            (
                BACKUPS_DIR,
                "db-20261125193926.sqlite3.tmp-99-journal",
                Some(99),
            ),
            (SECRETS_DIR, "BITPOLL_SECRET_KEY", None),
            (SECRETS_DIR, ".x.tmp-", None),
            (SECRETS_DIR, ".x.tmp-12a", None),
            (STATE_DIR, "..tmp-5", None),
            (BACKUPS_DIR, "db-20261125193926.sqlite3", None),
            (BACKUPS_DIR, "other.sqlite3.tmp-5", None),
            (STATIC_DIR, ".current.tmp-5", None),
        ] {
            assert_eq!(temporary_pid(dir, name), pid, "{dir}/{name}");
        }
    }

    #[test]
    fn backup_names_sort_by_time_and_are_recognized() {
        let a = backup_name(1_795_635_566);
        assert_eq!(a, "db-20261125193926.sqlite3");
        assert!(is_backup_name(&a));
        assert!(backup_name(1_795_635_567) > a);
        for other in [
            "db.sqlite3",
            "db-x.sqlite3",
            "db-2026.sqlite3",
            "../db-20261125193926.sqlite3",
        ] {
            assert!(!is_backup_name(other), "{other}");
        }
    }

    #[test]
    fn catalogs_mirror_the_source_layout_in_the_data_dir() {
        let cfg = crate::judge::fixture::config("");
        assert_eq!(
            catalog_target(&cfg, Path::new("locale")),
            Path::new("/var/lib/bitpoll/locale")
        );
        assert_eq!(
            catalog_target(&cfg, Path::new("bitpoll/poll/locale")),
            Path::new("/var/lib/bitpoll/locale/bitpoll/poll")
        );
    }

    #[test]
    fn data_dir_comes_first_and_secrets_are_private() {
        assert_eq!(TREE[0].name, "");
        let secrets = TREE.iter().find(|d| d.name == SECRETS_DIR).unwrap();
        assert_eq!(secrets.mode, 0o700);
        assert!(
            TREE.iter().all(|d| d.mode & 0o007 == 0),
            "nothing is world-accessible"
        );
    }
}
