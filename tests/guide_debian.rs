//! docs/guides/debian.md, run as written on a Debian 12 booted with systemd (the harness of
//! tests/container: the host's root as the lower layer of an overlay), with nginx and then
//! Caddy from Debian in front, TLS with the guide's self-signed certificate: the page loads
//! with every stylesheet it names, and the administrator of the guide logs in through
//! HTTPS (CSRF and the origin check included). Then the day-2 pages that fit a Debian host
//! run as written in the same container: backup and restore, keys from generated to files,
//! rotating both keys, uninstall.
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
//!   unmasks them, and stops nginx before Caddy takes ports 80 and 443.
//!
//! Needs root, systemd-nspawn, nginx, caddy, curl and the snapshot; without the snapshot
//! the test returns after one line (a failure with CI=true).
//!
//!     cargo test --test guide_debian -- --test-threads=1

mod container;
mod guide;
mod util;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use container::{Container, ContainerBuilder, LAUNCHER_PATH};
use util::upstream;

const GUIDE: &str = "docs/guides/debian.md";
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
        let why = format!("the snapshot {} is absent", tarball.display());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}, and CI=true forbids skipping the Debian guide");
        }
        let _ = writeln!(std::io::stderr(), "SKIP the Debian guide: {why}");
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

/// Runs the guide's block NAME inside, as written; returns its stdout.
fn run(c: &Container, name: &str, stdin: &[u8]) -> String {
    run_from(c, GUIDE, name, stdin)
}

/// Runs the block NAME of the page `page` inside, as written; returns its stdout.
fn run_from(c: &Container, page: &str, name: &str, stdin: &[u8]) -> String {
    let block = guide::block(page, name);
    let t = Instant::now();
    let out = c.exec_stdin(&["bash", "-euo", "pipefail", "-c", &block], stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{page}: block {name} failed ({}):\n{block}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{page}: block {name}: {:.1} s", t.elapsed().as_secs_f64());
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

fn day_two(c: &Container) {
    const BACKUP: &str = "docs/guides/backup.md";
    const KEYS: &str = "docs/guides/keys.md";
    const UNINSTALL: &str = "docs/guides/uninstall.md";

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
}

#[test]
fn the_debian_guide_serves_a_styled_bitpoll_behind_nginx_and_caddy_and_its_day_two_pages_run() {
    if !container::require_root_and_nspawn() {
        return;
    }
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

    // The account in a uid range of the container's own (see the module's doc).
    let sysusers = c.exec_ok(&[LAUNCHER_PATH, "sysusers", "--config", CONFIG]);
    c.write_file(UID_RANGE_PATH, UID_RANGE.as_bytes(), 0o644);
    c.write_file("/etc/sysusers.d/blt-pre.conf", sysusers.as_bytes(), 0o644);
    c.exec_ok(&[
        "systemd-sysusers",
        UID_RANGE_PATH,
        "/etc/sysusers.d/blt-pre.conf",
    ]);
    c.exec_ok(&["rm", "/etc/sysusers.d/blt-pre.conf"]);

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

    day_two(&c);
}
