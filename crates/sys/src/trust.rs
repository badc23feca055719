//! Rule 1 of the trust model: a file the launcher reads as root (the config, secret files,
//! and every file and link on the way to them) is trusted only when nobody but root (or
//! the launching user) can change what the path leads to.
//!
//! The path is resolved here, one component at a time, never by the kernel in one go:
//! starting at `/` opened `O_PATH | O_DIRECTORY`, each step is
//! `openat(dir, name, O_PATH | O_NOFOLLOW)` followed by `fstat` of that very descriptor, so
//! what is checked is what the next step continues from (no second lookup by path, no
//! TOCTOU). Each directory must be owned by root or the trusted uid and not writable by
//! group or others; a directory others may write is acceptable only with the sticky bit
//! (`/tmp`, `/nix/store`), and then every entry reached through it must itself be owned by
//! root or the trusted uid, because only they can rename or remove it there. Symbolic
//! links are followed by hand (a relative target from the link's directory, an absolute
//! one from `/`, at most [`MAX_LINKS`]) and `..` goes back to the directory it came from.
//! The file itself must be a regular file with a trusted owner, not writable by group or
//! others; it is then opened for reading relative to its checked directory with
//! `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` (a FIFO or device never gets that far, and even so
//! could not block) and checked again through the reading descriptor to be the same inode.
//! Reads are capped.
//!
//! Errors name the file asked for, the component at fault, its owner and mode, and the
//! fix. They never contain the file's content. This module decides nothing else: whether
//! a secret may be readable by others is the caller's rule.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::Uid;
use zeroize::Zeroizing;

/// At most this many symbolic links are followed for one path, as the kernel does
/// (`MAXSYMLINKS`); more is reported as a loop.
pub const MAX_LINKS: u32 = 40;

/// Mode bits that let someone other than the owner change a file or a directory's entries.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// The kind of a file system object, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Unknown,
}

impl Kind {
    fn of(st: &FileStat) -> Kind {
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        match fmt {
            f if f == SFlag::S_IFREG => Kind::Regular,
            f if f == SFlag::S_IFDIR => Kind::Directory,
            f if f == SFlag::S_IFLNK => Kind::Symlink,
            f if f == SFlag::S_IFIFO => Kind::Fifo,
            f if f == SFlag::S_IFCHR => Kind::CharDevice,
            f if f == SFlag::S_IFBLK => Kind::BlockDevice,
            f if f == SFlag::S_IFSOCK => Kind::Socket,
            _ => Kind::Unknown,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Regular => "regular file",
            Kind::Directory => "directory",
            Kind::Symlink => "symbolic link",
            Kind::Fifo => "FIFO (named pipe)",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Socket => "socket",
            Kind::Unknown => "file of unknown type",
        })
    }
}

