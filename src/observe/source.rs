//! The app source as scanned (walked without following links) and the identity of the
//! interpreter with its installed packages.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use launcher_config::Config;
use launcher_plan::facts::SourceFacts;
use launcher_plan::layout;

/// The interpreter and its installed packages: the path as configured (a Nix store path
/// changes with any dependency), the resolved binary, and the modification times of the
/// environment's site-packages directories (pip install/upgrade changes them).
pub(super) fn python_identity(python: &Path) -> String {
    let mut id = python.display().to_string();
    if let Ok(real) = std::fs::canonicalize(python) {
        if let Ok(m) = std::fs::metadata(&real) {
            // Not the device number: a container's overlay gets a new one on every start,
            // which would make every restart prepare again.
            id.push_str(&format!(
                " {} {} {} {}",
                real.display(),
                m.ino(),
                m.size(),
                m.mtime()
            ));
        }
    }
    if let Some(prefix) = python.parent().and_then(Path::parent) {
        if let Ok(entries) = std::fs::read_dir(prefix.join("lib")) {
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("site-packages"))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for dir in dirs {
                if let Ok(m) = std::fs::metadata(&dir) {
                    id.push_str(&format!(
                        " {}@{}.{}",
                        dir.display(),
                        m.mtime(),
                        m.mtime_nsec()
                    ));
                }
            }
        }
    }
    id
}

/// The app source as scanned: its facts. Walked without following links.
pub struct SourceTree {
    pub facts: SourceFacts,
}

impl SourceTree {
    /// Scan the app source of `cfg`, leaving out what the app itself writes there (a
    /// static root, media root or SQLite database placed inside the source directory):
    /// those change on every run and are outputs, not inputs.
    pub fn of(cfg: &Config) -> std::io::Result<SourceTree> {
        let mut facts = scan(cfg, &cfg.app.source_dir, &layout::app_outputs(cfg))?;
        facts.manage_py = std::fs::symlink_metadata(cfg.app.source_dir.join("manage.py"))
            .is_ok_and(|m| m.is_file());
        Ok(SourceTree { facts })
    }
}

mod libc_flags {
    pub const NONBLOCK_NOFOLLOW: i32 =
        nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOFOLLOW.bits();
}

/// How many catalogs have a compiled form in the data directory at least as new as their
/// .po (the targets as [`scan`] recorded them).
fn fresh_in_data_dir(targets: &[(PathBuf, i64)]) -> usize {
    targets
        .iter()
        .filter(|(mo, po_mtime)| {
            std::fs::symlink_metadata(mo).is_ok_and(|m| m.is_file() && m.mtime() >= *po_mtime)
        })
        .count()
}

impl SourceTree {
    /// The same source, with the data directory's compiled catalogs counted again (after
    /// another launcher or the step itself may have written them); the source is not
    /// walked again.
    pub fn recounted(facts: &SourceFacts) -> SourceTree {
        let mut facts = facts.clone();
        facts.fresh_in_data_dir = fresh_in_data_dir(&facts.catalog_targets);
        SourceTree { facts }
    }
}

/// SHA-256 of a file's content (hex).
fn content_digest(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Never blocks on a FIFO swapped in after the stat, never follows a link.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::NONBLOCK_NOFOLLOW)
        .open(path)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A digest of every file's relative path, size, mode and modification time (and the
/// content of files whose modification time is normalized to 0 or 1), skipping
/// bytecode, compiled catalogs (which compilemessages writes) and hidden directories; the
/// translation catalogs with their up-to-date compiled forms and their directories.
fn scan(cfg: &Config, root: &Path, outputs: &[PathBuf]) -> std::io::Result<SourceFacts> {
    let mut entries = Vec::new();
    let mut po_files = 0;
    let mut fresh_mo_files = 0;
    let mut catalog_targets = Vec::new();
    let mut locale_dirs: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || name == "node_modules" {
                continue;
            }
            let path = entry.path();
            if outputs.contains(&path) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if name.ends_with(".pyc") || name.ends_with(".mo") {
                continue;
            }
            if name.ends_with(".po") {
                po_files += 1;
                let fresh = |mo: &Path| {
                    std::fs::symlink_metadata(mo)
                        .is_ok_and(|m| m.is_file() && m.mtime() >= meta.mtime())
                };
                if fresh(&path.with_extension("mo")) {
                    fresh_mo_files += 1;
                }
                // <base>/<lang>/LC_MESSAGES/<domain>.po
                let base = dir.parent().and_then(Path::parent);
                if let Some(rel) = base.and_then(|b| b.strip_prefix(root).ok()) {
                    if !locale_dirs.iter().any(|d| d == rel) {
                        locale_dirs.push(rel.to_path_buf());
                    }
                    let below = path.strip_prefix(base.unwrap_or(root)).unwrap_or(&path);
                    let target = layout::catalog_target(cfg, rel)
                        .join(below)
                        .with_extension("mo");
                    catalog_targets.push((target, meta.mtime()));
                }
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let link = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            // A normalized timestamp (1 in a Nix store, 0 from some archives) says nothing
            // about the content: such files count by their content.
            let content = if meta.is_file() && meta.mtime() <= 1 {
                content_digest(&path)?
            } else {
                String::new()
            };
            entries.push(format!(
                "{rel}\0{}\0{:o}\0{}.{}\0{link}\0{content}",
                meta.size(),
                meta.mode(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
        }
    }
    entries.sort();
    let mut h = Sha256::new();
    for e in &entries {
        h.update(e.as_bytes());
        h.update(b"\n");
    }
    Ok(SourceFacts {
        manage_py: false,
        digest: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        po_files,
        fresh_mo_files,
        locale_dirs: {
            locale_dirs.sort();
            locale_dirs
        },
        fresh_in_data_dir: fresh_in_data_dir(&catalog_targets),
        catalog_targets,
    })
}
