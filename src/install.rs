//! `bitpoll-launcher install` and `uninstall`: put the unit, the sysusers.d and the
//! tmpfiles.d entry and the journal catalog in place on a systemd host without NixOS,
//! apply them, and take them away again.
//!
//! The four files are exactly what `unit`, `sysusers`, `tmpfiles` and `catalog` print, each with a
//! first line that marks it as written here and carries the sha256 of the rest. That line
//! is how install and uninstall know a file is theirs and unedited: a file without it (the
//! admin's own) or whose content no longer matches it (edited since) is never overwritten
//! or removed without `--force`. Every file is judged before the first one is touched, so
//! a refusal changes nothing. Files are replaced atomically (a temporary file in the same
//! directory, then rename), and a file that already has the wanted content is not written
//! again, so running install twice is the same as running it once.
//!
//! Uninstall stops and disables the unit and removes the files; the account and the data
//! directory (database, secrets, uploads) stay: they are the data.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use launcher_config::Config;
use launcher_plan::rule::CATALOG_PATH;

use crate::cli::{InstallArgs, UninstallArgs};
use crate::exit::{self, Exit, OrExit};

/// The unit's file name: the name admins type with systemctl.
pub const UNIT_NAME: &str = "bitpoll.service";
/// The journal catalog's file name.
pub const CATALOG_NAME: &str = "bitpoll-launcher.catalog";

/// The first line of every file install writes, up to the hash.
const MARK: &str = "# Written by `bitpoll-launcher install`, sha256=";
/// The rest of that line.
const MARK_TAIL: &str =
    ": edit the launcher config and run install again; an edited file is left alone";
/// A file this large is not one install wrote.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The directories the files go to.
#[derive(Debug, Clone)]
pub struct Targets {
    pub unit_dir: PathBuf,
    pub sysusers_dir: PathBuf,
    pub tmpfiles_dir: PathBuf,
    /// Where journalctl reads the catalog of locally installed software.
    pub catalog_dir: PathBuf,
}

impl Targets {
    /// Where the administrator's own units and entries live (not /usr/lib: that belongs to
    /// the distribution's packages).
    pub fn system() -> Targets {
        Targets {
            unit_dir: PathBuf::from("/etc/systemd/system"),
            sysusers_dir: PathBuf::from("/etc/sysusers.d"),
            tmpfiles_dir: PathBuf::from("/etc/tmpfiles.d"),
            catalog_dir: PathBuf::from(CATALOG_PATH)
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf),
        }
    }

    /// The four paths for this config: the unit, the sysusers.d and the tmpfiles.d entry
    /// (the entries are named after the service user, as their own headers say), and the
    /// journal catalog.
    pub fn paths(&self, cfg: &Config) -> [PathBuf; 4] {
        let entry = format!("{}.conf", cfg.service.user);
        [
            self.unit_dir.join(UNIT_NAME),
            self.sysusers_dir.join(&entry),
            self.tmpfiles_dir.join(entry),
            self.catalog_dir.join(CATALOG_NAME),
        ]
    }
}

/// `body` with the marking first line.
pub fn mark(body: &str) -> String {
    format!("{MARK}{}{MARK_TAIL}\n{body}", sha256_hex(body.as_bytes()))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What is at a target path now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Missing,
    /// Written by install and unedited; `same` when it is the wanted text already.
    Ours {
        same: bool,
    },
    /// Written by install, changed since.
    Edited,
    /// Not written by install (or not a regular file).
    Foreign,
}

/// Classifies what is at `path`, compared with `wanted` (the marked text, if any). Never
/// follows a symlink: a link is foreign.
pub fn existing(path: &Path, wanted: Option<&str>) -> io::Result<Existing> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Ok(Existing::Foreign);
    }
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(classify(&bytes, wanted))
}

/// The pure part of [`existing`].
pub fn classify(bytes: &[u8], wanted: Option<&str>) -> Existing {
    let Some(rest) = bytes.strip_prefix(MARK.as_bytes()) else {
        return Existing::Foreign;
    };
    let Some(newline) = rest.iter().position(|b| *b == b'\n') else {
        return Existing::Foreign;
    };
    let (line, body) = (&rest[..newline], &rest[newline + 1..]);
    let Some(hash) = line.get(..64) else {
        return Existing::Foreign;
    };
    if hash != sha256_hex(body).as_bytes() {
        return Existing::Edited;
    }
    Existing::Ours {
        same: wanted.is_some_and(|w| w.as_bytes() == bytes),
    }
}

