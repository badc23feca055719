//! Secret files and small state files: read them without trusting the path twice, write
//! them atomically with exact owner and mode.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, unlinkat};
use zeroize::Zeroizing;

use launcher_plan::secret::MAX_SECRET_BYTES;

use crate::trust::{self, TrustError};

/// Why a secret file is refused. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Refused by the trust rule (owner and mode of the file and of every directory and
    /// link on its path), or not found, or not readable.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error(
        "{path} is a symbolic link inside the data directory, which the launcher never follows; remove it"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "{path} has {links} hard links; a generated secret has exactly one name, so this may be a planted link to another file: remove {path} only if no data depends on it (a new one is then generated)"
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error(
        "{path} is readable by every user (mode {mode:04o}); restrict it: chmod 0600 {path} (or 0640 owned by a group of the launcher)"
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error(
        "{path} is accessible to other users (mode {mode:04o}); a generated secret must be 0600: chmod 0600 {path}"
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error(
        "{path} is owned by uid {uid}, neither root nor the service user; a generated secret is only trusted when the launcher wrote it"
    )]
    UntrustedOwner { path: PathBuf, uid: u32 },
    #[error(
        "{path} is larger than {MAX_SECRET_BYTES} bytes ({size} bytes); point the secret at the key file itself"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK);

/// Read a secret file named by the admin (a path in the config, or a systemd credential).
/// The path, links included, must pass the trust rule ([`crate::trust`]) for the launching
/// uid: otherwise whoever can change a directory on it could swap the secret, or point it
/// at any file root can read. The opened file must in addition not be readable by every
/// user, and is read up to [`MAX_SECRET_BYTES`].
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let file = trust::open_trusted(path, nix::unistd::geteuid())?;
    if file.mode & 0o004 != 0 {
        return Err(SecretFileError::WorldReadable {
            path: path.into(),
            mode: file.mode,
        });
    }
    Ok(file.read(MAX_SECRET_BYTES)?)
}

/// Read a secret the launcher generated earlier, from `dir` (the data directory's
/// secrets/ descriptor). Ok(None) when it does not exist yet. The file must be a regular
/// file (no link), owned by root or `owner`, mode 0600 or stricter.
pub fn read_generated<K: crate::privs::Kernel>(
    ids: &mut crate::privs::Identity<K>,
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    owner: Uid,
) -> Result<Option<Zeroizing<Vec<u8>>>, SecretFileError> {
    let path = dir_path.join(name);
    let fd = match openat(dir, name, READ_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(SecretFileError::Symlink { path }),
        Err(Errno::EACCES) => {
            // Read by the service user (a root launcher acts as it), a file it may not
            // open is someone else's: say what it is when that is the reason (a planted
            // hard link to a root-only file), from its inode, which needs no permission.
            let st = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|source| SecretFileError::Open {
                path: path.clone(),
                source,
            })?;
            check_regular(&st, &path)?;
            if st.st_nlink != 1 {
                return Err(SecretFileError::HardLinked {
                    path,
                    links: st.st_nlink as u64,
                });
            }
            if st.st_uid != owner.as_raw() && st.st_uid != 0 {
                return Err(SecretFileError::UntrustedOwner {
                    path,
                    uid: st.st_uid,
                });
            }
            // Root's own file with one name (left by a tool run as root): root reads it,
            // as the launcher always did; the user could not have planted it.
            let reopened = if st.st_uid == 0 {
                ids.with_root(|| openat(dir, name, READ_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()))
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            match reopened {
                Some(fd) => fd,
                None => {
                    return Err(SecretFileError::Open {
                        path,
                        source: Errno::EACCES,
                    });
                }
            }
        }
        Err(source) => return Err(SecretFileError::Open { path, source }),
    };
    let st = stat(&fd, &path)?;
    check_regular(&st, &path)?;
    if st.st_nlink != 1 {
        return Err(SecretFileError::HardLinked {
            path,
            links: st.st_nlink as u64,
        });
    }
    if st.st_uid != owner.as_raw() && st.st_uid != 0 {
        return Err(SecretFileError::UntrustedOwner {
            path,
            uid: st.st_uid,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::NotPrivate { path, mode });
    }
    read_capped(fd, &st, &path).map(Some)
}

fn stat(fd: &OwnedFd, path: &Path) -> Result<FileStat, SecretFileError> {
    fstat(fd).map_err(|source| SecretFileError::Open {
        path: path.into(),
        source,
    })
}

fn check_regular(st: &FileStat, path: &Path) -> Result<(), SecretFileError> {
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(SecretFileError::NotRegular { path: path.into() });
    }
    Ok(())
}

