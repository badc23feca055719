//! Rule 1 against real files, directories, links and FIFOs, made as root in a fresh
//! directory under /tmp (itself sticky and world-writable: every test also shows that a
//! root-owned entry there is trusted). "Someone else" is uid 65534.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::unistd::Uid;

use super::{Kind, TrustError, open_trusted, read_trusted};

const OTHER: u32 = 65534;
const ROOT: Uid = Uid::from_raw(0);
const CAP: u64 = 1024 * 1024;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the trust tests make files owned by other users: run them as root"
        );
        let p = PathBuf::from(format!("/tmp/launcher-trust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        chmod(&p, 0o755);
        TempDir(p)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// A directory (and its missing parents, root 0755) with this owner and mode.
fn dir(p: &Path, mode: u32, uid: u32) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    chmod(p, mode);
    chown(p, uid, uid);
    p.to_path_buf()
}

fn file(p: &Path, content: &[u8], mode: u32, uid: u32) -> PathBuf {
    std::fs::write(p, content).unwrap();
    chmod(p, mode);
    chown(p, uid, uid);
    p.to_path_buf()
}

fn link(target: impl AsRef<Path>, at: &Path) -> PathBuf {
    symlink(target, at).unwrap();
    at.to_path_buf()
}

fn refused(p: &Path) -> TrustError {
    match read_trusted(p, CAP, ROOT) {
        Ok(t) => panic!("{} was trusted: {t:?}", p.display()),
        Err(e) => e,
    }
}

#[test]
fn a_root_owned_chain_under_tmp_is_trusted_and_read() {
    let t = TempDir::new("chain");
    let etc = dir(&t.path("etc/bitpoll"), 0o755, 0);
    let p = file(&etc.join("launcher.toml"), b"[service]\n", 0o644, 0);
    let got = read_trusted(&p, CAP, ROOT).unwrap();
    assert_eq!(&got.bytes[..], b"[service]\n");
    assert_eq!(got.resolved, p);
    let opened = open_trusted(&p, ROOT).unwrap();
    assert_eq!((opened.uid, opened.mode, opened.size), (0, 0o644, 10));
}

#[test]
fn a_group_writable_directory_is_refused_with_the_chmod_fix() {
    let t = TempDir::new("groupw");
    let conf = dir(&t.path("conf"), 0o775, 0);
    let p = file(&conf.join("launcher.toml"), b"x", 0o644, 0);
    let err = refused(&p);
    assert!(
        matches!(&err, TrustError::Writable { component, kind: Kind::Directory, mode: 0o775, .. } if *component == conf),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{}: directory {} is writable by its group (mode 0775); chmod go-w {}",
            p.display(),
            conf.display(),
            conf.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("chmod go-w {}", conf.display())),
        "{msg}"
    );

    chmod(&conf, 0o777);
    let err = refused(&p);
    assert!(
        err.to_string()
            .contains("is writable by every user (mode 0777"),
        "a world-writable directory without the sticky bit: {err}"
    );
}

