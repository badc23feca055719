//! Tests of the file-system rules that need no privileges: run as any user in a fresh
//! temporary directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use launcher_plan::judge::data_dir::DirProblem;
use launcher_plan::layout::TREE;

use crate::files::{self, SecretFileError, WriteError};
use crate::tree::{self, Owner, TreeError};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("launcher-sys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn me() -> Owner {
    Owner {
        uid: nix::unistd::geteuid(),
        gid: nix::unistd::getegid(),
        privileged: false,
    }
}

/// This process's identity, as the functions under test take it.
fn ids() -> crate::privs::Identity {
    crate::privs::Identity::of_process().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn creates_the_tree_with_exact_modes_and_repairs_them() {
    let t = TempDir::new("tree");
    let data = t.0.join("data");
    let (_, changes) = tree::ensure(&mut ids(), &data, TREE, me(), "me").unwrap();
    assert_eq!(
        changes.len(),
        TREE.len(),
        "one change per new directory: {changes:?}"
    );
    assert!(
        changes
            .iter()
            .all(|c| c.what.starts_with("created (owner ")),
        "{changes:?}"
    );
    for spec in TREE {
        let p = if spec.name.is_empty() {
            data.clone()
        } else {
            data.join(spec.name)
        };
        assert_eq!(mode(&p), spec.mode, "{}", p.display());
    }
    std::fs::set_permissions(data.join("secrets"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, changes) = tree::ensure(&mut ids(), &data, TREE, me(), "me").unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].what, "mode 0755 -> 0700");
    let (_, changes) = tree::ensure(&mut ids(), &data, TREE, me(), "me").unwrap();
    assert!(
        changes.is_empty(),
        "a correct tree is left alone: {changes:?}"
    );
}

#[test]
fn refuses_a_symlink_planted_inside_the_data_dir() {
    let t = TempDir::new("link");
    let data = t.0.join("data");
    tree::ensure(&mut ids(), &data, TREE, me(), "me").unwrap();
    let victim = t.0.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(data.join("static")).unwrap();
    symlink(&victim, data.join("static")).unwrap();
    let err = tree::ensure(&mut ids(), &data, TREE, me(), "me").unwrap_err();
    assert!(
        matches!(err, TreeError::Refused(DirProblem::Symlink { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    assert_eq!(mode(&victim), 0o755, "the link's target was not touched");
}

#[test]
fn refuses_a_data_dir_that_is_a_symlink_or_a_file() {
    let t = TempDir::new("datalink");
    let real = t.0.join("real");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, t.0.join("data")).unwrap();
    let err = tree::ensure(&mut ids(), &t.0.join("data"), TREE, me(), "me").unwrap_err();
    assert!(
        matches!(err, TreeError::Refused(DirProblem::Symlink { .. })),
        "{err}"
    );
    std::fs::write(t.0.join("file"), b"x").unwrap();
    let err = tree::ensure(&mut ids(), &t.0.join("file"), TREE, me(), "me").unwrap_err();
    assert!(
        matches!(err, TreeError::Refused(DirProblem::NotADirectory { .. })),
        "{err}"
    );
}

#[test]
fn a_missing_parent_is_reported() {
    let t = TempDir::new("parent");
    let err = tree::ensure(&mut ids(), &t.0.join("no/such/data"), TREE, me(), "me").unwrap_err();
    assert!(
        matches!(err, TreeError::Refused(DirProblem::ParentMissing { .. })),
        "{err}"
    );
}

#[test]
fn atomic_write_sets_the_mode_and_never_replaces_unless_asked() {
    let t = TempDir::new("write");
    let dir = nix::fcntl::open(
        &t.0,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    use std::os::fd::AsFd;
    files::write_atomic(dir.as_fd(), &t.0, "key", b"one", 0o600, None, false).unwrap();
    assert_eq!(std::fs::read(t.0.join("key")).unwrap(), b"one");
    assert_eq!(mode(&t.0.join("key")), 0o600);
    let err =
        files::write_atomic(dir.as_fd(), &t.0, "key", b"two", 0o600, None, false).unwrap_err();
    assert!(matches!(err, WriteError::Exists { .. }));
    assert_eq!(
        std::fs::read(t.0.join("key")).unwrap(),
        b"one",
        "an existing secret is never replaced"
    );
    files::write_atomic(dir.as_fd(), &t.0, "key", b"three", 0o600, None, true).unwrap();
    assert_eq!(std::fs::read(t.0.join("key")).unwrap(), b"three");
    let leftovers: Vec<_> = std::fs::read_dir(&t.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind");
}

#[test]
fn secret_files_must_be_private_regular_and_small() {
    let t = TempDir::new("secret");
    let write = |name: &str, content: &[u8], m: u32| {
        let p = t.0.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        p
    };
    assert_eq!(
        &files::read_secret_file(&write("ok", b"v\n", 0o600)).unwrap()[..],
        b"v\n"
    );
    assert_eq!(
        &files::read_secret_file(&write("group", b"v", 0o640)).unwrap()[..],
        b"v"
    );
    let cases = [
        (
            write("world", b"v", 0o644),
            "readable by every user (mode 0644)",
        ),
        (write("writable", b"v", 0o602), "writable by every user"),
        (
            write("big", &vec![b'a'; 64 * 1024 + 1], 0o600),
            "larger than 65536 bytes",
        ),
        (t.0.clone(), "is not a regular file"),
        (t.0.join("missing"), "does not exist"),
    ];
    for (path, want) in cases {
        let err: SecretFileError = files::read_secret_file(&path).unwrap_err();
        assert!(err.to_string().contains(want), "{}: {err}", path.display());
    }
}

#[test]
fn generated_secrets_must_not_be_links_or_readable_by_others() {
    let t = TempDir::new("generated");
    use std::os::fd::AsFd;
    let dir = nix::fcntl::open(
        &t.0,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let uid = nix::unistd::geteuid();
    assert!(
        files::read_generated(&mut ids(), dir.as_fd(), &t.0, "absent", uid)
            .unwrap()
            .is_none()
    );
    std::fs::write(t.0.join("open"), b"k").unwrap();
    std::fs::set_permissions(t.0.join("open"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = files::read_generated(&mut ids(), dir.as_fd(), &t.0, "open", uid).unwrap_err();
    assert!(
        err.to_string().contains("a generated secret must be 0600"),
        "{err}"
    );
    std::fs::write(t.0.join("target"), b"k").unwrap();
    symlink(t.0.join("target"), t.0.join("link")).unwrap();
    let err = files::read_generated(&mut ids(), dir.as_fd(), &t.0, "link", uid).unwrap_err();
    assert!(matches!(err, SecretFileError::Symlink { .. }), "{err}");
}

#[test]
fn a_hard_linked_generated_secret_is_refused() {
    let t = TempDir::new("hardlink");
    use std::os::fd::AsFd;
    let dir = nix::fcntl::open(
        &t.0,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    std::fs::write(t.0.join("elsewhere"), b"root only").unwrap();
    std::fs::set_permissions(
        t.0.join("elsewhere"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::hard_link(t.0.join("elsewhere"), t.0.join("KEY")).unwrap();
    let err = files::read_generated(&mut ids(), dir.as_fd(), &t.0, "KEY", nix::unistd::geteuid())
        .unwrap_err();
    assert!(
        matches!(err, SecretFileError::HardLinked { links: 2, .. }),
        "{err}"
    );
}