/// One file to install: where, and its marked text.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub path: PathBuf,
    pub text: String,
}

/// What install does to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create,
    Keep,
    Update,
    /// Replace a file install did not write, or one edited since (`--force`).
    Replace,
}

impl Step {
    fn describe(&self) -> &'static str {
        match self {
            Step::Create => "new",
            Step::Keep => "unchanged",
            Step::Update => "updated",
            Step::Replace => "replaced, --force",
        }
    }
}

fn refusal(path: &Path, state: &Existing) -> String {
    let what = match state {
        Existing::Edited => "was edited after bitpoll-launcher install wrote it",
        _ => "was not written by bitpoll-launcher install",
    };
    format!("{} {what}", path.display())
}

/// Decides every file first: an edited or foreign file without `force` refuses the whole
/// install, naming each such file and the fix.
pub fn plan_install(wanted: &[Wanted], force: bool) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut refused = Vec::new();
    for w in wanted {
        let state = existing(&w.path, Some(&w.text))
            .with_context(|| format!("cannot read {}", w.path.display()))?;
        steps.push(match state {
            Existing::Missing => Step::Create,
            Existing::Ours { same: true } => Step::Keep,
            Existing::Ours { same: false } => Step::Update,
            Existing::Edited | Existing::Foreign if force => Step::Replace,
            other => {
                refused.push(refusal(&w.path, &other));
                Step::Keep
            }
        });
    }
    if !refused.is_empty() {
        bail!(
            "{}; nothing was changed. Move the file away and run install again, or pass --force to replace it",
            refused.join("; ")
        );
    }
    Ok(steps)
}

/// Decides which files uninstall removes: those install wrote and nobody edited, and with
/// `force` the edited ones too. A file install did not write is never removed; without
/// `force` it, like an edited one, refuses the whole uninstall.
pub fn plan_uninstall(paths: &[PathBuf], force: bool) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for path in paths {
        let state =
            existing(path, None).with_context(|| format!("cannot read {}", path.display()))?;
        match state {
            Existing::Missing => {}
            Existing::Ours { .. } => out.push((path.clone(), true)),
            Existing::Edited if force => out.push((path.clone(), true)),
            Existing::Foreign if force => out.push((path.clone(), false)),
            other => refused.push(refusal(path, &other)),
        }
    }
    if !refused.is_empty() {
        bail!(
            "{}; nothing was changed. Remove it yourself, or pass --force to remove edited files (a file install did not write is never removed)",
            refused.join("; ")
        );
    }
    Ok(out)
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, 0644,
/// flushed, renamed over `path` (which replaces a symlink itself, never its target), and
/// the directory flushed. Missing parent directories are created 0755.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a file needs a directory"))?;
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("a file needs a name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.install-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // The umask may have taken bits away; the file is world-readable on purpose.
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes what the plan says; returns one line per file.
pub fn apply_install(wanted: &[Wanted], steps: &[Step]) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for (w, step) in wanted.iter().zip(steps) {
        if *step != Step::Keep {
            write_atomic(&w.path, &w.text)
                .with_context(|| format!("cannot write {}", w.path.display()))?;
        }
        lines.push(format!("{} ({})", w.path.display(), step.describe()));
    }
    Ok(lines)
}

/// The files for this config: the unit as `bitpoll-launcher unit` renders it, the two
/// entries as `sysusers` and `tmpfiles` print them, and the catalog, each marked.
pub fn wanted(cfg: &Config, targets: &Targets, unit_text: &str) -> Vec<Wanted> {
    let [unit, sysusers, tmpfiles, catalog] = targets.paths(cfg);
    vec![
        Wanted {
            path: unit,
            text: mark(unit_text),
        },
        Wanted {
            path: sysusers,
            text: mark(&crate::sysusers::render(cfg)),
        },
        Wanted {
            path: tmpfiles,
            text: mark(&crate::tmpfiles::render(cfg)),
        },
        Wanted {
            path: catalog,
            text: mark(&launcher_plan::rule::catalog()),
        },
    ]
}

/// True when systemd runs as PID 1 here (sd_booted(3)): otherwise there is nothing to
/// reload, as when installing into an image.
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Runs a command; a failure shows its status and the end of its output.
fn run_command(argv: &[String]) -> anyhow::Result<()> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Rebuild the journal's catalog database from the catalog files.
fn update_catalog() -> Vec<String> {
    vec!["journalctl".into(), "--update-catalog".into()]
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !launcher_sys::is_root() {
        bail!(
            "{what} writes below /etc and runs systemd's tools: run it as root (--dry-run shows what it would do)"
        );
    }
    Ok(())
}

