//! docs/guides/debian.md, run as written on a Debian 12 booted with systemd (the harness of
//! tests/container: the host's root as the lower layer of an overlay), with nginx and then
//! Caddy from Debian in front, TLS with the guide's self-signed certificate: the page loads
//! with every stylesheet it names, and the administrator of the guide logs in through
//! HTTPS (CSRF and the origin check included). Then the day-2 pages run as written in the
//! same container, in an administrator's order:
//! - backup.md on SQLite: backup, a change, restore (the change is gone); the online
//!   backup while the service runs (a complete copy, nothing of root's left behind);
//! - keys.md: generated keys to files, both keys rotated (sessions and the stored calendar
//!   address survive; a dropped fallback ends the session);
//! - postgresql.md: a poll voted on through the forms, then export, switch, import: the
//!   poll, its vote, the accounts and the calendar address are read back through the app
//!   (the address is ciphertext in PostgreSQL), the export file is gone, a new poll works;
//! - backup.md on PostgreSQL: backup, an account, a poll and an upload's removal after it,
//!   restore: what was there is back, what came after is gone;
//! - second-host.md: a second container linked to the first, PostgreSQL reached over the
//!   link with TLS (`verify-full`) and a password, installed with the Debian guide and the
//!   first host's /etc/bitpoll: it applies no migration, accepts the first host's session
//!   and CSRF token (a made-up token is refused), and each host reads the calendar address
//!   the other encrypted;
//! - upgrade.md: a new Bitpoll commit that adds a migration: migrate applies it once, the
//!   next start skips it, the data and the login stay, the rebuilt static files are served;
//! - uninstall.md: the unit goes, the data and account stay; then they go, and the
//!   PostgreSQL database and role.
//!
//! What is not run as written, and what is done instead:
//! - `packages`: the container has no network; the test checks that each package the
//!   block names is installed (the host's, which .ci/run installs);
//! - `launcher`: the block's build is not run; the binary under test is bound at
//!   /usr/local/bin/bitpoll-launcher and this checkout at /usr/local/src/bitpoll-launcher;
//! - `source`: the test checks the commit the block names and unpacks the same commit from
//!   the snapshot in ../shared/upstream (plus Debian's emoji font, which the snapshot
//!   lacks);
//! - `venv` and `assets` need PyPI: they run as written on the host, in a mount namespace
//!   of their own where /opt/bitpoll is a cache directory
//!   (/var/cache/bitpoll-launcher-tests/guide-debian/KEY, KEY a hash of the blocks and
//!   their inputs; about a minute the first time), which the container gets as
//!   /opt/bitpoll, read-only;
//! - the service account is created by the harness before `service`, from the launcher's
//!   own sysusers entry in a uid range of the container's own (as tests/container/bitpoll.rs
//!   does: uids shared with the host's tests), so `install` finds it there;
//! - nginx and Caddy are enabled on the host and so masked in the container: the test
//!   unmasks them, and stops nginx before Caddy takes ports 80 and 443;
//! - postgresql.md's `postgresql-package`: checked, not run (no network; the package is the
//!   host's). What its installation does, the test does: a cluster made with
//!   `pg_createcluster` and started (after dropping any cluster the host's root shows,
//!   in the container's own layer only; .ci/run keeps the host from having one);
//! - second-host.md's `copy-config` (`scp`): there is no SSH server; the test checks the
//!   block and copies /etc/bitpoll from the first container to the second with tar,
//!   modes kept. The two containers are linked by a veth pair with the page's addresses
//!   (192.0.2.1 and 192.0.2.2), made with the host's `ip`;
//! - upgrade.md's `upgrade-debian`: run with `COMMIT` (a placeholder the page names) set
//!   to a commit of the test's own. /opt/bitpoll is read-only here and its source a
//!   snapshot, not a clone: the test puts an overlay over /opt/bitpoll (in the container
//!   only), makes the source a git checkout of the snapshot's tree whose `origin` is a
//!   repository in the container, and commits there the pinned tree plus a new migration.
//!   The block's `pip install` finds every requirement installed and needs no network.
//!
//! Needs root, systemd-nspawn, nginx, caddy, curl, PostgreSQL's server, iproute2 and the
//! snapshot; without the snapshot the test returns after one line (a failure with
//! CI=true). `BLT_DEBUG_BLOCKS=1` prints what each block printed.
//!
//!     cargo test --test suite guide_debian:: -- --test-threads=1

use crate::container;
use crate::guide;
use crate::util;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use container::{Container, ContainerBuilder, LAUNCHER_PATH};
use util::upstream;

const GUIDE: &str = "docs/guides/debian.md";
const BACKUP: &str = "docs/guides/backup.md";
const POSTGRESQL: &str = "docs/guides/postgresql.md";
const SECOND_HOST: &str = "docs/guides/second-host.md";
const UPGRADE: &str = "docs/guides/upgrade.md";
const CHECKOUT: &str = env!("CARGO_MANIFEST_DIR");
const CHECKOUT_IN: &str = "/usr/local/src/bitpoll-launcher";
const COMMIT: &str = "35b0236534fa181fd026436bd95fe7d0c60f37ba";
const CACHE_ROOT: &str = "/var/cache/bitpoll-launcher-tests/guide-debian";
const FONT_REL: &str = "bitpoll/base/static/fonts/NotoColorEmoji.ttf";
const DEBIAN_FONT: &str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf";
const PASSWORD: &str = "guide-admin-password-7c21";
const UID_RANGE_PATH: &str = "/etc/sysusers.d/00-blt-uid-range.conf";
const UID_RANGE: &str = "# The tests' container allocates system uids here.\nr - 850-899\n";
const CONFIG: &str = "/etc/bitpoll/launcher.toml";