/// Why a file is not trusted or could not be read. `file` is always the path asked for,
/// `component` the path (as resolved so far) of the object at fault. Never carries content.
#[derive(Debug)]
pub enum TrustError {
    /// A component does not exist.
    Missing { file: PathBuf, component: PathBuf },
    /// The kernel refused a step (permission, I/O error, too many open files).
    Open {
        file: PathBuf,
        component: PathBuf,
        source: Errno,
    },
    /// A directory or the file belongs to someone other than root and the trusted uid.
    Owner {
        file: PathBuf,
        component: PathBuf,
        kind: Kind,
        uid: u32,
        mode: u32,
        trusted: u32,
    },
    /// A directory (without the sticky bit) or the file is writable by group or others.
    Writable {
        file: PathBuf,
        component: PathBuf,
        kind: Kind,
        uid: u32,
        mode: u32,
    },
    /// An entry of a sticky directory others can write (`/tmp`), owned by someone else.
    SharedEntry {
        file: PathBuf,
        component: PathBuf,
        kind: Kind,
        uid: u32,
        mode: u32,
        dir: PathBuf,
        dir_mode: u32,
        trusted: u32,
    },
    /// The path leads to something other than a regular file.
    NotRegular {
        file: PathBuf,
        component: PathBuf,
        kind: Kind,
    },
    /// A component in the middle of the path is neither a directory nor a link.
    NotADirectory {
        file: PathBuf,
        component: PathBuf,
        kind: Kind,
    },
    /// More than [`MAX_LINKS`] symbolic links: a loop, or a chain too long.
    TooManyLinks { file: PathBuf, component: PathBuf },
    /// The file is larger than the caller's cap.
    TooLarge { file: PathBuf, limit: u64 },
    /// The file opened for reading is not the one checked: it was replaced meanwhile.
    Replaced { file: PathBuf, component: PathBuf },
    /// Reading failed.
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// "root" or "root or uid N".
fn trusted_owners(trusted: u32) -> String {
    if trusted == 0 {
        "root".into()
    } else {
        format!("root or uid {trusted}")
    }
}

/// "/etc/x" for the file itself, "/etc/x: directory /etc" for a component on its way.
fn subject(file: &Path, component: &Path, kind: Kind) -> String {
    if file == component {
        format!("{}", file.display())
    } else {
        format!("{}: {kind} {}", file.display(), component.display())
    }
}

const SAFE_PLACE: &str = "a directory only root can change (such as /etc/bitpoll)";

impl TrustError {
    /// The file that was asked for.
    pub fn file(&self) -> &Path {
        match self {
            TrustError::Missing { file, .. }
            | TrustError::Open { file, .. }
            | TrustError::Owner { file, .. }
            | TrustError::Writable { file, .. }
            | TrustError::SharedEntry { file, .. }
            | TrustError::NotRegular { file, .. }
            | TrustError::NotADirectory { file, .. }
            | TrustError::TooManyLinks { file, .. }
            | TrustError::TooLarge { file, .. }
            | TrustError::Replaced { file, .. }
            | TrustError::Read { file, .. } => file,
        }
    }

    /// What is wrong, without the fix.
    pub fn reason(&self) -> String {
        match self {
            TrustError::Missing { file, component } if file == component => {
                format!("{} does not exist", file.display())
            }
            TrustError::Missing { file, component } => format!(
                "{} does not exist ({} is missing)",
                file.display(),
                component.display()
            ),
            TrustError::Open {
                file,
                component,
                source,
            } if file == component => format!("cannot open {}: {source}", file.display()),
            TrustError::Open {
                file,
                component,
                source,
            } => format!(
                "cannot open {} on the way to {}: {source}",
                component.display(),
                file.display()
            ),
            TrustError::Owner {
                file,
                component,
                kind,
                uid,
                mode,
                trusted,
            } => format!(
                "{} is owned by uid {uid} (mode {mode:04o}), not by {}, so that user could change what the launcher reads as root",
                subject(file, component, *kind),
                trusted_owners(*trusted)
            ),
            TrustError::Writable {
                file,
                component,
                kind,
                mode,
                ..
            } => {
                let by = if mode & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                };
                format!(
                    "{} is writable by {by} (mode {mode:04o})",
                    subject(file, component, *kind)
                )
            }
            TrustError::SharedEntry {
                file,
                component,
                kind,
                uid,
                mode,
                dir,
                dir_mode,
                trusted,
            } => format!(
                "{} is owned by uid {uid} (mode {mode:04o}), not by {}, and sits in {} (mode {dir_mode:04o}), a directory others can write: its owner can replace it",
                subject(file, component, *kind),
                trusted_owners(*trusted),
                dir.display()
            ),
            TrustError::NotRegular {
                file,
                component,
                kind,
            } if file == component => {
                format!("{} is not a regular file (it is a {kind})", file.display())
            }
            TrustError::NotRegular {
                file,
                component,
                kind,
            } => format!(
                "{} is not a regular file ({} is a {kind})",
                file.display(),
                component.display()
            ),
            TrustError::NotADirectory {
                file,
                component,
                kind,
            } => format!(
                "{}: {} is a {kind}, not a directory",
                file.display(),
                component.display()
            ),
            TrustError::TooManyLinks { file, component } => format!(
                "{}: more than {MAX_LINKS} symbolic links were followed (the last was {}): the links form a loop or a chain too long",
                file.display(),
                component.display()
            ),
            TrustError::TooLarge { file, limit } => {
                format!("{} is larger than {limit} bytes", file.display())
            }
            TrustError::Replaced { file, component } => format!(
                "{}: {} was replaced while it was being opened",
                file.display(),
                component.display()
            ),
            TrustError::Read { file, source } => {
                format!("cannot read {}: {source}", file.display())
            }
        }
    }