pub fn install(args: &InstallArgs) -> Result<u8, Exit> {
    let config_path = std::path::absolute(&args.config)
        .with_context(|| format!("cannot resolve {}", args.config.display()))
        .or_exit(exit::CONFIG)?;
    let cfg = crate::config::load(&config_path).or_exit(exit::CONFIG)?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("cannot find the launcher's own path; pass --binary")
            .or_exit(exit::RUNTIME)?,
    };
    let credentials = crate::unit::parse_credentials(&args.credential).or_exit(exit::CONFIG)?;
    let unit_text = crate::unit::render(
        &cfg,
        &crate::unit::Options {
            config_path: &config_path,
            binary: &binary,
            hardening: crate::unit::HARDENING,
            credentials: &credentials,
            mode: crate::unit::Mode::Privileged,
            socket: None,
        },
    )
    .or_exit(exit::CONFIG)?;
    let targets = Targets::system();
    let wanted = wanted(&cfg, &targets, &unit_text);
    let steps = plan_install(&wanted, args.force).or_exit(exit::SYSTEM)?;
    let [_, sysusers, tmpfiles, _] = targets.paths(&cfg);
    let mut commands: Vec<Vec<String>> = vec![
        vec!["systemd-sysusers".into(), sysusers.display().to_string()],
        vec![
            "systemd-tmpfiles".into(),
            "--create".into(),
            tmpfiles.display().to_string(),
        ],
        update_catalog(),
    ];
    let reload = systemd_running();
    if reload {
        commands.push(vec!["systemctl".into(), "daemon-reload".into()]);
    }

    if args.dry_run {
        let mut out = String::new();
        for (w, step) in wanted.iter().zip(&steps) {
            let _ = writeln!(
                out,
                "would write {} ({}):\n{}",
                w.path.display(),
                step.describe(),
                w.text
            );
        }
        for c in &commands {
            let _ = writeln!(out, "would run: {}", c.join(" "));
        }
        if !reload {
            let _ = writeln!(out, "systemd is not running here: no daemon-reload");
        }
        print!("{out}");
        return Ok(0);
    }

    require_root("install").or_exit(exit::SYSTEM)?;
    for line in apply_install(&wanted, &steps).or_exit(exit::RUNTIME)? {
        println!("wrote {line}");
    }
    for c in &commands {
        run_command(c).or_exit(exit::RUNTIME)?;
        println!("ran: {}", c.join(" "));
    }
    if !reload {
        println!("systemd is not running here: no daemon-reload");
    }
    println!(
        "installed; start it with: systemctl enable --now {UNIT_NAME}; check it with: bitpoll-launcher check --config {}",
        config_path.display()
    );
    Ok(0)
}