fn sha256_file(path: &Path) -> String {
    util::sha256_hex(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// /opt/bitpoll made by the guide's `venv` and `assets` blocks on the host (cached), or
/// None when the snapshot is absent.
fn opt_bitpoll() -> Option<PathBuf> {
    let tarball = upstream::snapshot_dir().join(upstream::TARBALL);
    if !tarball.is_file() {
        util::skip(&format!("the snapshot {} is absent", tarball.display()));
        return None;
    }
    let venv = guide::block(GUIDE, "venv");
    let assets = guide::block(GUIDE, "assets");
    let python = Command::new("/usr/bin/python3")
        .arg("--version")
        .output()
        .expect("python3 --version");
    let key = util::sha256_hex(
        format!(
            "layout 2\n{venv}\n{assets}\n{}\n{}\n{}\n{}\n{}",
            sha256_file(&tarball),
            sha256_file(&Path::new(CHECKOUT).join("nixos/pkgs/bitpoll/settings_local.py")),
            sha256_file(&Path::new(CHECKOUT).join("nixos/pkgs/bitpoll/build-assets.sh")),
            sha256_file(Path::new(DEBIAN_FONT)),
            String::from_utf8_lossy(&python.stdout).trim(),
        )
        .as_bytes(),
    );
    let key = &key[..16];
    let dir = Path::new(CACHE_ROOT).join(key);
    let opt = dir.join("opt");
    if dir.join("complete").is_file() {
        return Some(opt);
    }
    fs::create_dir_all(CACHE_ROOT).expect("create the cache root");
    let lock = fs::File::create(Path::new(CACHE_ROOT).join(".lock")).expect("the cache lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the cache");
    if dir.join("complete").is_file() {
        return Some(opt);
    }
    // One install at a time: the older ones go.
    for old in fs::read_dir(CACHE_ROOT)
        .expect("read the cache root")
        .flatten()
    {
        if old.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let _ = Command::new("chmod")
                .args(["-R", "u+w"])
                .arg(old.path())
                .status();
            let _ = fs::remove_dir_all(old.path());
        }
    }
    fs::create_dir_all(&opt).expect("create the cache dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        r#"
mount -t tmpfs -o mode=0755 blt-guide-opt /opt
mkdir /opt/bitpoll
mount --bind "$BLT_OPT" /opt/bitpoll
mount -t tmpfs -o mode=0755 blt-guide-src /usr/local/src
mkdir /usr/local/src/bitpoll-launcher
mount --bind "$BLT_CHECKOUT" /usr/local/src/bitpoll-launcher
# In place of the guide's `source` block: the same commit from the snapshot.
mkdir /opt/bitpoll/src
tar -xzf "$BLT_TARBALL" -C /opt/bitpoll/src --no-same-owner --no-same-permissions
[ -s /opt/bitpoll/src/{FONT_REL} ] || install -m 0644 {DEBIAN_FONT} /opt/bitpoll/src/{FONT_REL}
cd /
# The guide's `venv` block:
{venv}
# The guide's `assets` block:
{assets}
"#
    );
    let t = Instant::now();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .args(["bash", "-euo", "pipefail", "-c", &script])
        // A root shell's PATH on Debian: python3 is /usr/bin/python3, whatever the
        // caller's PATH says (pip's own settings, such as a CA bundle, stay).
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("BLT_OPT", &opt)
        .env("BLT_CHECKOUT", CHECKOUT)
        .env("BLT_TARBALL", &tarball)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "the guide's venv and assets blocks failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "the guide's venv and assets blocks ran in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    fs::write(dir.join("complete"), b"").expect("mark the install complete");
    Some(opt)
}

/// The service account in a uid range of the container's own (see the module's doc),
/// before the guide's `service` block.
fn create_account(c: &Container) {
    let sysusers = c.exec_ok(&[LAUNCHER_PATH, "sysusers", "--config", CONFIG]);
    c.write_file(UID_RANGE_PATH, UID_RANGE.as_bytes(), 0o644);
    c.write_file("/etc/sysusers.d/blt-pre.conf", sysusers.as_bytes(), 0o644);
    c.exec_ok(&[
        "systemd-sysusers",
        UID_RANGE_PATH,
        "/etc/sysusers.d/blt-pre.conf",
    ]);
    c.exec_ok(&["rm", "/etc/sysusers.d/blt-pre.conf"]);
}

/// Runs the guide's block NAME inside, as written; returns its stdout.
fn run(c: &Container, name: &str, stdin: &[u8]) -> String {
    run_from(c, GUIDE, name, stdin)
}

/// Runs the block NAME of the page `page` inside, as written; returns its stdout.
fn run_from(c: &Container, page: &str, name: &str, stdin: &[u8]) -> String {
    run_text(c, page, name, &guide::block(page, name), stdin)
}

/// Runs `block`, the block NAME of `page` with its documented placeholders filled in.
fn run_text(c: &Container, page: &str, name: &str, block: &str, stdin: &[u8]) -> String {
    let t = Instant::now();
    let out = c.exec_stdin(&["bash", "-euo", "pipefail", "-c", block], stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{page}: block {name} failed ({}):\n{block}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{page}: block {name}: {:.1} s", t.elapsed().as_secs_f64());
    if std::env::var("BLT_DEBUG_BLOCKS").is_ok() {
        eprintln!(
            "--- stdout\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// Through the web server, as a browser: the front page, every stylesheet it names, the
/// login of the guide's administrator (CSRF token, Referer over HTTPS), the page as the
/// logged-in user. Prints one line per fact.
const BROWSE: &str = r#"
U=https://polls.example.org
jar=/root/blt-jar
rm -f "$jar"
c() { curl -sS --resolve polls.example.org:443:127.0.0.1 --cacert /etc/ssl/certs/polls.example.org.pem -b "$jar" -c "$jar" "$@"; }
c -o /tmp/page.html -w 'page %{http_code}\n' "$U/"
grep -o '/static/[^"]*\.css' /tmp/page.html | sort -u > /tmp/css
[ -s /tmp/css ] || { echo 'no stylesheet in the page'; exit 1; }
while read -r css; do
    c -o /dev/null -w "css %{http_code} %{content_type} $css\n" "$U$css"
done < /tmp/css
token=$(c "$U/login/" | sed -n 's/.*name="csrfmiddlewaretoken" value="\([^"]*\)".*/\1/p' | head -n1)
[ -n "$token" ] || { echo 'no CSRF token on the login page'; exit 1; }
c -o /dev/null -w 'login %{http_code} %{redirect_url}\n' -e "$U/login/" \
    --data-urlencode "csrfmiddlewaretoken=$token" --data-urlencode username=admin \
    --data-urlencode "password=$1" "$U/login/"
echo "session $(grep -c sessionid "$jar")"
echo "logged-in $(c "$U/" | grep -c 'href="/logout/"')"
c -o /dev/null -w 'http %{http_code} %{redirect_url}\n' --resolve polls.example.org:80:127.0.0.1 http://polls.example.org/
"#;

fn browse(c: &Container, front: &str) {
    let out = c.exec(&["bash", "-euo", "pipefail", "-c", BROWSE, "browse", PASSWORD]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!(
        "{front}:\n{text}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{ctx}");
    assert!(text.lines().any(|l| l == "page 200"), "{ctx}");
    let css: Vec<&str> = text.lines().filter(|l| l.starts_with("css ")).collect();
    assert!(!css.is_empty(), "{ctx}");
    for l in &css {
        assert!(l.starts_with("css 200 text/css"), "{l}\n{ctx}");
    }
    assert!(
        text.lines()
            .any(|l| l == "login 302 https://polls.example.org/"),
        "{ctx}"
    );
    assert!(text.lines().any(|l| l == "session 1"), "{ctx}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("logged-in ") && l != "logged-in 0"),
        "{ctx}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("http 30") && l.ends_with("https://polls.example.org/")),
        "{ctx}"
    );
    eprintln!(
        "{front}: page, {} stylesheet(s) and a login over HTTPS",
        css.len()
    );
}

/// Whether the session saved by the last [`browse`] is still logged in.
fn still_logged_in(c: &Container) -> bool {
    let out = c.exec(&[
        "bash",
        "-c",
        "curl -sS --resolve polls.example.org:443:127.0.0.1 --cacert /etc/ssl/certs/polls.example.org.pem \
         -b /root/blt-jar https://polls.example.org/ | grep -c 'href=\"/logout/\"' || true",
    ]);
    String::from_utf8_lossy(&out.stdout).trim() != "0"
}

/// `manage -- shell -c CODE` inside, as root; its stdout.
fn shell(c: &Container, code: &str) -> String {
    let out = c.exec_ok(&[
        LAUNCHER_PATH,
        "manage",
        "--config",
        CONFIG,
        "--",
        "shell",
        "-c",
        code,
    ]);
    // Django 5.2's shell first says how many objects it imported.
    out.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string()
}

const USERS: &str = "from bitpoll.base.models import BitpollUser; print(sorted(u.username for u in BitpollUser.objects.all()))";
const CALENDAR_URL: &str = "https://calendar.example.org/dav/admin/private-token-5d1e";
const CALENDARS: &str = "from bitpoll.caldav.models import DavCalendar; print([c.url for c in DavCalendar.objects.all()])";

fn day_two_sqlite(c: &Container) {
    const KEYS: &str = "docs/guides/keys.md";

    // Backup, a change after it, restore: the change is gone, the login works.
    run_from(c, BACKUP, "backup-sqlite", b"");
    c.exec_ok(&[
        "env",
        "DJANGO_SUPERUSER_USERNAME=after-backup",
        "DJANGO_SUPERUSER_EMAIL=later@example.org",
        "DJANGO_SUPERUSER_PASSWORD=another-password-1f3b",
        LAUNCHER_PATH,
        "manage",
        "--config",
        CONFIG,
        "--",
        "createsuperuser",
        "--noinput",
    ]);
    assert_eq!(shell(c, USERS).trim(), "['admin', 'after-backup']");
    run_from(c, BACKUP, "restore-sqlite", b"");
    assert_eq!(shell(c, USERS).trim(), "['admin']");
    browse(c, "caddy, after the restore");

    // The online backup, while the service runs: a complete copy, and nothing of root's
    // left in the data directory (the launcher would refuse it).
    run_from(c, BACKUP, "backup-sqlite-online", b"");
    let copied = c.exec_ok(&[
        "bash",
        "-c",
        "python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT username FROM base_bitpolluser\").fetchall())' \
         $(ls -t /var/backups/bitpoll/db-*.sqlite3 | head -n1)",
    ]);
    assert_eq!(copied.trim(), "[('admin',)]");
    assert_eq!(
        c.exec_ok(&["find", "/var/lib/bitpoll", "-user", "root"])
            .trim(),
        ""
    );
    c.exec_ok(&["systemctl", "restart", "bitpoll"]);
    assert_active(c, "after the online backup");

    // A stored calendar address, encrypted with the generated field encryption key.
    shell(
        c,
        &format!(
            "from bitpoll.caldav.models import DavCalendar; from bitpoll.base.models import BitpollUser; \
             DavCalendar.objects.create(user=BitpollUser.objects.get(username='admin'), url='{CALENDAR_URL}', name='private')"
        ),
    );

    // Generated keys become files, with the same values: nobody is logged out.
    let generated = c.exec_ok(&[
        "cat",
        "/var/lib/bitpoll/secrets/BITPOLL_FIELD_ENCRYPTION_KEY",
    ]);
    run_from(c, KEYS, "keys-to-files", b"");
    assert_eq!(
        c.exec_ok(&["cat", "/etc/bitpoll/keys/field-encryption-key"]),
        generated
    );
    assert!(still_logged_in(c), "logged out by keys-to-files");

    // The field encryption key rotated: the address is encrypted with the new key alone.
    run_from(c, KEYS, "rotate-field-key", b"");
    let now = c.exec_ok(&["cat", "/etc/bitpoll/keys/field-encryption-key"]);
    assert!(
        !now.contains(',') && now != generated,
        "the new key alone: {now:?}"
    );
    assert_eq!(shell(c, CALENDARS).trim(), format!("['{CALENDAR_URL}']"));

    // The secret key rotated with a fallback: the session lives on; without it, it ends.
    run_from(c, KEYS, "rotate-secret-key", b"");
    assert!(
        still_logged_in(c),
        "logged out although the old key is a fallback"
    );
    run_from(c, KEYS, "drop-secret-key-fallback", b"");
    assert!(!still_logged_in(c), "still logged in with the dropped key");
    browse(c, "caddy, after both keys were rotated");
    assert_eq!(shell(c, CALENDARS).trim(), format!("['{CALENDAR_URL}']"));
}

fn uninstall(c: &Container) {
    const UNINSTALL: &str = "docs/guides/uninstall.md";

    // Uninstall: the unit goes, the data and the account stay; then they go too.
    run_from(c, UNINSTALL, "uninstall", b"");
    assert!(
        !c.exec(&["systemctl", "cat", "bitpoll.service"])
            .status
            .success()
    );
    for gone in [
        "/etc/systemd/system/bitpoll.service",
        "/etc/sysusers.d/bitpoll.conf",
        "/etc/tmpfiles.d/bitpoll.conf",
    ] {
        assert!(
            !c.exec(&["test", "-e", gone]).status.success(),
            "{gone} remains"
        );
    }
    c.exec_ok(&["test", "-f", "/var/lib/bitpoll/db.sqlite3"]);
    c.exec_ok(&["id", "bitpoll"]);
    run_from(c, UNINSTALL, "remove-data", b"");
    assert!(!c.exec(&["id", "bitpoll"]).status.success());
    assert!(!c.exec(&["test", "-e", "/var/lib/bitpoll"]).status.success());
    assert!(!c.exec(&["test", "-e", "/etc/bitpoll"]).status.success());

    // With PostgreSQL: its database and role.
    run_from(c, UNINSTALL, "remove-postgresql-database", b"");
    assert_eq!(
        psql(
            c,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'bitpoll'"
        ),
        "0"
    );
    assert_eq!(
        psql(
            c,
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'bitpoll'"
        ),
        "0"
    );
}

#[test]
fn the_debian_guide_serves_a_styled_bitpoll_behind_nginx_and_caddy_and_its_day_two_pages_run() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    let Some(opt) = opt_bitpoll() else {
        return;
    };
    let _machine = util::lock_machine();

    // What the blocks not run here say.
    let launcher = guide::block(GUIDE, "launcher");
    assert!(
        launcher.contains("cargo build --release --locked")
            && launcher.contains(
                "install -m 0755 target/release/bitpoll-launcher /usr/local/bin/bitpoll-launcher"
            )
            && launcher.contains(CHECKOUT_IN),
        "{launcher}"
    );
    let source = guide::block(GUIDE, "source");
    assert!(
        source.contains(COMMIT) && source.contains("/opt/bitpoll/src"),
        "{source}"
    );
    assert_eq!(LAUNCHER_PATH, "/usr/local/bin/bitpoll-launcher");

    let c = ContainerBuilder::new("guide-debian")
        .with_launcher()
        .bind_ro(&opt, "/opt/bitpoll")
        .bind_ro(CHECKOUT, CHECKOUT_IN)
        .boot();

    let packages = guide::apt_packages(&guide::block(GUIDE, "packages"));
    for pkg in packages.iter().map(String::as_str).chain(["caddy", "curl"]) {
        let out = c.exec(&["dpkg-query", "-W", "-f=${Status}", pkg]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "install ok installed",
            "the guide's package {pkg} is not installed here (.ci/run installs it)"
        );
    }

    run(&c, "config", b"");
    let example = fs::read(Path::new(CHECKOUT).join("examples/launcher.toml")).unwrap();
    assert_eq!(c.exec_ok(&["cat", CONFIG]).as_bytes(), example);

    create_account(&c);
    run(&c, "service", b"");
    assert_eq!(
        c.exec_ok(&["systemctl", "is-active", "bitpoll"]).trim(),
        "active"
    );
    run(&c, "admin", format!("{PASSWORD}\n").as_bytes());
    run(&c, "certificate", b"");

    c.exec_ok(&["systemctl", "unmask", "nginx.service"]);
    run(&c, "nginx", b"");
    browse(&c, "nginx");
    // The web server reads the static files without the service's group.
    let groups = c.exec_ok(&["id", "-nG", "www-data"]);
    assert!(
        !groups.split_whitespace().any(|g| g == "bitpoll"),
        "{groups}"
    );

    c.exec_ok(&["systemctl", "stop", "nginx.service"]);
    c.exec_ok(&["systemctl", "unmask", "caddy.service"]);
    run(&c, "caddy", b"");
    run(&c, "caddy-tls", b"");
    browse(&c, "caddy");
    let groups = c.exec_ok(&["id", "-nG", "caddy"]);
    assert!(
        !groups.split_whitespace().any(|g| g == "bitpoll"),
        "{groups}"
    );

    day_two_sqlite(&c);
    let poll = to_postgresql(&c);
    backup_postgresql(&c, &poll);
    let _second = second_host(&c, &opt, &poll);
    upgrade(&c, &poll);
    uninstall(&c);
}

// ---------------------------------------------------------------------------------------
// The PostgreSQL pages: moving to PostgreSQL, its backup and restore, a second host, an
// upgrade.

/// `psql -tA` as the server's superuser inside; its trimmed output.
fn psql(c: &Container, db: &str, sql: &str) -> String {
    c.exec_ok(&[
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-q",
        "-tA",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        db,
        "-c",
        sql,
    ])
    .trim()
    .to_string()
}

/// What the unit's last start logged (the launcher's records and its steps' output).
fn last_start(c: &Container) -> String {
    c.exec_ok(&[
        "sh",
        "-c",
        "journalctl -u bitpoll -o cat _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value bitpoll)",
    ])
}

/// The lines of a start's log that say whether and why migrate ran, and what it applied.
fn migrate_lines(start: &str) -> String {
    let lines: Vec<&str> = start
        .lines()
        .filter(|l| l.starts_with("step migrate") || l.trim_start().starts_with("Applying "))
        .collect();
    let applied = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("Applying "))
        .count();
    let decisions: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("step migrate"))
        .collect();
    format!("{} ({applied} applied)", decisions.join("; "))
}

fn assert_active(c: &Container, when: &str) {
    let out = c.exec(&["systemctl", "is-active", "bitpoll"]);
    assert!(
        out.status.success(),
        "bitpoll is not active {when}:\n{}",
        c.diagnose("bitpoll.service")
    );
}

/// Through the web server, as a visitor who is not logged in: a universal poll `slug`
/// with two choices is created through Bitpoll's forms, and `voter` votes on it, every
/// POST with the CSRF token of its form.
const POLL: &str = r#"
U=https://polls.example.org
jar=/root/blt-poll-jar slug=$1 voter=$2
rm -f "$jar"
c() { curl -sS --resolve polls.example.org:443:127.0.0.1 --cacert /etc/ssl/certs/polls.example.org.pem -b "$jar" -c "$jar" "$@"; }
token() { sed -n 's/.*name="csrfmiddlewaretoken" value="\([^"]*\)".*/\1/p' | head -n1; }
t=$(c "$U/" | token)
[ -n "$t" ] || { echo 'no CSRF token on /'; exit 1; }
c -o /dev/null -w 'create %{http_code} %{redirect_url}\n' -e "$U/" --data-urlencode "csrfmiddlewaretoken=$t" \
    -d type=universal -d title=Betriebsausflug --data-urlencode "url=$slug" -d description=Wohin \
    -d due_date= -d anonymous_allowed=on -d one_vote_per_user=on \
    -d allow_unauthenticated_vote_changes=on "$U/"
choices="$U/poll/$slug/edit/choices/universal/"
t=$(c "$choices" | token)
c -o /dev/null -w 'choices %{http_code} %{redirect_url}\n' -e "$choices" --data-urlencode "csrfmiddlewaretoken=$t" \
    -d choice_text=Berge -d choice_sort_key=1 -d choice_text=See -d choice_sort_key=2 -d next= "$choices"
vote="$U/poll/$slug/vote/"
c -o /tmp/vote.html "$vote"
t=$(token < /tmp/vote.html)
# One radio group per choice, named by the choice's id; the first value is "yes".
args=()
while read -r name value; do
    args+=(-d "$name=$value")
done < <(grep -o '<input type="radio"[^>]*' /tmp/vote.html |
    sed -n 's/.* value="\([^"]*\)" name="\([^"]*\)".*/\2 \1/p' | awk '!seen[$1]++')
echo "choices voted $(( ${#args[@]} / 2 ))"
c -o /dev/null -w 'vote %{http_code} %{redirect_url}\n' -e "$vote" --data-urlencode "csrfmiddlewaretoken=$t" \
    --data-urlencode "name=$voter" -d comment= -d submit=Vote "${args[@]}" "$vote"
"#;

/// A poll with a vote, made through the web forms.
struct Poll {
    slug: &'static str,
    voter: &'static str,
}

fn create_poll_and_vote(c: &Container, slug: &'static str, voter: &'static str) -> Poll {
    let out = c.exec(&["bash", "-euo", "pipefail", "-c", POLL, "poll", slug, voter]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!(
        "poll {slug}:\n{text}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{ctx}");
    let base = "https://polls.example.org/poll";
    for want in [
        format!("create 302 {base}/{slug}/edit/choices/universal/"),
        format!("choices 302 {base}/{slug}/"),
        "choices voted 2".to_string(),
        format!("vote 302 {base}/{slug}/"),
    ] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in {ctx}");
    }
    let poll = Poll { slug, voter };
    assert!(poll_shown(c, &poll), "the new poll does not show its vote");
    poll
}

/// Whether the poll's page, fetched without cookies through the web server, shows the
/// vote and both choices.
fn poll_shown(c: &Container, poll: &Poll) -> bool {
    let out = c.exec(&[
        "curl",
        "-sS",
        "--resolve",
        "polls.example.org:443:127.0.0.1",
        "--cacert",
        "/etc/ssl/certs/polls.example.org.pem",
        &format!("https://polls.example.org/poll/{}/", poll.slug),
    ]);
    let page = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && page.contains(poll.voter)
        && page.contains("Berge")
        && page.contains("See")
}

fn votes_in_postgresql(c: &Container, poll: &Poll) -> String {
    psql(
        c,
        "bitpoll",
        &format!(
            "SELECT count(*) FROM poll_vote v JOIN poll_poll p ON v.poll_id = p.id \
             WHERE p.url = '{}' AND v.name = '{}'",
            poll.slug, poll.voter
        ),
    )
}

/// docs/guides/postgresql.md, Debian: from the SQLite database of the guide (with a poll
/// made here, the administrator, the calendar address) to PostgreSQL on the same host.
/// Returns the poll.
fn to_postgresql(c: &Container) -> Poll {
    let poll = create_poll_and_vote(c, "betriebsausflug", "Erika Mustermann");
    let users = shell(c, USERS);
    assert_eq!(shell(c, CALENDARS).trim(), format!("['{CALENDAR_URL}']"));

    // `postgresql-package`: not run (no network here); the package is the host's. Its
    // installation creates a cluster and starts it, which the test does in its place,
    // without a cluster the host's root may show (the host's own data is never touched:
    // the container writes into its own layer).
    let packages = guide::apt_packages(&guide::block(POSTGRESQL, "postgresql-package"));
    assert_eq!(packages, ["postgresql"]);
    let out = c.exec(&["dpkg-query", "-W", "-f=${Status}", "postgresql"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "install ok installed",
        "the package postgresql is not installed here (.ci/run installs it)"
    );
    c.exec_ok(&[
        "bash",
        "-euo",
        "pipefail",
        "-c",
        r#"
pg_lsclusters -h | while read -r version cluster _; do pg_dropcluster --stop "$version" "$cluster"; done
version=$(ls /usr/lib/postgresql | sort -n | tail -n1)
pg_createcluster "$version" main >/dev/null
systemctl unmask postgresql.service
systemctl daemon-reload
systemctl start postgresql.service "postgresql@$version-main.service"
"#,
    ]);
    run_from(c, POSTGRESQL, "postgresql-database", b"");

    // Export: the file is root's alone and holds the calendar address in clear, as the
    // page warns.
    run_from(c, POSTGRESQL, "export", b"");
    let export = "/root/bitpoll-export.json";
    assert_eq!(
        c.exec_ok(&["stat", "-c", "%U:%G %a", export]).trim(),
        "root:root 600"
    );
    let json = c.exec_ok(&["cat", export]);
    let parsed: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the export is not JSON ({e}):\n{json}"));
    assert!(parsed.as_array().is_some_and(|a| a.len() > 5), "{json}");
    assert!(json.contains(CALENDAR_URL), "{json}");
    assert!(json.contains(poll.voter), "{json}");
    eprintln!(
        "export: {} objects, root's 0600, the calendar address in clear",
        parsed.as_array().map_or(0, Vec::len)
    );

    run_from(c, POSTGRESQL, "switch", b"");
    run_from(c, POSTGRESQL, "import", b"");
    assert!(
        !c.exec(&["test", "-e", export]).status.success(),
        "the export remains"
    );
    assert_active(c, "on PostgreSQL");
    let start = last_start(c);
    assert!(
        start.contains("Applying poll.0020_alter_poll_allow_unauthenticated_vote_changes... OK"),
        "the start did not migrate the empty database:\n{start}"
    );
    eprintln!("the first start on PostgreSQL: {}", migrate_lines(&start));

    // Everything is back, read through the app; the address is stored encrypted.
    assert_eq!(votes_in_postgresql(c, &poll), "1");
    assert!(poll_shown(c, &poll), "the poll lost its vote in the move");
    assert_eq!(shell(c, USERS), users);
    assert_eq!(shell(c, CALENDARS).trim(), format!("['{CALENDAR_URL}']"));
    let stored = psql(c, "bitpoll", "SELECT url FROM caldav_davcalendar");
    assert!(
        !stored.is_empty() && !stored.contains("calendar.example.org"),
        "the address is not encrypted in PostgreSQL: {stored}"
    );
    // Sessions were not moved: the login of before is gone, a new one works, and so does
    // a new poll (the import set PostgreSQL's sequences past the imported rows).
    assert!(!still_logged_in(c), "a session survived the move");
    browse(c, "caddy, on PostgreSQL");
    create_poll_and_vote(c, "nach-dem-umzug", "Max Mustermann");
    poll
}

/// docs/guides/backup.md, PostgreSQL: what was there at the backup is back after the
/// restore, what came after is gone.
fn backup_postgresql(c: &Container, poll: &Poll) {
    // An upload (Bitpoll's media directory, written as the service would).
    let upload = "/var/lib/bitpoll/media/blt-upload.txt";
    c.exec_ok(&[
        "runuser",
        "-u",
        "bitpoll",
        "--",
        "sh",
        "-c",
        &format!("echo uploaded > {upload}"),
    ]);
    run_from(c, BACKUP, "backup-postgresql", b"");
    let listing = c.exec_ok(&["ls", "/var/backups/bitpoll"]);
    for prefix in ["db-", "files-", "etc-"] {
        assert!(
            listing.lines().any(|l| l.starts_with(prefix)),
            "no {prefix}* in /var/backups/bitpoll:\n{listing}"
        );
    }

    // After the backup: another account, another poll, the upload removed.
    c.exec_ok(&[
        "env",
        "DJANGO_SUPERUSER_USERNAME=after-pg-backup",
        "DJANGO_SUPERUSER_EMAIL=later@example.org",
        "DJANGO_SUPERUSER_PASSWORD=another-password-8e2a",
        LAUNCHER_PATH,
        "manage",
        "--config",
        CONFIG,
        "--",
        "createsuperuser",
        "--noinput",
    ]);
    let later = create_poll_and_vote(c, "nach-der-sicherung", "Hans Meier");
    c.exec_ok(&["rm", upload]);
    assert_eq!(shell(c, USERS).trim(), "['admin', 'after-pg-backup']");

    run_from(c, BACKUP, "restore-postgresql", b"");
    assert_active(c, "after the PostgreSQL restore");
    eprintln!(
        "the start after the restore: {}",
        migrate_lines(&last_start(c))
    );
    assert_eq!(shell(c, USERS).trim(), "['admin']");
    assert!(poll_shown(c, poll), "the poll of before the backup is gone");
    assert!(
        !poll_shown(c, &later),
        "the poll made after the backup is back"
    );
    assert_eq!(votes_in_postgresql(c, &later), "0");
    assert_eq!(
        c.exec_ok(&["stat", "-c", "%U:%G", upload]).trim(),
        "bitpoll:bitpoll"
    );
    assert_eq!(c.exec_ok(&["cat", upload]).trim(), "uploaded");
    assert_eq!(shell(c, CALENDARS).trim(), format!("['{CALENDAR_URL}']"));
    browse(c, "caddy, after the PostgreSQL restore");
}

/// A link between two containers, as between two hosts: a veth pair, `lan0` in each, with
/// the addresses docs/guides/second-host.md uses. It goes with the containers' network
/// namespaces.
fn link(first: &Container, second: &Container) {
    let ip = |c: &Container, args: &[&str]| {
        let out = Command::new("nsenter")
            .args(["-t", &c.pid1().to_string(), "-n", "ip"])
            .args(args)
            .output()
            .expect("run nsenter ip");
        assert!(
            out.status.success(),
            "ip {args:?} in {}: {}",
            c.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let second_ns = second.pid1().to_string();
    ip(
        first,
        &[
            "link", "add", "lan0", "type", "veth", "peer", "name", "lan0", "netns", &second_ns,
        ],
    );
    for (c, addr) in [(first, "192.0.2.1/24"), (second, "192.0.2.2/24")] {
        ip(c, &["addr", "add", addr, "dev", "lan0"]);
        ip(c, &["link", "set", "lan0", "up"]);
    }
}

/// `bitpoll-launcher check` inside: it must not warn about a generated key.
fn assert_no_generated_key_warning(c: &Container, host: &str) {
    let out = c.exec(&[LAUNCHER_PATH, "check", "--config", CONFIG]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "check on the {host} host failed:\n{text}"
    );
    assert!(
        !text.contains("generated and kept by this instance alone"),
        "check on the {host} host warns about a generated key:\n{text}"
    );
}

/// Creates a poll on `c` with the CSRF token `token` and the cookie jar /root/blt-jar;
/// prints the status and the redirect.
const CROSS_POST: &str = r#"
curl -sS --resolve polls.example.org:443:127.0.0.1 --cacert /etc/ssl/certs/polls.example.org.pem \
    -b /root/blt-jar -c /root/blt-jar -o /dev/null -w '%{http_code} %{redirect_url}\n' \
    -e https://polls.example.org/ --data-urlencode "csrfmiddlewaretoken=$1" -d type=universal \
    -d title=Zweiter --data-urlencode "url=$2" -d description= -d due_date= https://polls.example.org/
"#;

const SECOND_CALENDAR_URL: &str = "https://calendar.example.org/dav/admin/second-host-77b0";

/// docs/guides/second-host.md: a second host (a second container, linked to the first)
/// installed with the Debian guide and the first host's configuration and keys, on the
/// first host's PostgreSQL over TLS. Returns it, its service stopped: the link to it goes
/// with it, so it stays until the end.
fn second_host(first: &Container, opt: &Path, poll: &Poll) -> Container {
    let second = ContainerBuilder::new("guide-debian-second")
        .with_launcher()
        .bind_ro(opt, "/opt/bitpoll")
        .bind_ro(CHECKOUT, CHECKOUT_IN)
        .boot();
    link(first, &second);

    run_from(first, SECOND_HOST, "database-over-network", b"");
    run_from(first, SECOND_HOST, "config-over-network", b"");
    assert_active(first, "connected over the network");
    let config = first.exec_ok(&["cat", CONFIG]);
    assert!(
        config.contains("host = \"192.0.2.1\"")
            && config.contains("sslmode = \"verify-full\"")
            && config
                .contains("BITPOLL_DB_PASSWORD = { file = \"/etc/bitpoll/keys/db-password\" }"),
        "{config}"
    );
    // From 192.0.2.1 only the page's `hostssl` rule lets it in: the page served from the
    // database proves the app's TLS connection, with the password, to a verified server.
    assert!(poll_shown(first, poll), "the first host lost its data");

    // `copy-config`: no SSH server here; the same copy (root's, modes kept) with tar.
    let copy = guide::block(SECOND_HOST, "copy-config");
    assert_eq!(copy.trim(), "scp -rp /etc/bitpoll root@192.0.2.2:/etc/");
    let tarball = first.exec(&["tar", "-C", "/etc", "-cf", "-", "bitpoll"]);
    assert!(tarball.status.success());
    let out = second.exec_stdin(&["tar", "-C", "/etc", "-xpf", "-"], &tarball.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        second
            .exec_ok(&[
                "stat",
                "-c",
                "%U %a",
                "/etc/bitpoll/keys",
                "/etc/bitpoll/keys/db-password"
            ])
            .trim(),
        "root 700\nroot 600"
    );

    // The Debian guide on the second host: steps 5, 7 and 8.
    let migrations = psql(first, "bitpoll", "SELECT count(*) FROM django_migrations");
    create_account(&second);
    run(&second, "service", b"");
    assert_active(&second, "on the second host");
    let start = last_start(&second);
    assert!(
        !start.contains("Applying "),
        "the second host migrated:\n{start}"
    );
    eprintln!("the second host's first start: {}", migrate_lines(&start));
    assert_eq!(
        psql(first, "bitpoll", "SELECT count(*) FROM django_migrations"),
        migrations
    );
    run(&second, "certificate", b"");
    second.exec_ok(&["systemctl", "unmask", "caddy.service"]);
    run(&second, "caddy", b"");
    run(&second, "caddy-tls", b"");
    for (c, host) in [(first, "first"), (&second, "second")] {
        assert_no_generated_key_warning(c, host);
    }

    // A session and a CSRF token the first host made are good on the second.
    browse(first, "the first host");
    let token = first.exec_ok(&[
        "bash",
        "-c",
        "curl -sS --resolve polls.example.org:443:127.0.0.1 --cacert /etc/ssl/certs/polls.example.org.pem \
         -b /root/blt-jar -c /root/blt-jar https://polls.example.org/ \
         | sed -n 's/.*name=\"csrfmiddlewaretoken\" value=\"\\([^\"]*\\)\".*/\\1/p' | head -n1",
    ]);
    let token = token.trim();
    assert!(!token.is_empty(), "no CSRF token from the first host");
    let jar = first.exec_ok(&["cat", "/root/blt-jar"]);
    second.write_file("/root/blt-jar", jar.as_bytes(), 0o600);
    assert!(
        still_logged_in(&second),
        "the second host does not accept the first host's session"
    );
    let post = |token: &str, slug: &str| {
        second
            .exec_ok(&[
                "bash", "-euo", "pipefail", "-c", CROSS_POST, "post", token, slug,
            ])
            .trim()
            .to_string()
    };
    // The control: a token neither host made is refused.
    let refused = post("not-a-token", "zweiter-host-ohne");
    assert!(
        refused.split_whitespace().next() == Some("403"),
        "a POST with a bad token passed: {refused}"
    );
    assert_eq!(
        post(token, "zweiter-host"),
        "302 https://polls.example.org/poll/zweiter-host/edit/choices/universal/"
    );
    assert_eq!(
        psql(
            first,
            "bitpoll",
            "SELECT count(*) FROM poll_poll WHERE url = 'zweiter-host'"
        ),
        "1"
    );
    browse(&second, "the second host");

    // What one host encrypts, the other reads.
    shell(
        &second,
        &format!(
            "from bitpoll.caldav.models import DavCalendar; from bitpoll.base.models import BitpollUser; \
             DavCalendar.objects.create(user=BitpollUser.objects.get(username='admin'), url='{SECOND_CALENDAR_URL}', name='second')"
        ),
    );
    let both = format!("['{CALENDAR_URL}', '{SECOND_CALENDAR_URL}']");
    assert_eq!(shell(first, CALENDARS_BY_ID).trim(), both);
    assert_eq!(shell(&second, CALENDARS_BY_ID).trim(), both);

    second.exec_ok(&["systemctl", "stop", "bitpoll"]);
    second
}

const CALENDARS_BY_ID: &str = "from bitpoll.caldav.models import DavCalendar; print([c.url for c in DavCalendar.objects.order_by('id')])";

/// The new version the upgrade moves to: the pinned tree and this migration.
const MIGRATION_PATH: &str = "bitpoll/poll/migrations/0021_upgrade_check.py";
const MIGRATION: &str = r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("poll", "0020_alter_poll_allow_unauthenticated_vote_changes")]

    operations = [
        migrations.RunSQL(
            "CREATE TABLE poll_upgradecheck (id integer)", "DROP TABLE poll_upgradecheck"
        )
    ]
"#;

/// docs/guides/upgrade.md, Debian: the block `upgrade-debian` as written, `COMMIT` a commit
/// that adds a migration to the pinned tree. The guide's /opt/bitpoll is read-only here
/// (the cache of the `venv` and `assets` blocks) and its source a snapshot, not a clone:
/// the test puts a writable layer over /opt/bitpoll (an overlay, in the container only),
/// makes the source a git checkout of the snapshot's tree whose `origin` is a repository
/// in the container, and commits the new version there.
fn upgrade(c: &Container, poll: &Poll) {
    let setup = format!(
        r#"
mkdir /run/blt-upgrade
mount -t tmpfs -o mode=0700 blt-upgrade /run/blt-upgrade
mkdir /run/blt-upgrade/upper /run/blt-upgrade/work
opts=lowerdir=/opt/bitpoll,upperdir=/run/blt-upgrade/upper,workdir=/run/blt-upgrade/work
# metacopy: the block's chown copies no file's data up.
mount -t overlay blt-upgrade -o "$opts,metacopy=on" /opt/bitpoll 2>/dev/null ||
    mount -t overlay blt-upgrade -o "$opts" /opt/bitpoll
export GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@example.org
export GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@example.org
git -C /opt/bitpoll/src init -q
git -C /opt/bitpoll/src add -A
git -C /opt/bitpoll/src commit -q -m 'Bitpoll {COMMIT} (from the snapshot)'
git clone -q --bare /opt/bitpoll/src /srv/bitpoll.git
git -C /opt/bitpoll/src remote add origin /srv/bitpoll.git
git clone -q /srv/bitpoll.git /root/bitpoll-next
cat > /root/bitpoll-next/{MIGRATION_PATH} <<'EOF'
{MIGRATION}EOF
git -C /root/bitpoll-next add {MIGRATION_PATH}
git -C /root/bitpoll-next commit -q -m 'A new migration'
git -C /root/bitpoll-next push -q origin HEAD
git -C /root/bitpoll-next rev-parse HEAD
"#
    );
    let commit = c.exec_ok(&["bash", "-euo", "pipefail", "-c", &setup]);
    let commit = commit.trim();
    assert_eq!(commit.len(), 40, "{commit}");

    let page = fs::read_to_string(Path::new(CHECKOUT).join(UPGRADE)).unwrap();
    let words = page.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("`COMMIT` is the commit to move to"),
        "{UPGRADE} does not say what COMMIT stands for"
    );
    let block = guide::block(UPGRADE, "upgrade-debian");
    assert_eq!(block.matches("COMMIT").count(), 1, "{block}");
    let block = block.replace("COMMIT", commit);
    run_text(c, UPGRADE, "upgrade-debian", &block, b"");

    assert_active(c, "after the upgrade");
    assert_eq!(
        c.exec_ok(&["git", "-C", "/opt/bitpoll/src", "rev-parse", "HEAD"])
            .trim(),
        commit
    );
    let start = last_start(c);
    assert_eq!(
        start
            .matches("Applying poll.0021_upgrade_check... OK")
            .count(),
        1,
        "the start after the upgrade:\n{start}"
    );
    eprintln!("the start after the upgrade: {}", migrate_lines(&start));
    assert_eq!(
        psql(
            c,
            "bitpoll",
            "SELECT count(*) FROM django_migrations WHERE app = 'poll' AND name = '0021_upgrade_check'"
        ),
        "1"
    );
    assert_eq!(
        psql(
            c,
            "bitpoll",
            "SELECT to_regclass('poll_upgradecheck') IS NOT NULL"
        ),
        "t"
    );
    // The data stays; the new static files are served.
    assert!(poll_shown(c, poll), "the upgrade lost the poll");
    assert_eq!(shell(c, USERS).trim(), "['admin']");
    assert_eq!(
        shell(c, CALENDARS_BY_ID).trim(),
        format!("['{CALENDAR_URL}', '{SECOND_CALENDAR_URL}']")
    );
    browse(c, "caddy, after the upgrade");

    // The next start finds nothing to do.
    c.exec_ok(&["systemctl", "restart", "bitpoll"]);
    let start = last_start(c);
    assert!(
        start.contains("step migrate skipped") && !start.contains("Applying "),
        "the start after the one that migrated:\n{start}"
    );
    eprintln!("the next start: {}", migrate_lines(&start));
}