#[test]
fn a_file_owned_by_another_user_or_writable_by_others_is_refused_without_its_content() {
    let t = TempDir::new("owner");
    let marker = b"CONTENT-MARKER-7fq";
    let p = file(&t.path("theirs"), marker, 0o600, OTHER);
    let err = refused(&p);
    assert!(
        matches!(
            err,
            TrustError::Owner {
                kind: Kind::Regular,
                uid: OTHER,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("is owned by uid 65534 (mode 0600), not by root"));
    assert!(
        msg.contains(&format!(
            "chown root:root {0} && chmod go-w {0}",
            p.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains("CONTENT-MARKER"), "{msg}");

    chown(&p, 0, 0);
    for (mode, by) in [(0o620, "its group"), (0o602, "every user")] {
        chmod(&p, mode);
        let msg = refused(&p).to_string();
        assert!(
            msg.contains(&format!(
                "{} is writable by {by} (mode {mode:04o}",
                p.display()
            )),
            "{msg}"
        );
        assert!(!msg.contains("CONTENT-MARKER"), "{msg}");
    }
}

#[test]
fn a_chain_the_trusted_uid_owns_is_trusted_for_that_uid_only() {
    let t = TempDir::new("trusteduid");
    let home = dir(&t.path("home"), 0o755, 4242);
    let p = file(&home.join("launcher.toml"), b"x", 0o644, 4242);
    assert_eq!(
        &read_trusted(&p, CAP, Uid::from_raw(4242)).unwrap().bytes[..],
        b"x"
    );
    let err = refused(&p);
    assert!(
        matches!(&err, TrustError::Owner { component, kind: Kind::Directory, uid: 4242, .. } if *component == home),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("move the file to a directory only root can change"),
        "{err}"
    );
}

#[test]
fn a_symlink_kept_in_a_directory_the_service_user_owns_is_refused() {
    let t = TempDir::new("userdir");
    let secret = file(&t.path("root-only"), b"k", 0o600, 0);
    let svc = dir(&t.path("var/lib/svc"), 0o755, OTHER);
    let key = link(&secret, &svc.join("key"));
    let err = refused(&key);
    assert!(
        matches!(&err, TrustError::Owner { component, kind: Kind::Directory, uid: OTHER, .. } if *component == svc),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "{}: directory {} is owned by uid 65534",
            key.display(),
            svc.display()
        )),
        "{err}"
    );

    // The other way round: a root-kept link whose target lies in the user's directory.
    let target = file(&svc.join("target"), b"k", 0o600, 0);
    let etc = dir(&t.path("etc"), 0o755, 0);
    let pointer = link(&target, &etc.join("key"));
    let err = refused(&pointer);
    assert!(
        matches!(&err, TrustError::Owner { component, .. } if *component == svc),
        "the target's directory is checked too: {err}"
    );
}

#[test]
fn a_sticky_shared_directory_passes_root_entries_and_refuses_everyone_elses() {
    let t = TempDir::new("sticky");
    let shared = dir(&t.path("shared"), 0o1777, 0);
    let mine = file(&shared.join("root.toml"), b"ok", 0o644, 0);
    assert_eq!(&read_trusted(&mine, CAP, ROOT).unwrap().bytes[..], b"ok");

    let theirs = file(&shared.join("user.toml"), b"x", 0o644, OTHER);
    let err = refused(&theirs);
    assert!(
        matches!(&err, TrustError::SharedEntry { component, dir, dir_mode: 0o1777, uid: OTHER, .. } if *component == theirs && *dir == shared),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "sits in {} (mode 1777), a directory others can write",
            shared.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("move the file out of {}", shared.display())),
        "{msg}"
    );

    // A link or a directory someone else keeps there is refused as well, even when what
    // it leads to is root's.
    let their_link = link(&mine, &shared.join("user-link"));
    chown(&their_link, OTHER, OTHER);
    let err = refused(&their_link);
    assert!(
        matches!(
            err,
            TrustError::SharedEntry {
                kind: Kind::Symlink,
                ..
            }
        ),
        "{err}"
    );
    let their_dir = dir(&shared.join("user-dir"), 0o755, OTHER);
    let inside = file(&their_dir.join("f"), b"x", 0o644, 0);
    let err = refused(&inside);
    assert!(
        matches!(
            err,
            TrustError::SharedEntry {
                kind: Kind::Directory,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_nixos_chain_of_links_into_the_store_is_trusted() {
    // /etc/bitpoll/launcher.toml -> /etc/static/bitpoll/launcher.toml, /etc/static ->
    // /nix/store/<hash>-etc/etc, whose bitpoll/launcher.toml -> /nix/store/<hash>-launcher.toml;
    // /nix/store is 1775 root:nixbld, store objects root 0555/0444.
    let t = TempDir::new("nixos");
    let nixbld = 30000;
    let store = dir(&t.path("nix/store"), 0o1775, 0);
    chown(&store, 0, nixbld);
    let toml = file(&store.join("abc-launcher.toml"), b"[service]\n", 0o444, 0);
    let etc_drv = dir(&store.join("def-etc/etc/bitpoll"), 0o555, 0);
    link(&toml, &etc_drv.join("launcher.toml"));
    for d in ["def-etc/etc", "def-etc"] {
        chmod(&store.join(d), 0o555);
    }
    let etc = dir(&t.path("etc/bitpoll"), 0o755, 0);
    link(store.join("def-etc/etc"), &t.path("etc/static"));
    let p = link(
        t.path("etc/static/bitpoll/launcher.toml"),
        &etc.join("launcher.toml"),
    );
    let got = read_trusted(&p, CAP, ROOT).unwrap();
    assert_eq!(&got.bytes[..], b"[service]\n");
    assert_eq!(got.resolved, toml);
    assert_eq!(got.resolved, std::fs::canonicalize(&p).unwrap());

    // A build user's object in the store (a build in progress) is not trusted.
    let building = file(&store.join("ghi-launcher.toml"), b"x", 0o444, 30001);
    let err = refused(&building);
    assert!(
        matches!(err, TrustError::SharedEntry { uid: 30001, .. }),
        "{err}"
    );
}

#[test]
fn a_fifo_is_refused_at_once_without_blocking() {
    let t = TempDir::new("fifo");
    let fifo = t.path("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = mpsc::channel();
    let p = fifo.clone();
    std::thread::spawn(move || tx.send(read_trusted(&p, CAP, ROOT).map(|_| ())));
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("reading a FIFO blocked: it must be refused before it is opened for reading");
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            TrustError::NotRegular {
                kind: Kind::Fifo,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "{} is not a regular file (it is a FIFO (named pipe))",
            fifo.display()
        )),
        "{err}"
    );
}

#[test]
fn dev_zero_and_directories_are_not_regular_files() {
    let err = refused(Path::new("/dev/zero"));
    assert!(
        matches!(
            err,
            TrustError::NotRegular {
                kind: Kind::CharDevice,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("never reads pipes, devices or sockets"),
        "{err}"
    );
    let t = TempDir::new("notreg");
    let d = dir(&t.path("d"), 0o755, 0);
    let err = refused(&d);
    assert!(
        matches!(
            err,
            TrustError::NotRegular {
                kind: Kind::Directory,
                ..
            }
        ),
        "{err}"
    );
    let err = refused(Path::new("/"));
    assert!(
        matches!(
            err,
            TrustError::NotRegular {
                kind: Kind::Directory,
                ..
            }
        ),
        "{err}"
    );
    // A file used as a directory.
    let f = file(&t.path("f"), b"x", 0o644, 0);
    let err = refused(&f.join("below"));
    assert!(
        matches!(&err, TrustError::NotADirectory { component, kind: Kind::Regular, .. } if *component == f),
        "{err}"
    );
}

#[test]
fn a_missing_file_names_the_missing_component() {
    let t = TempDir::new("missing");
    let p = t.path("no/such/file");
    let err = refused(&p);
    assert!(
        matches!(&err, TrustError::Missing { component, .. } if *component == t.path("no")),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "{} does not exist ({} is missing)",
            p.display(),
            t.path("no").display()
        )),
        "{err}"
    );
    let dangling = link(t.path("gone"), &t.path("dangling"));
    let err = refused(&dangling);
    assert!(
        matches!(&err, TrustError::Missing { component, .. } if *component == t.path("gone")),
        "{err}"
    );
}

#[test]
fn a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read() {
    let t = TempDir::new("cap");
    let at = file(&t.path("at"), &[b'a'; 16], 0o644, 0);
    assert_eq!(read_trusted(&at, 16, ROOT).unwrap().bytes.len(), 16);
    let over = file(&t.path("over"), &[b'a'; 17], 0o644, 0);
    let err = read_trusted(&over, 16, ROOT).unwrap_err();
    assert!(
        matches!(err, TrustError::TooLarge { limit: 16, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{} is larger than 16 bytes", over.display())),
        "{err}"
    );
}

#[test]
fn relative_links_and_dotdot_resolve_as_the_kernel_resolves_them() {
    let t = TempDir::new("dotdot");
    dir(&t.path("a/b/deep"), 0o755, 0);
    dir(&t.path("a/c"), 0o755, 0);
    let target = file(&t.path("a/c/file"), b"c", 0o644, 0);
    // A relative target is taken from the link's own directory.
    let l = link("../c/file", &t.path("a/b/link"));
    let got = read_trusted(&l, CAP, ROOT).unwrap();
    assert_eq!(got.resolved, target);
    // `..` after a link to a directory leaves the link's target, not the link.
    file(&t.path("a/b/x"), b"physical", 0o644, 0);
    link("b/deep", &t.path("a/dirlink"));
    let p = t.path("a/dirlink/../x");
    let got = read_trusted(&p, CAP, ROOT).unwrap();
    assert_eq!(&got.bytes[..], b"physical");
    assert_eq!(got.resolved, t.path("a/b/x"));
    assert_eq!(got.resolved, std::fs::canonicalize(&p).unwrap());
    // `..` at the root stays at the root.
    let from_root = PathBuf::from(format!("/../..{}", target.display()));
    assert_eq!(
        read_trusted(&from_root, CAP, ROOT).unwrap().resolved,
        target
    );
}

#[test]
fn a_symlink_loop_is_refused() {
    let t = TempDir::new("loop");
    let a = link(t.path("b"), &t.path("a"));
    link("a", &t.path("b"));
    let err = refused(&a);
    assert!(matches!(err, TrustError::TooManyLinks { .. }), "{err}");
    assert!(
        err.to_string().contains("more than 40 symbolic links"),
        "{err}"
    );
    let own = link("self", &t.path("self"));
    assert!(matches!(refused(&own), TrustError::TooManyLinks { .. }));
    // A long chain that ends is followed up to the limit.
    file(&t.path("end"), b"e", 0o644, 0);
    let mut prev = "end".to_string();
    for i in 0..40 {
        let name = format!("l{i}");
        link(&prev, &t.path(&name));
        prev = name;
    }
    assert_eq!(
        read_trusted(&t.path(&prev), CAP, ROOT).unwrap().resolved,
        t.path("end")
    );
    link(&prev, &t.path("l40"));
    assert!(matches!(
        refused(&t.path("l40")),
        TrustError::TooManyLinks { .. }
    ));
}

#[test]
fn a_secret_file_in_a_directory_the_service_user_owns_is_refused_with_the_fix() {
    let t = TempDir::new("secretdir");
    // The service user could replace `key` by a link to any file only root can read.
    let svc = dir(&t.path("var/lib/svc"), 0o700, OTHER);
    let key = file(&svc.join("key"), b"SECRET-MARKER-41k", 0o600, 0);
    let err = crate::files::read_secret_file(&key).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, crate::files::SecretFileError::Untrusted(TrustError::Owner { component, .. }) if *component == svc),
        "{msg}"
    );
    assert!(
        msg.contains("move the file to a directory only root can change"),
        "{msg}"
    );
    assert!(!msg.contains("SECRET-MARKER"), "{msg}");

    // The same file under root's own directory is read; group-readable is fine for a
    // secret, group-writable is not.
    let keys = dir(&t.path("etc/keys"), 0o750, 0);
    let key = file(&keys.join("key"), b"k\n", 0o640, 0);
    assert_eq!(&crate::files::read_secret_file(&key).unwrap()[..], b"k\n");
    chmod(&key, 0o660);
    let msg = crate::files::read_secret_file(&key)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("is writable by its group (mode 0660"), "{msg}");
}
