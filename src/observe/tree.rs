//! The data directory tree as found, without following links, and the state of each
//! preparation step's output in it.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use launcher_config::{Config, Database};
use launcher_plan::Step;
use launcher_plan::facts::{DirFact, DirState, TreeFacts};
use launcher_plan::layout;
use launcher_sys::tree::{self, Inspected, Observed};

use super::source::SourceTree;

/// How many names the observer lists from the data directory: enough to tell empty from
/// not and to name a few.
const MAX_ENTRIES: usize = 256;

pub(super) fn tree_facts(cfg: &Config, inspected: &[Inspected]) -> TreeFacts {
    let data_dir = &cfg.service.data_dir;
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let parent_exists = parent.is_dir();
    let dirs = inspected
        .iter()
        .map(|d| DirFact {
            name: d.spec.name,
            path: d.path.clone(),
            want_mode: d.spec.mode,
            state: match &d.observed {
                Observed::Missing => DirState::Missing,
                Observed::Symlink => DirState::Symlink,
                Observed::NotADirectory => DirState::NotADirectory,
                Observed::Unreadable(e) => DirState::Unreadable {
                    denied: *e == nix::errno::Errno::EACCES,
                    error: e.to_string(),
                },
                Observed::Present { uid, gid, mode } => DirState::Present {
                    uid: *uid,
                    gid: *gid,
                    mode: *mode,
                    owner_name: nix::unistd::User::from_uid((*uid).into())
                        .ok()
                        .flatten()
                        .map(|u| u.name),
                },
            },
        })
        .collect();
    let at = if data_dir.exists() { data_dir } else { parent };
    let mut entries: Vec<String> = inspected
        .first()
        .and_then(Inspected::fd)
        .and_then(|fd| {
            nix::dir::Dir::openat(
                fd,
                ".",
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        })
        .map(|mut dir| {
            dir.iter()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "." && n != "..")
                .take(MAX_ENTRIES)
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    TreeFacts {
        parent_exists,
        dirs,
        entries,
        free_bytes: tree::free_bytes(at).map(|b| (at.to_path_buf(), b)),
    }
}

/// The current state of a step's output (see launcher_plan::stamp). `data_dir` is the
/// data directory's descriptor: files inside it are looked up without following links.
pub fn witness(
    cfg: &Config,
    data_dir: Option<BorrowedFd<'_>>,
    step: Step,
    source: Option<&SourceTree>,
) -> String {
    match step {
        Step::Migrate => match &cfg.database {
            Database::Sqlite { path } => match file_identity(cfg, data_dir, path) {
                Some(id) => format!("sqlite {} {id}", path.display()),
                None => format!("sqlite {} absent", path.display()),
            },
            Database::Postgresql {
                name, host, port, ..
            } => format!(
                "postgresql {name}@{}:{}",
                host.as_deref().unwrap_or("local"),
                port.map_or("default".into(), |p| p.to_string())
            ),
        },
        Step::Collectstatic => match layout::static_layout(cfg) {
            layout::StaticLayout::Versioned { dir } => {
                // The tree `current` names, and whether it is complete.
                let current = dir.join(layout::STATIC_CURRENT);
                let target = std::fs::read_link(&current)
                    .ok()
                    .filter(|t| t.components().count() == 1)
                    .map(|t| t.display().to_string());
                let manifest = target
                    .as_ref()
                    .is_some_and(|t| dir.join(t).join("staticfiles.json").is_file());
                format!(
                    "static {} -> {} manifest={manifest}",
                    current.display(),
                    target.as_deref().unwrap_or("absent")
                )
            }
            layout::StaticLayout::Fixed(root) => {
                let id = std::fs::symlink_metadata(&root)
                    .map(|m| format!("{}:{}", m.dev(), m.ino()))
                    .unwrap_or_else(|_| "absent".into());
                let manifest = root.join("staticfiles.json").is_file();
                format!("static {} {id} manifest={manifest}", root.display())
            }
        },
        Step::Compilemessages => match source {
            Some(source) => format!(
                "catalogs po={} compiled-into-data-dir={}",
                source.facts.po_files, source.facts.fresh_in_data_dir
            ),
            // Never matches a real witness: the step would simply run again.
            None => "catalogs not scanned".into(),
        },
    }
}

/// "dev:ino" of a file; inside the data directory looked up without following links.
fn file_identity(cfg: &Config, data_dir: Option<BorrowedFd<'_>>, path: &Path) -> Option<String> {
    match (path.parent(), path.file_name(), data_dir) {
        (Some(parent), Some(name), Some(fd)) if parent == cfg.service.data_dir => {
            launcher_sys::files::identity_at(fd, name.to_str()?)
        }
        _ => std::fs::symlink_metadata(path)
            .ok()
            .map(|m| format!("{}:{}", m.dev(), m.ino())),
    }
}

/// The tree when it could not be looked at: every directory of the layout unreadable for
/// `error`.
pub(super) fn unreadable(cfg: &Config, error: &str) -> TreeFacts {
    let data_dir = &cfg.service.data_dir;
    TreeFacts {
        parent_exists: true,
        dirs: layout::TREE
            .iter()
            .map(|spec| DirFact {
                name: spec.name,
                path: if spec.name.is_empty() {
                    data_dir.clone()
                } else {
                    data_dir.join(spec.name)
                },
                want_mode: spec.mode,
                state: DirState::Unreadable {
                    denied: false,
                    error: error.to_string(),
                },
            })
            .collect(),
        entries: Vec::new(),
        free_bytes: None,
    }
}