pub fn uninstall(args: &UninstallArgs) -> Result<u8, Exit> {
    let cfg = crate::config::load(&args.config).or_exit(exit::CONFIG)?;
    let targets = Targets::system();
    let paths = targets.paths(&cfg);
    let plan = plan_uninstall(&paths, args.force).or_exit(exit::SYSTEM)?;
    let unit_goes = plan.iter().any(|(p, remove)| *remove && *p == paths[0]);
    let catalog_goes = plan.iter().any(|(p, remove)| *remove && *p == paths[3]);
    let reload = systemd_running();
    let mut commands: Vec<Vec<String>> = Vec::new();
    if unit_goes && reload {
        commands.push(vec![
            "systemctl".into(),
            "disable".into(),
            "--now".into(),
            UNIT_NAME.into(),
        ]);
    }
    let kept = format!(
        "kept: the data directory {} and the account {}:{} (remove them yourself once the data is no longer needed)",
        cfg.service.data_dir.display(),
        cfg.service.user,
        cfg.service.group
    );

    if args.dry_run {
        for c in &commands {
            println!("would run: {}", c.join(" "));
        }
        for (path, remove) in &plan {
            if *remove {
                println!("would remove {}", path.display());
            } else {
                println!("would leave {} (not written by install)", path.display());
            }
        }
        if reload && !plan.is_empty() {
            println!("would run: systemctl daemon-reload");
        }
        if catalog_goes {
            println!("would run: {}", update_catalog().join(" "));
        }
        println!("{kept}");
        return Ok(0);
    }

    require_root("uninstall").or_exit(exit::SYSTEM)?;
    for c in &commands {
        run_command(c).or_exit(exit::RUNTIME)?;
        println!("ran: {}", c.join(" "));
    }
    for (path, remove) in &plan {
        if *remove {
            fs::remove_file(path)
                .with_context(|| format!("cannot remove {}", path.display()))
                .or_exit(exit::RUNTIME)?;
            println!("removed {}", path.display());
        } else {
            println!("left {} (not written by install)", path.display());
        }
    }
    if reload && !plan.is_empty() {
        let c = vec!["systemctl".to_string(), "daemon-reload".to_string()];
        run_command(&c).or_exit(exit::RUNTIME)?;
        println!("ran: systemctl daemon-reload");
    }
    if catalog_goes {
        run_command(&update_catalog()).or_exit(exit::RUNTIME)?;
        println!("ran: {}", update_catalog().join(" "));
    }
    if plan.is_empty() {
        println!("nothing to remove: none of {} exists", {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            names.join(", ")
        });
    }
    println!("{kept}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory tree standing in for /etc, removed on drop.
    struct Root(PathBuf);

    impl Root {
        fn new(tag: &str) -> Root {
            let p = std::env::temp_dir().join(format!(
                "blt-install-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Root(p)
        }

        fn targets(&self) -> Targets {
            Targets {
                unit_dir: self.0.join("systemd/system"),
                sysusers_dir: self.0.join("sysusers.d"),
                tmpfiles_dir: self.0.join("tmpfiles.d"),
                catalog_dir: self.0.join("catalog"),
            }
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn cfg(data_dir: &str) -> Config {
        launcher_config::parse_str(&format!(
            r#"
[service]
user = "bitpoll"
create_user = false
data_dir = "{data_dir}"
[app]
python = "/opt/bitpoll/venv/bin/python"
source_dir = "/opt/bitpoll/src"
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ generate = "fernet-key" }}
[server]
command = ["/opt/bitpoll/venv/bin/gunicorn", "bitpoll.wsgi:application"]
"#
        ))
        .unwrap()
    }

    fn install_into(root: &Root, cfg: &Config, force: bool) -> anyhow::Result<Vec<Step>> {
        let wanted = wanted(cfg, &root.targets(), "[Unit]\nDescription=test\n");
        let steps = plan_install(&wanted, force)?;
        apply_install(&wanted, &steps)?;
        Ok(steps)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_marked_file_is_ours_until_one_byte_of_it_changes() {
        let text = mark("d /var/lib/bitpoll 0750 bitpoll bitpoll -\n");
        assert_eq!(
            classify(text.as_bytes(), Some(&text)),
            Existing::Ours { same: true }
        );
        assert_eq!(
            classify(text.as_bytes(), Some("other")),
            Existing::Ours { same: false }
        );
        let edited = text.replace("0750", "0755");
        assert_eq!(classify(edited.as_bytes(), None), Existing::Edited);
        assert_eq!(
            classify(b"[Unit]\nDescription=mine\n", None),
            Existing::Foreign
        );
        assert_eq!(classify(MARK.as_bytes(), None), Existing::Foreign);
    }

    #[test]
    fn install_writes_the_four_marked_files_then_finds_them_unchanged() {
        let root = Root::new("twice");
        let cfg = cfg("/var/lib/bitpoll");
        let steps = install_into(&root, &cfg, false).unwrap();
        assert_eq!(
            steps,
            [Step::Create, Step::Create, Step::Create, Step::Create]
        );
        let [unit, sysusers, tmpfiles, catalog] = root.targets().paths(&cfg);
        assert!(read(&unit).starts_with(MARK) && read(&unit).ends_with("Description=test\n"));
        assert!(read(&sysusers).contains("u bitpoll - \"Bitpoll service\" /var/lib/bitpoll -\n"));
        assert!(read(&tmpfiles).contains("d /var/lib/bitpoll 0750 bitpoll bitpoll -\n"));
        assert!(read(&catalog).starts_with(MARK));
        assert!(read(&catalog).ends_with(&launcher_plan::rule::catalog()));
        for p in [&unit, &sysusers, &tmpfiles, &catalog] {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{}", p.display());
        }
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = [
            inode(&unit),
            inode(&sysusers),
            inode(&tmpfiles),
            inode(&catalog),
        ];

        let steps = install_into(&root, &cfg, false).unwrap();
        assert_eq!(steps, [Step::Keep, Step::Keep, Step::Keep, Step::Keep]);
        let after = [
            inode(&unit),
            inode(&sysusers),
            inode(&tmpfiles),
            inode(&catalog),
        ];
        assert_eq!(before, after, "an unchanged file is not written again");
        let leftovers: Vec<_> = fs::read_dir(root.targets().unit_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != UNIT_NAME)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_changed_config_updates_the_files_install_wrote() {
        let root = Root::new("update");
        install_into(&root, &cfg("/var/lib/bitpoll"), false).unwrap();
        let cfg = cfg("/srv/bitpoll");
        let steps = install_into(&root, &cfg, false).unwrap();
        assert_eq!(steps, [Step::Keep, Step::Update, Step::Update, Step::Keep]);
        let [_, _, tmpfiles, _] = root.targets().paths(&cfg);
        assert!(read(&tmpfiles).contains("d /srv/bitpoll 0750"));
    }

    #[test]
    fn an_edited_file_is_refused_without_force_and_nothing_is_changed() {
        let root = Root::new("edited");
        let cfg1 = cfg("/var/lib/bitpoll");
        install_into(&root, &cfg1, false).unwrap();
        let [unit, _, tmpfiles, _] = root.targets().paths(&cfg1);
        let edited = read(&unit) + "Environment=MINE=1\n";
        fs::write(&unit, &edited).unwrap();
        let tmpfiles_before = read(&tmpfiles);

        // A new data dir would change tmpfiles too: the refusal must keep that as well.
        let err = install_into(&root, &cfg("/srv/bitpoll"), false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "{} was edited after bitpoll-launcher install wrote it",
                unit.display()
            )) && msg.contains("--force"),
            "{msg}"
        );
        assert_eq!(read(&unit), edited);
        assert_eq!(read(&tmpfiles), tmpfiles_before);

        let steps = install_into(&root, &cfg("/srv/bitpoll"), true).unwrap();
        assert_eq!(
            steps,
            [Step::Replace, Step::Update, Step::Update, Step::Keep]
        );
        assert_eq!(
            existing(&unit, None).unwrap(),
            Existing::Ours { same: false }
        );
    }

    #[test]
    fn a_file_install_did_not_write_is_refused_and_replaced_only_with_force() {
        let root = Root::new("foreign");
        let cfg = cfg("/var/lib/bitpoll");
        let [unit, sysusers, _, _] = root.targets().paths(&cfg);
        write_atomic(&unit, "[Unit]\nDescription=the admin's own\n").unwrap();
        let err = install_into(&root, &cfg, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("was not written by bitpoll-launcher install"),
            "{err:#}"
        );
        assert!(!sysusers.exists(), "a refused install writes nothing");
        assert_eq!(read(&unit), "[Unit]\nDescription=the admin's own\n");

        let steps = install_into(&root, &cfg, true).unwrap();
        assert_eq!(
            steps,
            [Step::Replace, Step::Create, Step::Create, Step::Create]
        );
    }

    #[test]
    fn a_symlink_is_foreign_and_force_replaces_the_link_not_its_target() {
        let root = Root::new("symlink");
        let cfg = cfg("/var/lib/bitpoll");
        let [unit, _, _, _] = root.targets().paths(&cfg);
        let target = root.0.join("elsewhere");
        fs::write(&target, "precious\n").unwrap();
        fs::create_dir_all(unit.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &unit).unwrap();
        assert_eq!(existing(&unit, None).unwrap(), Existing::Foreign);
        install_into(&root, &cfg, true).unwrap();
        assert_eq!(read(&target), "precious\n");
        assert!(
            !fs::symlink_metadata(&unit)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn uninstall_removes_only_unedited_files_install_wrote() {
        let root = Root::new("uninstall");
        let cfg = cfg("/var/lib/bitpoll");
        install_into(&root, &cfg, false).unwrap();
        let paths = root.targets().paths(&cfg);
        let [unit, sysusers, tmpfiles, catalog] = paths.clone();

        fs::write(&tmpfiles, read(&tmpfiles) + "# mine\n").unwrap();
        let err = plan_uninstall(&paths, false).unwrap_err();
        assert!(format!("{err:#}").contains("was edited"), "{err:#}");

        let plan = plan_uninstall(&paths, true).unwrap();
        assert_eq!(
            plan,
            [
                (unit.clone(), true),
                (sysusers.clone(), true),
                (tmpfiles, true),
                (catalog, true)
            ]
        );

        // A foreign file is never removed, not even with --force.
        fs::write(&unit, "[Unit]\n").unwrap();
        fs::remove_file(&sysusers).unwrap();
        let plan = plan_uninstall(&paths[..2], true).unwrap();
        assert_eq!(plan, [(unit.clone(), false)]);
        assert!(plan_uninstall(&paths[..2], false).is_err());
    }
}