    /// What to do about it, as a sentence an admin can follow.
    pub fn fix(&self) -> String {
        match self {
            TrustError::Missing { .. } => {
                "create the file, or correct the path that names it".into()
            }
            TrustError::Open {
                component, source, ..
            } => match source {
                Errno::EACCES | Errno::EPERM => format!(
                    "make {} accessible to root (or run the launcher as root)",
                    component.display()
                ),
                Errno::EMFILE | Errno::ENFILE => {
                    "the path is too deep for the open-file limit: shorten it".into()
                }
                _ => format!("check {} (see the error)", component.display()),
            },
            TrustError::Owner {
                component, kind, ..
            } => {
                let c = component.display();
                match kind {
                    Kind::Directory => format!(
                        "move the file to {SAFE_PLACE}, or give the directory to root: chown root:root {c} && chmod go-w {c}"
                    ),
                    _ => format!("chown root:root {c} && chmod go-w {c}"),
                }
            }
            TrustError::Writable {
                component, kind, ..
            } => {
                let c = component.display();
                match kind {
                    Kind::Directory => format!(
                        "chmod go-w {c}, or move the file to {SAFE_PLACE} (a directory others may write is only acceptable with the sticky bit, for entries root owns)"
                    ),
                    _ => format!("chmod go-w {c}"),
                }
            }
            TrustError::SharedEntry { component, dir, .. } => format!(
                "move the file out of {} to {SAFE_PLACE}, or make root its owner: chown -h root:root {}",
                dir.display(),
                component.display()
            ),
            TrustError::NotRegular {
                kind: Kind::Directory,
                ..
            } => "name the file inside the directory, not the directory".into(),
            TrustError::NotRegular { .. } => {
                "point the path at a regular file; the launcher never reads pipes, devices or sockets".into()
            }
            TrustError::NotADirectory { .. } => "correct the path".into(),
            TrustError::TooManyLinks { .. } => {
                "point the path at the file itself, or break the loop of links".into()
            }
            TrustError::TooLarge { limit, .. } => format!(
                "a file the launcher reads here holds at most {limit} bytes: point the path at the right file"
            ),
            TrustError::Replaced { .. } => {
                "try again; if it repeats, find out what keeps replacing the file".into()
            }
            TrustError::Read { .. } => "check the file system (see the error)".into(),
        }
    }
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.reason(), self.fix())
    }
}

impl std::error::Error for TrustError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrustError::Open { source, .. } => Some(source),
            TrustError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A trusted file, open for reading; not read yet.
pub struct TrustedFile {
    fd: OwnedFd,
    /// The path asked for.
    pub file: PathBuf,
    /// The path after every link was followed.
    pub resolved: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub size: u64,
}

impl fmt::Debug for TrustedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedFile")
            .field("file", &self.file)
            .field("resolved", &self.resolved)
            .field("uid", &self.uid)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl TrustedFile {
    /// Read the whole file, at most `max_bytes` (more is [`TrustError::TooLarge`]). The
    /// buffer is zeroed when dropped, so a secret does not linger in freed memory.
    pub fn read(self, max_bytes: u64) -> Result<Zeroizing<Vec<u8>>, TrustError> {
        let TrustedFile { fd, file, size, .. } = self;
        if size > max_bytes {
            return Err(TrustError::TooLarge {
                file,
                limit: max_bytes,
            });
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(size as usize + 1));
        // One byte past the cap, so a file that grew after fstat is still refused.
        let read = std::fs::File::from(fd)
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut buf);
        if let Err(source) = read {
            return Err(TrustError::Read { file, source });
        }
        if buf.len() as u64 > max_bytes {
            return Err(TrustError::TooLarge {
                file,
                limit: max_bytes,
            });
        }
        Ok(buf)
    }
}

/// The content of a trusted file and where it really was.
pub struct Trusted {
    pub bytes: Zeroizing<Vec<u8>>,
    pub resolved: PathBuf,
}

impl fmt::Debug for Trusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trusted")
            .field("resolved", &self.resolved)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Resolve `path` under rule 1 and read it, at most `max_bytes`.
