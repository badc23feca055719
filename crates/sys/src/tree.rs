//! The data directory tree: create what is missing, set exact owner and mode, never follow
//! a symlink inside it and never touch a tree that belongs to another user.
//!
//! Every directory is opened with `O_NOFOLLOW` relative to its parent's descriptor and then
//! changed through that descriptor (`fchown`, `fchmod`), so a symlink planted by the
//! service user cannot redirect a root-owned operation elsewhere. Nothing is recursive:
//! only the directories of the layout are inspected on each start.
//!
//! A root launcher calls [`ensure`] while it acts as the service user (through the
//! [`Identity`] it passes): the user's own directories are opened, created and chmod-ed
//! with the user's rights, and root is taken back ([`Identity::with_root`]) only to create
//! the data directory itself in a parent the user cannot write, to open a root-only
//! directory, and to give a root-owned entry to the user (CAP_CHOWN).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fchmod, fstat, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

use launcher_plan::judge::data_dir::DirProblem;
use launcher_plan::layout::DirSpec;

use crate::privs::{Identity, Kernel};

/// Why the tree could not be made or used. A path that is not what the service may use is
/// a [`DirProblem`], the same reason the judgement ahead of the start gives, worded once
/// by launcher_plan.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{}", .0.finding())]
    Refused(DirProblem),
    #[error(transparent)]
    Identity(#[from] crate::privs::SwitchError),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// The opened tree; holds a descriptor per directory for later `*at` calls.
#[derive(Debug)]
pub struct DataTree {
    pub path: PathBuf,
    dirs: Vec<(&'static str, OwnedFd)>,
}

impl DataTree {
    /// The descriptor of a directory of the layout ("" for the data directory itself).
    pub fn dir(&self, name: &str) -> BorrowedFd<'_> {
        self.dirs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, fd)| fd.as_fd())
            .unwrap_or_else(|| panic!("{name:?} is not a directory of the layout"))
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            self.path.clone()
        } else {
            self.path.join(name)
        }
    }
}

/// A change made to the tree, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub what: String,
}

/// Who must own the tree.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: Uid,
    pub gid: Gid,
    /// True when the launcher runs as root and may chown; false when it runs as the
    /// service user itself and can only verify and chmod what it owns.
    pub privileged: bool,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Create or repair the tree `layout` (parents first, `layout[0]` is the data dir itself).
pub fn ensure<K: Kernel>(
    ids: &mut Identity<K>,
    data_dir: &Path,
    layout: &[DirSpec],
    owner: Owner,
    user_name: &str,
) -> Result<(DataTree, Vec<Change>), TreeError> {
    let mut changes = Vec::new();
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let name = data_dir.file_name().ok_or_else(|| {
        TreeError::Refused(DirProblem::NotADirectory {
            path: data_dir.to_path_buf(),
        })
    })?;
    // The path up to the data directory belongs to the admin (root); it may contain links.
    let parent_fd = open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => TreeError::Refused(DirProblem::ParentMissing {
            data_dir: data_dir.to_path_buf(),
            parent: parent.to_path_buf(),
        }),
        source => TreeError::Io {
            op: "open",
            path: parent.to_path_buf(),
            source,
        },
    })?;
    let mut dirs: Vec<(&'static str, OwnedFd)> = Vec::with_capacity(layout.len());
    for spec in layout {
        let (at, rel, path): (BorrowedFd<'_>, &std::ffi::OsStr, PathBuf) = if spec.name.is_empty() {
            (parent_fd.as_fd(), name, data_dir.to_path_buf())
        } else {
            let root = &dirs[0].1;
            (
                root.as_fd(),
                std::ffi::OsStr::new(spec.name),
                data_dir.join(spec.name),
            )
        };
        let before = changes.len();
        let fd = open_or_create(ids, at, rel, &path, &mut changes)?;
        let created = changes.len() > before;
        fix_owner_and_mode(ids, &fd, &path, spec.mode, owner, user_name, &mut changes)?;
        if created {
            // One line for a new directory, not one per step of making it.
            changes.truncate(before);
            changes.push(Change {
                path: path.clone(),
                what: format!(
                    "created (owner {}:{}, mode {:04o})",
                    owner.uid, owner.gid, spec.mode
                ),
            });
        }
        dirs.push((spec.name, fd));
    }
    Ok((
        DataTree {
            path: data_dir.to_path_buf(),
            dirs,
        },
        changes,
    ))
}