fn read_capped(
    fd: OwnedFd,
    st: &FileStat,
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let size = st.st_size as u64;
    if size > MAX_SECRET_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.into(),
            size,
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(size as usize + 1));
    // Read one byte past the cap so a file that grew after fstat is still refused.
    std::fs::File::from(fd)
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| SecretFileError::Read {
            path: path.into(),
            source,
        })?;
    if buf.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.into(),
            size: buf.len() as u64,
        });
    }
    Ok(buf)
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path} already exists")]
    Exists { path: PathBuf },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> WriteError + 'a {
    move |e| WriteError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Write `contents` to `dir/name` atomically: a temporary file is written, synced, given
/// its owner and mode, then renamed into place and the directory synced. A reader sees
/// either no file or the complete one, never a half-written secret. With `replace =
/// false` an existing file is left untouched and [`WriteError::Exists`] returned.
pub fn write_atomic(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
    replace: bool,
) -> Result<(), WriteError> {
    let path = dir_path.join(name);
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let tmp_path = dir_path.join(&tmp);
    // A leftover from a crashed earlier run of this PID (unlikely, but harmless to remove).
    let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io("create", &tmp_path))?;
    let result = (|| {
        if let Some((uid, gid)) = owner {
            fchown(&fd, Some(uid), Some(gid)).map_err(io("chown", &tmp_path))?;
        }
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(io("chmod", &tmp_path))?;
        let mut file = std::fs::File::from(fd.try_clone().map_err(|source| WriteError::Io {
            op: "duplicate descriptor of",
            path: tmp_path.clone(),
            source,
        })?);
        file.write_all(contents).map_err(|source| WriteError::Io {
            op: "write",
            path: tmp_path.clone(),
            source,
        })?;
        fsync(&fd).map_err(io("sync", &tmp_path))?;
        let flags = if replace {
            nix::fcntl::RenameFlags::empty()
        } else {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        };
        nix::fcntl::renameat2(dir, tmp.as_str(), dir, name, flags).map_err(|e| match e {
            Errno::EEXIST => WriteError::Exists { path: path.clone() },
            e => io("rename into place", &path)(e),
        })?;
        fsync(dir).map_err(io("sync directory", dir_path))
    })();
    if result.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Read a small state file (a stamp) from `dir`, without following links. None when it