pub fn read_trusted(path: &Path, max_bytes: u64, trusted_uid: Uid) -> Result<Trusted, TrustError> {
    let file = open_trusted(path, trusted_uid)?;
    let resolved = file.resolved.clone();
    let bytes = file.read(max_bytes)?;
    Ok(Trusted { bytes, resolved })
}

/// A directory reached on the way, with what the next step needs to know about it.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Writable by others but sticky: entries must have a trusted owner.
    shared: Option<u32>,
}

const PATH_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
const READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Resolve `path` under rule 1 and open the file for reading. A relative path is taken
/// from the current directory, whose whole path is checked too.
pub fn open_trusted(path: &Path, trusted_uid: Uid) -> Result<TrustedFile, TrustError> {
    match resolve(path, trusted_uid, Want::File)? {
        Reached::File(file) => Ok(file),
        Reached::Directory(_) => unreachable!("a file was asked for"),
    }
}

/// Resolve `path` under rule 1 as a directory: every directory on the way and the
/// directory itself owned by root or the trusted uid and not writable by others (or sticky,
/// with the next step's owner trusted). Returns the path with every link followed.
pub fn trusted_directory(path: &Path, trusted_uid: Uid) -> Result<PathBuf, TrustError> {
    match resolve(path, trusted_uid, Want::Directory)? {
        Reached::Directory(resolved) => Ok(resolved),
        Reached::File(_) => unreachable!("a directory was asked for"),
    }
}

/// What a walk must end on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Directory,
}

enum Reached {
    File(TrustedFile),
    Directory(PathBuf),
}

fn resolve(path: &Path, trusted_uid: Uid, want: Want) -> Result<Reached, TrustError> {
    let file = path.to_path_buf();
    let trusted = trusted_uid.as_raw();
    if path.as_os_str().is_empty() {
        return Err(TrustError::Missing {
            component: file.clone(),
            file,
        });
    }
    let absolute = std::path::absolute(path).map_err(|e| TrustError::Open {
        file: file.clone(),
        component: PathBuf::from("."),
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL)),
    })?;
    let walk = Walk {
        file: &file,
        trusted,
    };

    let root = Path::new("/");
    let fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| walk.open_error(root, source))?;
    let st = walk.stat(&fd, root)?;
    let mut stack = vec![walk.enter(fd, &st, root.to_path_buf())?];

    let mut pending: VecDeque<OsString> = components(&absolute);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let dir = stack.last().expect("the root stays on the stack");
        let here = dir.path.join(&name);
        let fd = openat(dir.fd.as_fd(), name.as_os_str(), PATH_FLAGS, Mode::empty()).map_err(
            |source| match source {
                Errno::ENOENT => TrustError::Missing {
                    file: file.clone(),
                    component: here.clone(),
                },
                source => walk.open_error(&here, source),
            },
        )?;
        let st = walk.stat(&fd, &here)?;
        let kind = Kind::of(&st);
        if let Some(dir_mode) = dir.shared {
            if !walk.owner_ok(st.st_uid) {
                return Err(TrustError::SharedEntry {
                    file: file.clone(),
                    component: here,
                    kind,
                    uid: st.st_uid,
                    mode: st.st_mode & 0o7777,
                    dir: dir.path.clone(),
                    dir_mode,
                    trusted,
                });
            }
        }
        let last = pending.is_empty();
        match kind {
            Kind::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(TrustError::TooManyLinks {
                        file: file.clone(),
                        component: here,
                    });
                }
                // An empty name reads the link the O_PATH descriptor refers to.
                let target = readlinkat(fd.as_fd(), OsStr::new(""))
                    .map_err(|source| walk.open_error(&here, source))?;
                if target.is_empty() {
                    return Err(TrustError::Missing {
                        file: file.clone(),
                        component: here,
                    });
                }
                let target = Path::new(&target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for c in components(target).into_iter().rev() {
                    pending.push_front(c);
                }
            }
            Kind::Directory if !last || want == Want::Directory => {
                let entered = walk.enter(fd, &st, here)?;
                stack.push(entered);
            }
            Kind::Regular if last && want == Want::File => {
                walk.check_file(&st, &here)?;
                return walk.reopen(dir, &name, &st, here).map(Reached::File);
            }
            _ if last && want == Want::File => {
                return Err(TrustError::NotRegular {
                    file: file.clone(),
                    component: here,
                    kind,
                });
            }
            _ => {
                return Err(TrustError::NotADirectory {
                    file: file.clone(),
                    component: here,
                    kind,
                });
            }
        }
    }
    // The path ended on a directory (`/`, `..` last, or what was asked for).
    let dir = stack.last().expect("the root stays on the stack");
    if want == Want::Directory {
        return Ok(Reached::Directory(dir.path.clone()));
    }
    Err(TrustError::NotRegular {
        file: file.clone(),
        component: dir.path.clone(),
        kind: Kind::Directory,
    })
}