/// `f`, and when it is refused with EACCES and the launcher acts as the service user
/// while root, `f` again as root.
fn retry_as_root<K: Kernel, T>(
    ids: &mut Identity<K>,
    f: impl Fn() -> nix::Result<T>,
) -> Result<nix::Result<T>, TreeError> {
    match f() {
        Err(Errno::EACCES) if ids.acting() => Ok(ids.with_root(f)?),
        other => Ok(other),
    }
}

fn open_or_create<K: Kernel>(
    ids: &mut Identity<K>,
    at: BorrowedFd<'_>,
    rel: &std::ffi::OsStr,
    path: &Path,
    changes: &mut Vec<Change>,
) -> Result<OwnedFd, TreeError> {
    let open = || openat(at, rel, DIR_FLAGS, Mode::empty());
    match retry_as_root(ids, open)? {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(classify(at, rel, path, e)),
    }
    // Created private first; owner and final mode are set through the descriptor below.
    // The data directory's parent is root's: the user may not create entries there.
    let create = || mkdirat(at, rel, Mode::from_bits_truncate(0o700));
    match retry_as_root(ids, create)? {
        Ok(()) => changes.push(Change {
            path: path.to_path_buf(),
            what: "created".into(),
        }),
        Err(Errno::EEXIST) => {}
        Err(Errno::EROFS) => {
            return Err(TreeError::Refused(DirProblem::ReadOnly {
                path: path.to_path_buf(),
            }));
        }
        Err(source) => {
            return Err(TreeError::Io {
                op: "create directory",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    retry_as_root(ids, open)?.map_err(|e| classify(at, rel, path, e))
}

/// Turn an open failure into the precise reason: a link, a file, or an I/O error.
fn classify(at: BorrowedFd<'_>, rel: &std::ffi::OsStr, path: &Path, e: Errno) -> TreeError {
    use nix::sys::stat::{SFlag, fstatat};
    let kind = fstatat(at, rel, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
    match (e, kind) {
        (_, Ok(k)) if k == SFlag::S_IFLNK => TreeError::Refused(DirProblem::Symlink {
            path: path.to_path_buf(),
        }),
        (Errno::ENOTDIR, _) | (Errno::ELOOP, _) => TreeError::Refused(DirProblem::NotADirectory {
            path: path.to_path_buf(),
        }),
        (source, _) => TreeError::Io {
            op: "open",
            path: path.to_path_buf(),
            source,
        },
    }
}

fn fix_owner_and_mode<K: Kernel>(
    ids: &mut Identity<K>,
    fd: &OwnedFd,
    path: &Path,
    mode: u32,
    owner: Owner,
    user_name: &str,
    changes: &mut Vec<Change>,
) -> Result<(), TreeError> {
    let st = fstat(fd).map_err(|source| TreeError::Io {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    let uid = Uid::from_raw(st.st_uid);
    let gid = Gid::from_raw(st.st_gid);
    if owner.privileged {
        if uid != owner.uid && !uid.is_root() {
            let name = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| format!("uid {uid}"));
            return Err(TreeError::Refused(DirProblem::ForeignOwner {
                path: path.to_path_buf(),
                owner: name,
                user: user_name.to_string(),
            }));
        }
        if uid != owner.uid || gid != owner.gid {
            let chown = || fchown(fd, Some(owner.uid), Some(owner.gid));
            // The user may change the group of its own directory; giving root's to the
            // user needs root (and CAP_CHOWN).
            let done = if uid == owner.uid {
                chown()
            } else {
                ids.with_root(chown)?
            };
            done.map_err(|source| match source {
                Errno::EPERM if uid.is_root() => TreeError::Refused(DirProblem::NoChown {
                    path: path.to_path_buf(),
                    user: user_name.to_string(),
                }),
                source => TreeError::Io {
                    op: "chown",
                    path: path.to_path_buf(),
                    source,
                },
            })?;
            changes.push(Change {
                path: path.to_path_buf(),
                what: format!("owner {uid}:{gid} -> {}:{}", owner.uid, owner.gid),
            });
        }
    } else if uid != owner.uid {
        return Err(TreeError::Refused(DirProblem::NotOwnedBySelf {
            path: path.to_path_buf(),
            uid: uid.as_raw(),
            me: owner.uid.as_raw(),
            user: user_name.to_string(),
        }));
    }
    let current = st.st_mode & 0o7777;
    if current != mode {
        fchmod(fd, Mode::from_bits_truncate(mode)).map_err(|source| TreeError::Io {
            op: "chmod",
            path: path.to_path_buf(),
            source,
        })?;
        changes.push(Change {
            path: path.to_path_buf(),
            what: format!("mode {current:04o} -> {mode:04o}"),
        });
    }
    Ok(())
}

/// A regular file directly inside the data directory, opened without following links and
/// refused when it has more than one name (a hard link planted by the service user could
/// otherwise point root at a file elsewhere). None when it does not exist or is not a
/// regular file.
///
/// With `path_only` the file is opened with `O_PATH`: that needs no permission on the
/// file itself (a root-owned file the user cannot read), and the descriptor serves
/// `fstat` and `fchownat(AT_EMPTY_PATH)` only.
fn open_own_file(
    tree: &DataTree,
    name: &str,
    path_only: bool,
) -> Result<Option<(OwnedFd, nix::sys::stat::FileStat, PathBuf)>, TreeError> {
    use nix::sys::stat::SFlag;
    let path = tree.path.join(name);
    let flags = if path_only {
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    } else {
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
    };
    let fd = match openat(tree.dir(""), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(TreeError::Refused(DirProblem::Symlink { path })),
        Err(source) => {
            return Err(TreeError::Io {
                op: "open",
                path,
                source,
            });
        }
    };
    let st = fstat(&fd).map_err(|source| TreeError::Io {
        op: "stat",
        path: path.clone(),
        source,
    })?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFLNK {
        // O_PATH | O_NOFOLLOW opens the link itself.
        return Err(TreeError::Refused(DirProblem::Symlink { path }));
    }
    if kind != SFlag::S_IFREG {
        return Ok(None);
    }
    if st.st_nlink != 1 {
        return Err(TreeError::Refused(DirProblem::HardLinked {
            subject: path.display().to_string(),
            path,
            links: st.st_nlink as u64,
        }));
    }
    Ok(Some((fd, st, path)))
}

/// Give a root-owned regular file directly inside the data directory to the service user
/// (a database left behind by a tool run as root). Files owned by anyone else are left
/// alone.
pub fn adopt_root_owned_file<K: Kernel>(
    ids: &mut Identity<K>,
    tree: &DataTree,
    name: &str,
    owner: Owner,
    user_name: &str,
) -> Result<Option<Change>, TreeError> {
    if !owner.privileged {
        return Ok(None);
    }
    let Some((fd, st, path)) = open_own_file(tree, name, true)? else {
        return Ok(None);
    };
    if st.st_uid != 0 {
        return Ok(None);
    }
    let chown = || {
        // SAFETY: fchownat on a descriptor this function owns, with an empty NUL-terminated
        // path and AT_EMPTY_PATH: it changes exactly the file the descriptor refers to.
        let rc = unsafe {
            libc::fchownat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                owner.uid.as_raw(),
                owner.gid.as_raw(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        Errno::result(rc).map(drop)
    };
    ids.with_root(chown)?.map_err(|source| match source {
        Errno::EPERM => TreeError::Refused(DirProblem::NoChown {
            path: path.clone(),
            user: user_name.to_string(),
        }),
        source => TreeError::Io {
            op: "chown",
            path: path.clone(),
            source,
        },
    })?;
    Ok(Some(Change {
        path,
        what: format!("owner 0:{} -> {}:{}", st.st_gid, owner.uid, owner.gid),
    }))
}

/// Make the service user's own regular file directly inside the data directory private
/// (mode & !0o077), e.g. the SQLite database, which would otherwise be readable by the
/// web server sharing the service group.
pub fn make_private(
    tree: &DataTree,
    name: &str,
    owner: Owner,
) -> Result<Option<Change>, TreeError> {
    let Some((fd, st, path)) = open_own_file(tree, name, false)? else {
        return Ok(None);
    };
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 == 0 || st.st_uid != owner.uid.as_raw() {
        return Ok(None);
    }
    let new = mode & !0o077;
    fchmod(&fd, Mode::from_bits_truncate(new)).map_err(|source| TreeError::Io {
        op: "chmod",
        path: path.clone(),
        source,
    })?;
    Ok(Some(Change {
        path,
        what: format!("mode {mode:04o} -> {new:04o}"),
    }))
}

/// What a directory of the layout looks like, observed without changing anything.
#[derive(Debug)]
pub enum Observed {
    Missing,
    Symlink,
    NotADirectory,
    /// Could not be looked at (permission denied for a non-root caller, an I/O error).
    Unreadable(Errno),
    Present {
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// One directory of the layout as [`inspect`] found it.
#[derive(Debug)]
pub struct Inspected {
    pub spec: DirSpec,
    pub path: PathBuf,
    pub observed: Observed,
    fd: Option<OwnedFd>,
}

impl Inspected {
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }
}

/// Look at the tree read-only, with the same no-symlink rules as [`ensure`]. The parent
/// of the data directory must exist; if it does not, the data directory is reported
/// missing. A root caller acting as the service user opens a directory the user may not
/// open as root instead.
pub fn inspect<K: Kernel>(
    ids: &mut Identity<K>,
    data_dir: &Path,
    layout: &[DirSpec],
) -> Vec<Inspected> {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let name = data_dir.file_name().unwrap_or_default();
    let parent_fd = open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let mut out: Vec<Inspected> = Vec::with_capacity(layout.len());
    for spec in layout {
        let (at, rel, path) = if spec.name.is_empty() {
            (
                parent_fd.as_ref().map(|f| f.as_fd()),
                name,
                data_dir.to_path_buf(),
            )
        } else {
            (
                out.first().and_then(|d| d.fd()),
                std::ffi::OsStr::new(spec.name),
                data_dir.join(spec.name),
            )
        };
        let (observed, fd) = match at {
            None => (Observed::Missing, None),
            // What the service user (as whom a root launcher looks) may not open is looked
            // at as root: a root-owned directory is then seen as what it is.
            Some(at) => match retry_as_root(ids, || openat(at, rel, DIR_FLAGS, Mode::empty()))
                .unwrap_or(Err(Errno::EACCES))
            {
                Ok(fd) => match fstat(&fd) {
                    Ok(st) => (
                        Observed::Present {
                            uid: st.st_uid,
                            gid: st.st_gid,
                            mode: st.st_mode & 0o7777,
                        },
                        Some(fd),
                    ),
                    Err(e) => (Observed::Unreadable(e), None),
                },
                Err(Errno::ENOENT) => (Observed::Missing, None),
                Err(e) => match classify(at, rel, &path, e) {
                    TreeError::Refused(DirProblem::Symlink { .. }) => (Observed::Symlink, None),
                    TreeError::Refused(DirProblem::NotADirectory { .. }) => {
                        (Observed::NotADirectory, None)
                    }
                    // Neither the user nor root without CAP_DAC_OVERRIDE may open a
                    // root-only directory inside the user's: its inode still says whose
                    // it is (nothing inside it is looked at).
                    _ if e == Errno::EACCES && ids.acting() => {
                        match nix::sys::stat::fstatat(
                            at,
                            rel,
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        ) {
                            Ok(st)
                                if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                                    & nix::sys::stat::SFlag::S_IFMT
                                    != nix::sys::stat::SFlag::S_IFDIR =>
                            {
                                (Observed::NotADirectory, None)
                            }
                            Ok(st) => (
                                Observed::Present {
                                    uid: st.st_uid,
                                    gid: st.st_gid,
                                    mode: st.st_mode & 0o7777,
                                },
                                None,
                            ),
                            Err(_) => (Observed::Unreadable(e), None),
                        }
                    }
                    _ => (Observed::Unreadable(e), None),
                },
            },
        };
        out.push(Inspected {
            spec: spec.clone(),
            path,
            observed,
            fd,
        });
    }
    out
}

/// Free space of the file system holding `path`, in bytes available to unprivileged users.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}