/// does not exist or is not a readable regular file: a stamp that cannot be trusted is
/// the same as no stamp.
pub fn read_state(dir: BorrowedFd<'_>, name: &str) -> Option<String> {
    let fd = openat(dir, name, READ_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()).ok()?;
    let st = fstat(&fd).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
        || st.st_size > 64 * 1024
    {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Remove a state file; absent is fine.
pub fn remove_state(dir: BorrowedFd<'_>, dir_path: &Path, name: &str) -> Result<(), WriteError> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io("remove", &dir_path.join(name))(e)),
    }
}

/// The identity of a file inside `dir` as "dev:ino", or None when it does not exist.
/// Links are not followed.
pub fn identity_at(dir: BorrowedFd<'_>, name: &str) -> Option<String> {
    let st = nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()?;
    Some(format!("{}:{}", st.st_dev, st.st_ino))
}

/// Open (or create, `0600`, owned by `owner` when given) the lock file `dir/name` for
/// reading and writing, without following a link. Whoever may write the directory (the
/// service user) could put anything there: only a regular file with one name is used.
pub fn open_lock_file(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    owner: Option<(Uid, Gid)>,
) -> Result<std::fs::File, WriteError> {
    let path = dir_path.join(name);
    let fd = openat(
        dir,
        name,
        OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io("open", &path))?;
    let st = fstat(&fd).map_err(io("inspect", &path))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG || st.st_nlink != 1 {
        return Err(WriteError::Io {
            op: "use",
            path,
            source: std::io::Error::other(
                "not a regular file with one name; remove it, the launcher creates it again",
            ),
        });
    }
    if let Some((uid, gid)) = owner {
        if st.st_uid != uid.as_raw() || st.st_gid != gid.as_raw() {
            fchown(&fd, Some(uid), Some(gid)).map_err(io("chown", &path))?;
        }
    }
    Ok(std::fs::File::from(fd))
}

/// Remove all but the newest `keep` of the regular files in `dir` whose names `matches`
/// (names that sort by age). Links and other files are left alone. Returns the names
/// removed.
/// Remove the temporary files in `dir` that `pid_of` recognizes (it gives the PID of the
/// process that wrote one) and whose writer is gone: regular files only (a link or a
/// directory with such a name is left alone), looked at without following links. A writer
/// still alive may be another launcher at work: its file stays. Returns the names removed.
pub fn remove_leftovers(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    pid_of: impl Fn(&str) -> Option<u32>,
) -> Result<Vec<String>, WriteError> {
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("list", dir_path))?;
    let candidates: Vec<(String, u32)> = d
        .iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
        .filter_map(|n| pid_of(&n).map(|pid| (n, pid)))
        .collect();
    let mut removed = Vec::new();
    for (name, pid) in candidates {
        let alive = i32::try_from(pid).ok().is_some_and(|pid| {
            pid > 0
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    != Err(Errno::ESRCH)
        });
        if alive {
            continue;
        }
        let regular =
            nix::sys::stat::fstatat(dir, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| {
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
                });
        if !regular {
            continue;
        }
        match unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => removed.push(name),
            Err(e) => return Err(io("remove", &dir_path.join(&name))(e)),
        }
    }
    Ok(removed)
}

/// Keep the `keep` newest files in `dir` whose names `matches`, by when they were written
/// (their modification time, then the name), and remove the others; `spare` (the file just
/// written) is never removed, whatever other files claim by their names or times. Returns
/// the names removed.
pub fn prune(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    matches: impl Fn(&str) -> bool,
    keep: usize,
    spare: Option<&str>,
) -> Result<Vec<String>, WriteError> {
    let list = io("list", dir_path);
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(list)?;
    let names: Vec<String> = d
        .iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type() == Some(nix::dir::Type::File))
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
        .filter(|n| matches(n))
        .collect();
    let mut dated: Vec<((i64, i64), String)> = names
        .into_iter()
        .filter_map(|n| {
            let st =
                nix::sys::stat::fstatat(dir, n.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .ok()?;
            Some(((st.st_mtime, st.st_mtime_nsec), n))
        })
        .collect();
    // Newest first; the spared one counts as the newest of all.
    dated.sort_by(|a, b| {
        let spared = |n: &String| Some(n.as_str()) == spare;
        spared(&b.1)
            .cmp(&spared(&a.1))
            .then(b.0.cmp(&a.0))
            .then(b.1.cmp(&a.1))
    });
    let mut removed = Vec::new();
    for (_, name) in dated
        .into_iter()
        .skip(keep.max(usize::from(spare.is_some())))
    {
        unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(io("remove", &dir_path.join(&name)))?;
        removed.push(name);
    }
    Ok(removed)
}