/// The names of a path, `/` and `.` dropped, `..` kept.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// The rule, for one walk.
struct Walk<'a> {
    file: &'a Path,
    trusted: u32,
}

impl Walk<'_> {
    fn owner_ok(&self, uid: u32) -> bool {
        uid == 0 || uid == self.trusted
    }

    fn open_error(&self, component: &Path, source: Errno) -> TrustError {
        TrustError::Open {
            file: self.file.to_path_buf(),
            component: component.to_path_buf(),
            source,
        }
    }

    fn stat(&self, fd: &OwnedFd, component: &Path) -> Result<FileStat, TrustError> {
        fstat(fd).map_err(|source| self.open_error(component, source))
    }

    /// Check a directory about to be walked through.
    fn enter(&self, fd: OwnedFd, st: &FileStat, path: PathBuf) -> Result<Dir, TrustError> {
        let mode = st.st_mode & 0o7777;
        if !self.owner_ok(st.st_uid) {
            return Err(TrustError::Owner {
                file: self.file.to_path_buf(),
                component: path,
                kind: Kind::Directory,
                uid: st.st_uid,
                mode,
                trusted: self.trusted,
            });
        }
        let shared = if mode & WRITABLE_BY_OTHERS == 0 {
            None
        } else if mode & STICKY != 0 {
            Some(mode)
        } else {
            return Err(TrustError::Writable {
                file: self.file.to_path_buf(),
                component: path,
                kind: Kind::Directory,
                uid: st.st_uid,
                mode,
            });
        };
        Ok(Dir { fd, path, shared })
    }

    /// Check the file itself: a trusted owner, writable by nobody else.
    fn check_file(&self, st: &FileStat, path: &Path) -> Result<(), TrustError> {
        let mode = st.st_mode & 0o7777;
        if !self.owner_ok(st.st_uid) {
            return Err(TrustError::Owner {
                file: self.file.to_path_buf(),
                component: path.to_path_buf(),
                kind: Kind::Regular,
                uid: st.st_uid,
                mode,
                trusted: self.trusted,
            });
        }
        if mode & WRITABLE_BY_OTHERS != 0 {
            return Err(TrustError::Writable {
                file: self.file.to_path_buf(),
                component: path.to_path_buf(),
                kind: Kind::Regular,
                uid: st.st_uid,
                mode,
            });
        }
        Ok(())
    }

    /// Open the checked file for reading from its checked directory, and make sure the
    /// descriptor is the very file that was checked.
    fn reopen(
        &self,
        dir: &Dir,
        name: &OsStr,
        checked: &FileStat,
        path: PathBuf,
    ) -> Result<TrustedFile, TrustError> {
        let fd = openat(dir.fd.as_fd(), name, READ_FLAGS, Mode::empty()).map_err(|source| {
            match source {
                // Replaced by a link (O_NOFOLLOW) or removed since the check.
                Errno::ELOOP | Errno::ENOENT => TrustError::Replaced {
                    file: self.file.to_path_buf(),
                    component: path.clone(),
                },
                source => self.open_error(&path, source),
            }
        })?;
        let st = self.stat(&fd, &path)?;
        if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino) {
            return Err(TrustError::Replaced {
                file: self.file.to_path_buf(),
                component: path,
            });
        }
        // Owner and mode may have changed in between; only what is true of the open
        // descriptor counts.
        if Kind::of(&st) != Kind::Regular {
            return Err(TrustError::NotRegular {
                file: self.file.to_path_buf(),
                component: path,
                kind: Kind::of(&st),
            });
        }
        self.check_file(&st, &path)?;
        Ok(TrustedFile {
            fd,
            file: self.file.to_path_buf(),
            resolved: path,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
        })
    }
}

#[cfg(test)]
mod tests;
