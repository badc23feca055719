//! The launcher with the real Bitpoll: upstream's source at the pinned commit (60
//! migrations, django-pipeline with libsass, LDAP and CalDAV dependencies, encrypted
//! fields), installed root-owned and read-only with its pinned requirements by
//! tests/setup-bitpoll.sh (cached across runs under /opt/bitpoll-launcher-upstream).
//!
//! - SQLite, cold and warm: `check` with 0 errors before and while running, every step
//!   run then skipped, German pages from the catalogs the launcher compiled into the data
//!   directory, the stylesheets and scripts the page names served from the tree
//!   collectstatic produced, a poll created and voted through Bitpoll's forms with CSRF,
//!   `manage createsuperuser --noinput` and a login with it, the vote kept by a restart.
//! - PostgreSQL (a throw-away server of the test's own): the same start, vote and restart.
//! - The build-time assets (nixos/pkgs/bitpoll/build-assets.sh, the Nix package's step):
//!   a start with them runs migrate only and serves their CSS and German text; the script
//!   fails naming what is wrong.
//! - Under a booted systemd, as the hardened unit `bitpoll-launcher unit` prints.
//!
//! Static files: gunicorn does not serve /static/ (a web server does, from the data
//! directory or the built tree). The tests run a tiny one, Python's http.server, as
//! `nobody` in the service group (as nginx in that group would), rooted at a directory
//! whose `static` link points at the tree, fetch every `/static/` URL the page names
//! through it, and compare the bytes with the file on disk, whose name staticfiles.json
//! lists.
//!
//! Without ../shared/upstream (BITPOLL_UPSTREAM_DIR names another folder) every test
//! returns after one line saying so; with CI=true that is a failure. Run as root:
//!
//!     cargo test --test suite real_bitpoll:: -- --test-threads=1

use crate::container;
use crate::util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use container::bitpoll::{self as unit, CONFIG_PATH, Spec};
use container::{JsonRecord, LAUNCHER_PATH};
use util::cli::{self, Output, Run, run_launcher};
use util::http::{self, Session};
use util::postgres::PgServer;
use util::upstream::{self, BUILD_ASSETS, Upstream};
use util::{TestEnv, fernet_key, file_secret, free_port, sha256_hex, write_file};

/// Time from launch to READY=1 (a cold start of the real app takes about 3 s here).
const READY: Duration = Duration::from_secs(120);
const STEPS: [&str; 3] = ["migrate", "collectstatic", "compilemessages"];
/// German, the app's default language: the navigation's "Create poll".
const GERMAN: &str = "Umfrage erstellen";
/// Rows of django_migrations after a migrate from scratch: the 60 migrations on disk plus
/// the three caldav migrations that the squashed caldav.0001_initial_new replaces (Django
/// records the replaced ones, then the squash).
const APPLIED_ROWS: usize = 63;
/// The success message after a vote, in German.
const VOTE_RECORDED: &str = "Stimme wurde abgegeben";

/// The real Bitpoll and a test world running it in place, or None (the tests return).
fn real_env(name: &str) -> Option<(Upstream, TestEnv)> {
    let up = upstream::install()?;
    let env = TestEnv::with_app(name, &up.source(), &up.venv());
    Some((up, env))
}

/// `check --config` as root: its output, asserting it found no error.
fn check_no_errors(env: &TestEnv, when: &str) -> Output {
    cli::sync_config(env);
    let out = run_launcher(
        env,
        &Run::new(&["check", "--config", &cli::config_arg(env)]),
    );
    let summary = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(" error(s), "))
        .unwrap_or_else(|| panic!("check {when}: no summary line\n{}", out.context()));
    assert!(
        summary.starts_with("0 error(s), ") && out.code != 2,
        "check {when}: {summary}\n{}",
        out.context()
    );
    eprintln!("check {when}: {summary} ({} ms)", out.elapsed.as_millis());
    out
}

/// The stderr lines of the launcher's own records (not the app's or gunicorn's).
fn launcher_lines(env: &TestEnv) -> Vec<String> {
    env.stderr()
        .lines()
        .filter(|l| l.contains(" phase=\""))
        .map(str::to_string)
        .collect()
}

/// The app's and gunicorn's output of the current launch (every line that is not the
/// launcher's own record) holds no traceback and no error; the rest of it, but gunicorn's
/// routine [INFO] lines, is printed, and so is the preparation's stderr.
fn assert_app_quiet(env: &TestEnv) {
    let stderr = env.stderr();
    let app: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains(" phase=\""))
        .collect();
    let bad: Vec<&&str> = app
        .iter()
        .filter(|l| l.contains("Traceback") || l.contains("ERROR") || l.contains("[CRITICAL]"))
        .collect();
    assert!(
        bad.is_empty(),
        "the app logged errors:\n{}",
        env.log_context()
    );
    for l in app.iter().filter(|l| !l.contains("] [INFO] ")) {
        eprintln!("app: {l}");
    }
    // What the preparation steps wrote to their stderr (warnings), as the launcher logged it.
    for l in stderr.lines().filter(|l| l.contains(" stream=\"stderr\"")) {
        eprintln!("preparation stderr: {l}");
    }
}

/// Which steps ran and which were skipped in the current launch, from the launcher's
/// `step NAME runs|skipped` records.
fn steps(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for line in launcher_lines(env) {
        for step in STEPS {
            if line.contains(&format!(" step {step} runs")) && line.contains("skipped=false") {
                ran.push(step.to_string());
            }
            if line.contains(&format!(" step {step} skipped")) && line.contains("skipped=true") {
                skipped.push(step.to_string());
            }
        }
    }
    (ran, skipped)
}

/// The launch took `READY=1` within [`READY`]; prints how long.
fn wait_ready(env: &mut TestEnv, what: &str) -> Duration {
    env.wait_ready(READY);
    let took = env.elapsed();
    let launcher = launcher_lines(env)
        .into_iter()
        .find(|l| l.contains(" launcher done in "))
        .and_then(|l| {
            let rest = &l[l.find(" launcher done in ")? + 18..];
            Some(rest[..rest.find(',')?].to_string())
        })
        .unwrap_or_default();
    eprintln!(
        "{what}: READY=1 after {:.2} s (launcher done in {launcher})",
        took.as_secs_f64()
    );
    took
}

/// GET / is the German start page; returns its HTML.
fn german_home(session: &mut Session) -> String {
    let r = session.get("/");
    assert_eq!(r.status, 200, "GET /: {}", r.text());
    assert_eq!(r.header("content-language"), Some("de"), "{:?}", r.headers);
    let html = r.text();
    assert!(html.contains(GERMAN), "no German text on /:\n{html}");
    html
}

/// A web server for a static tree: Python's http.server as `nobody` with group `gid` (the
/// service group: it reads the data directory as nginx in that group would) in a
/// directory of the test whose link `static` points at `tree`. Stopped on drop.
struct StaticServer {
    child: Child,
    port: u16,
}

impl StaticServer {
    fn start(env: &TestEnv, tree: &Path, gid: u32) -> StaticServer {
        let root = env.dir.join(format!("www-{}", free_port()));
        fs::create_dir(&root).expect("create the web root");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        symlink(tree, root.join("static")).expect("link the static tree");
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody");
        let port = free_port();
        let log = fs::File::create(root.with_extension("log")).expect("create the server log");
        let child = Command::new("setpriv")
            .arg(format!("--reuid={}", nobody.uid))
            .arg(format!("--regid={gid}"))
            .args([
                "--clear-groups",
                "--",
                "/usr/bin/python3",
                "-m",
                "http.server",
            ])
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(&root)
            .arg(port.to_string())
            .env_clear()
            .env("PATH", util::PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start python3 -m http.server");
        let mut server = StaticServer { child, port };
        // Listening once a connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the static server exited ({status}): {}",
                    fs::read_to_string(root.with_extension("log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the static server does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every stylesheet and script under /static/ that `html` names is served with status 200
/// by a web server for `tree`, and is byte for byte the file collectstatic wrote there
/// under a name its staticfiles.json lists. Returns the URLs.
fn assert_assets_served(env: &TestEnv, html: &str, tree: &Path, gid: u32) -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(tree.join("staticfiles.json")).expect("read staticfiles.json"),
    )
    .expect("staticfiles.json is JSON");
    let hashed: Vec<&str> = manifest["paths"]
        .as_object()
        .expect("staticfiles.json has paths")
        .values()
        .filter_map(|v| v.as_str())
        .collect();
    let urls = http::assets(html, "/static/");
    assert!(
        urls.iter().any(|u| u.ends_with(".css")) && urls.iter().any(|u| u.ends_with(".js")),
        "the page names no stylesheet or no script under /static/: {urls:?}"
    );
    let server = StaticServer::start(env, tree, gid);
    for url in &urls {
        let rel = &url["/static/".len()..];
        assert!(
            hashed.contains(&rel),
            "{url} is not a name staticfiles.json lists"
        );
        let r = http::request(server.port, "GET", url, &[], None);
        assert_eq!(r.status, 200, "GET {url} from the static server");
        let on_disk = fs::read(tree.join(rel)).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!on_disk.is_empty(), "{url} is empty");
        assert!(
            r.body == on_disk,
            "{url}: the served bytes differ from {}",
            tree.join(rel).display()
        );
    }
    eprintln!("served from {}: {urls:?}", tree.display());
    urls
}

/// Creates a universal poll `slug` with two choices through Bitpoll's forms and votes on
/// it as `voter`: every POST carries the CSRF token of the form it answers (one without
/// is refused). Returns the poll's page after the vote.
fn create_poll_and_vote(port: u16, slug: &str, voter: &str) -> String {
    let mut s = Session::new(port);
    let home = german_home(&mut s);
    let token = http::input_value(&home, "csrfmiddlewaretoken").expect("a CSRF token on /");
    assert!(s.cookies.contains_key("csrftoken"), "{:?}", s.cookies);
    let poll_fields = [
        ("type", "universal"),
        ("title", "Betriebsausflug"),
        ("url", slug),
        ("description", "Wohin geht es?"),
        ("due_date", ""),
        ("anonymous_allowed", "on"),
        ("one_vote_per_user", "on"),
        ("allow_unauthenticated_vote_changes", "on"),
    ];
    // Without the token: Django's CSRF protection refuses it.
    let r = s.post_form("/", &poll_fields);
    assert_eq!(r.status, 403, "a POST without CSRF token: {}", r.text());

    let mut fields = vec![("csrfmiddlewaretoken", token.as_str())];
    fields.extend_from_slice(&poll_fields);
    let r = s.post_form("/", &fields);
    let choices_url = format!("/poll/{slug}/edit/choices/universal/");
    assert_eq!(r.status, 302, "create the poll: {}", r.text());
    assert_eq!(r.location_path().as_deref(), Some(choices_url.as_str()));

    let page = s.page(&choices_url);
    let token = http::input_value(&page, "csrfmiddlewaretoken").expect("CSRF token");
    let r = s.post_form(
        &choices_url,
        &[
            ("csrfmiddlewaretoken", token.as_str()),
            ("choice_text", "Berge"),
            ("choice_sort_key", "1"),
            ("choice_text", "See"),
            ("choice_sort_key", "2"),
            ("next", ""),
        ],
    );
    let poll_url = format!("/poll/{slug}/");
    assert_eq!(r.status, 302, "add the choices: {}", r.text());
    assert_eq!(r.location_path().as_deref(), Some(poll_url.as_str()));

    // The vote form: one radio group per choice, named by the choice's id, values ordered
    // by weight (the first is "yes").
    let vote_url = format!("/poll/{slug}/vote/");
    let page = s.page(&vote_url);
    let token = http::input_value(&page, "csrfmiddlewaretoken").expect("CSRF token");
    let mut first_value: BTreeMap<String, String> = BTreeMap::new();
    for input in http::tags(&page, "input") {
        if input.get("type").map(String::as_str) == Some("radio") {
            first_value
                .entry(input["name"].clone())
                .or_insert_with(|| input["value"].clone());
        }
    }
    assert_eq!(
        first_value.len(),
        2,
        "radio groups on {vote_url}: {first_value:?}"
    );
    let mut fields = vec![
        ("csrfmiddlewaretoken", token.as_str()),
        ("name", voter),
        ("comment", ""),
        ("submit", "Vote"),
    ];
    for (choice, value) in &first_value {
        fields.push((choice.as_str(), value.as_str()));
    }
    let r = s.post_form(&vote_url, &fields);
    assert_eq!(r.status, 302, "vote: {}", r.text());
    assert_eq!(r.location_path().as_deref(), Some(poll_url.as_str()));
    let page = s.page(&poll_url);
    assert!(page.contains(VOTE_RECORDED), "no success message:\n{page}");
    assert!(page.contains(voter), "the vote is not listed:\n{page}");
    page
}

/// The poll's page (in a fresh session) lists `voter`'s vote.
fn assert_vote_kept(port: u16, slug: &str, voter: &str) {
    let page = Session::new(port).page(&format!("/poll/{slug}/"));
    assert!(
        page.contains(voter) && page.contains("Berge") && page.contains("See"),
        "the poll lost its vote or choices:\n{page}"
    );
}

/// The service group's gid.
fn service_gid(env: &TestEnv) -> u32 {
    env.ids().expect("the service account").gid
}

#[test]
fn sqlite_cold_and_warm_start_serves_german_pages_and_assets_and_keeps_a_vote() {
    crate::util::root_only!();
    let Some((_up, mut env)) = real_env("real_sqlite") else {
        return;
    };
    check_no_errors(&env, "before the first start");

    // Cold: every step runs, the catalogs go to the data directory (the source is
    // read-only), the static files to data/static/current.
    env.launch();
    wait_ready(&mut env, "cold start");
    let (ran, skipped) = steps(&env);
    assert_eq!(ran, STEPS, "{}", env.log_context());
    assert!(skipped.is_empty(), "{}", env.log_context());
    let log = env.stderr();
    assert!(
        log.contains("preparation finished (3 of 3 steps ran; 60 migrations on disk)"),
        "{}",
        env.log_context()
    );
    // collectstatic ran beside migrate, after the one Django start.
    assert!(
        log.contains("(migrate | collectstatic, compilemessages side by side)"),
        "{}",
        env.log_context()
    );
    assert_eq!(log.matches("Django started in").count(), 1);
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what:?}\n{}", env.log_context()))
    };
    assert!(
        at("step collectstatic started") < at("step migrate finished"),
        "collectstatic waited for migrate\n{}",
        env.log_context()
    );
    for step in STEPS {
        assert!(
            env.data.join(format!("state/{step}.stamp")).is_file(),
            "no {step} stamp"
        );
    }
    assert!(
        log.contains("Applying poll.0020_alter_poll_allow_unauthenticated_vote_changes... OK"),
        "{}",
        env.log_context()
    );
    for lang in ["de_DE", "en_US", "it_IT"] {
        let mo = env
            .data
            .join(format!("locale/{lang}/LC_MESSAGES/django.mo"));
        assert!(mo.is_file(), "{} is missing", mo.display());
    }
    let no_mo = Command::new("find")
        .arg(&env.app)
        .args(["-name", "*.mo"])
        .output()
        .expect("find");
    assert!(
        no_mo.stdout.is_empty(),
        "the launcher wrote into the source"
    );

    let mut session = Session::new(env.port);
    let html = german_home(&mut session);
    let tree = fs::canonicalize(env.data.join("static/current")).expect("static/current");
    assert_assets_served(&env, &html, &tree, service_gid(&env));

    check_no_errors(&env, "while running");
    let slug = "ausflug-sqlite";
    let voter = "Erika Mustermann";
    create_poll_and_vote(env.port, slug, voter);

    // A superuser from DJANGO_SUPERUSER_*, as the service would create it, logs in.
    cli::sync_config(&env);
    let password = "Kein-Geheimnis-4711";
    let out = run_launcher(
        &env,
        &Run::new(&[
            "manage",
            "--config",
            &cli::config_arg(&env),
            "--",
            "createsuperuser",
            "--noinput",
        ])
        .env("DJANGO_SUPERUSER_USERNAME", "verwalterin")
        .env("DJANGO_SUPERUSER_PASSWORD", password)
        .env("DJANGO_SUPERUSER_EMAIL", "verwalterin@example.org"),
    );
    assert_eq!(out.code, 0, "{}", out.context());
    assert!(
        out.stdout.contains("Superuser created successfully."),
        "{}",
        out.context()
    );
    let mut admin = Session::new(env.port);
    let home = german_home(&mut admin);
    let token = http::input_value(&home, "csrfmiddlewaretoken").expect("CSRF token");
    let r = admin.post_form(
        "/login/",
        &[
            ("csrfmiddlewaretoken", token.as_str()),
            ("username", "verwalterin"),
            ("password", password),
        ],
    );
    assert_eq!(r.status, 302, "login: {}", r.text());
    assert!(
        admin.cookies.contains_key("sessionid"),
        "{:?}",
        admin.cookies
    );
    let home = german_home(&mut admin);
    assert!(home.contains("href=\"/logout/\""), "not logged in:\n{home}");

    assert_app_quiet(&env);

    // Warm: nothing to do, the vote is still there.
    let code = env.stop();
    assert_eq!(code, 0, "gunicorn's exit status on SIGTERM");
    env.launch();
    wait_ready(&mut env, "warm start");
    let (ran, skipped) = steps(&env);
    assert!(ran.is_empty(), "{}", env.log_context());
    assert_eq!(skipped, STEPS, "{}", env.log_context());
    assert!(env.stderr().contains("preparation: nothing to do"));
    assert_vote_kept(env.port, slug, voter);
    german_home(&mut Session::new(env.port));
    check_no_errors(&env, "after the restart");
    assert_app_quiet(&env);
}

#[test]
fn postgresql_cold_and_warm_start_migrates_once_serves_and_keeps_a_vote() {
    crate::util::root_only!();
    let Some((_up, mut env)) = real_env("real_pg") else {
        return;
    };
    let pg = PgServer::start("real_pg");
    let password = sha256_hex(fernet_key().as_bytes())[..24].to_string();
    pg.create_database("bitpoll_real", Some(&password), "bitpoll_real");
    let keys = env.dir.join("keys");
    write_file(&keys.join("db-password"), password.as_bytes(), 0o600);
    write_file(&keys.join("fernet-key"), fernet_key().as_bytes(), 0o600);
    env.config
        .set_str("database", "engine", "postgresql")
        .set_str("database", "name", "bitpoll_real")
        .set_str("database", "user", "bitpoll_real")
        .set_str("database", "host", "127.0.0.1")
        .set("database", "port", &pg.port.to_string())
        .set(
            "secrets",
            "BITPOLL_DB_PASSWORD",
            &file_secret(&keys.join("db-password")),
        )
        .set(
            "secrets",
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            &file_secret(&keys.join("fernet-key")),
        );
    check_no_errors(&env, "before the first start");

    env.launch();
    wait_ready(&mut env, "cold start (PostgreSQL)");
    let (ran, _) = steps(&env);
    assert_eq!(ran, STEPS, "{}", env.log_context());
    assert!(
        env.stderr()
            .contains("preparation finished (3 of 3 steps ran; 60 migrations on disk)"),
        "{}",
        env.log_context()
    );
    assert_eq!(pg.assert_applied_once("bitpoll_real"), APPLIED_ROWS);
    // The app talks to the server with the role it was given.
    let tables = pg.psql(
        "bitpoll_real",
        "SELECT tableowner FROM pg_tables WHERE tablename = 'poll_poll'",
    );
    assert_eq!(tables, "bitpoll_real");
    check_no_errors(&env, "while running");

    let slug = "ausflug-pg";
    let voter = "Max Mustermann";
    create_poll_and_vote(env.port, slug, voter);
    let votes = pg.psql(
        "bitpoll_real",
        &format!(
            "SELECT count(*) FROM poll_vote v JOIN poll_poll p ON v.poll_id = p.id WHERE p.url = '{slug}' AND v.name = '{voter}'"
        ),
    );
    assert_eq!(votes, "1", "the vote in PostgreSQL");
    assert_app_quiet(&env);

    assert_eq!(env.stop(), 0);
    env.launch();
    wait_ready(&mut env, "warm start (PostgreSQL)");
    let (ran, skipped) = steps(&env);
    assert!(ran.is_empty(), "{}", env.log_context());
    assert_eq!(skipped, STEPS, "{}", env.log_context());
    assert_vote_kept(env.port, slug, voter);
    assert_eq!(pg.assert_applied_once("bitpoll_real"), APPLIED_ROWS);
}

/// Runs nixos/pkgs/bitpoll/build-assets.sh.
fn build_assets(python: &Path, source: &Path, statics: &Path) -> std::process::Output {
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(BUILD_ASSETS)
        .arg("--python")
        .arg(python)
        .arg("--source")
        .arg(source)
        .arg("--static")
        .arg(statics)
        .env_clear()
        .env("PATH", util::PATH)
        .stdin(Stdio::null())
        .output()
        .expect("run build-assets.sh");
    eprintln!(
        "build-assets.sh: {} in {:.2} s: {}",
        out.status,
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// A writable copy of the installed source, as a package build has it.
fn copy_source(up: &Upstream, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(up.source())
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success());
    let st = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(to)
        .status()
        .expect("chmod");
    assert!(st.success());
}

#[test]
fn a_start_with_the_build_time_assets_runs_migrate_only_and_serves_them() {
    crate::util::root_only!();
    let Some((up, mut env)) = real_env("real_assets") else {
        return;
    };
    // The package's step, on a copy of the source; the result is made read-only. The
    // layout is the Nix package's: share/bitpoll and share/bitpoll-static side by side,
    // where the packaged settings_local.py finds the static tree by itself.
    let built = env.dir.join("built");
    fs::create_dir(&built).expect("mkdir");
    let (source, statics) = (built.join("bitpoll"), built.join("bitpoll-static"));
    copy_source(&up, &source);
    let out = build_assets(&up.python(), &source, &statics);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for lang in ["de_DE", "en_US", "it_IT"] {
        assert!(
            source
                .join(format!("locale/{lang}/LC_MESSAGES/django.mo"))
                .is_file()
        );
    }
    assert!(statics.join("staticfiles.json").is_file());
    let st = Command::new("chmod")
        .args(["-R", "a+rX,a-w"])
        .arg(&built)
        .status()
        .expect("chmod");
    assert!(st.success());

    env.app = source.clone();
    env.config
        .set_str("app", "source_dir", &source.display().to_string())
        .set("prepare", "collectstatic", "false");
    check_no_errors(&env, "before the first start");
    env.launch();
    wait_ready(&mut env, "start with the build-time assets");

    // Migrate alone: collectstatic is off, the catalogs in the source are complete.
    let (ran, skipped) = steps(&env);
    assert_eq!(ran, ["migrate"], "{}", env.log_context());
    assert_eq!(skipped, ["compilemessages"], "{}", env.log_context());
    let log = env.stderr();
    assert!(
        log.contains("step compilemessages skipped: every catalog is compiled in the app source"),
        "{}",
        env.log_context()
    );
    assert!(
        log.contains("preparation started: migrate phase=\"prepare\" steps=migrate "),
        "{}",
        env.log_context()
    );
    assert!(!log.contains("step collectstatic"), "{}", env.log_context());
    assert!(!env.data.join("static/current").exists());
    assert!(
        !env.data.join("locale").exists()
            || fs::read_dir(env.data.join("locale"))
                .unwrap()
                .next()
                .is_none()
    );

    let mut session = Session::new(env.port);
    let html = german_home(&mut session);
    // The built tree is root's and world-readable: any web server reads it.
    assert_assets_served(&env, &html, &statics, service_gid(&env));
    check_no_errors(&env, "while running");
    assert_app_quiet(&env);
}

/// A stylesheet libsass rejects: collectstatic fails beside migrate, the error names it
/// with the compiler's message, it gets no stamp and `current` never names a tree; migrate
/// has a stamp only if it finished before the failure stopped it.
#[test]
fn a_failing_collectstatic_beside_migrate_is_named_and_leaves_no_stamp() {
    crate::util::root_only!();
    let Some((up, mut env)) = real_env("real_static_fail") else {
        return;
    };
    let source = env.dir.join("src");
    copy_source(&up, &source);
    let scss = source.join("bitpoll/base/static/scss/main.scss");
    let mut text = fs::read_to_string(&scss).expect("read main.scss");
    text.push_str("\n.broken { color: $no-such-variable; }\n");
    fs::write(&scss, text).expect("write main.scss");
    let st = Command::new("chmod")
        .args(["-R", "a+rX,a-w"])
        .arg(&source)
        .status()
        .expect("chmod");
    assert!(st.success());
    env.app = source.clone();
    env.config
        .set_str("app", "source_dir", &source.display().to_string());
    env.launch();
    let stderr = env.expect_failure(
        1,
        &["preparation step collectstatic failed (exit status 3)"],
        READY,
    );
    let error = &stderr[stderr
        .find("preparation step collectstatic failed")
        .unwrap()..];
    assert!(
        error.contains("no-such-variable"),
        "the error does not carry libsass's message\n{stderr}"
    );
    assert!(!env.data.join("state/collectstatic.stamp").exists());
    assert!(!env.data.join("state/compilemessages.stamp").exists());
    assert_eq!(
        env.data.join("state/migrate.stamp").exists(),
        stderr.contains("step migrate finished"),
        "{stderr}"
    );
    assert!(
        stderr.contains("step migrate finished")
            || error.contains("migrate ran beside it and was stopped"),
        "{stderr}"
    );
    assert!(!env.data.join("static/current").exists());
    let left = env.processes_of_user();
    assert!(
        left.is_empty(),
        "processes of the service user remain: {left:?}"
    );
}

#[test]
fn build_assets_fails_naming_what_is_wrong() {
    crate::util::root_only!();
    let Some((up, env)) = real_env("real_assets_fail") else {
        return;
    };
    let source = env.dir.join("src");
    copy_source(&up, &source);

    // A static tree that is not empty.
    let full = env.dir.join("full");
    write_file(&full.join("old.css"), b"body{}", 0o644);
    let out = build_assets(&up.python(), &source, &full);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));

    // A catalog msgfmt rejects: no .mo for it, the script fails and collects nothing.
    let po = source.join("locale/de_DE/LC_MESSAGES/django.po");
    let mut text = fs::read_to_string(&po).expect("read the catalog");
    text.push_str(
        "\n#, python-format\nmsgid \"%(count)s polls\"\nmsgstr \"%(anzahl)d Umfragen\"\n",
    );
    fs::write(&po, text).expect("write the catalog");
    let statics = env.dir.join("static");
    let out = build_assets(&up.python(), &source, &statics);
    assert!(!out.status.success(), "a broken catalog was accepted");
    assert!(
        !statics.join("staticfiles.json").exists(),
        "collectstatic ran after a failed compilemessages"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("django.po"),
        "the failure does not name the catalog: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No packaged settings_local.py.
    let bare = env.dir.join("bare");
    copy_source(&up, &bare);
    fs::remove_file(bare.join("bitpoll/settings_local.py")).expect("rm settings_local.py");
    let out = build_assets(&up.python(), &bare, &env.dir.join("static2"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("settings_local.py is missing"));
}

fn records_with<'a>(recs: &'a [JsonRecord], field: &str, value: &str) -> Vec<&'a JsonRecord> {
    recs.iter().filter(|r| r.is(field, value)).collect()
}

#[test]
fn under_systemd_the_real_bitpoll_starts_as_the_hardened_unit_and_a_restart_skips_its_steps() {
    let Some(_root_slot) = container::require_root_and_nspawn() else {
        return;
    };
    // Installed on the host before the boot: the container sees it through its overlay.
    let Some(up) = upstream::install() else {
        return;
    };
    let spec = Spec::default().installed_app(
        &up.source().display().to_string(),
        &up.venv().display().to_string(),
    );
    let b = unit::install("real", spec);
    let took = b.start_ok();
    eprintln!("systemctl start (cold): {:.2} s", took.as_secs_f64());
    let (code, body) = b.http_get("/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(GERMAN), "{body}");

    // The journal's fields say which steps ran, and how long each took.
    let inv1 = b.invocation_id();
    let recs = b.launcher_records_of(&inv1);
    let dump = unit::messages(&recs);
    for step in STEPS {
        let finished: Vec<_> = records_with(&recs, "STEP", step)
            .into_iter()
            .filter(|r| {
                r.get("MESSAGE")
                    .is_some_and(|m| m.starts_with(&format!("step {step} finished")))
            })
            .collect();
        assert_eq!(finished.len(), 1, "step {step}:\n{dump}");
        assert!(finished[0].get("DURATION_MS").is_some(), "{dump}");
        assert!(
            !records_with(&recs, "STEP", step)
                .iter()
                .any(|r| r.is("SKIPPED", "true")),
            "{dump}"
        );
    }
    assert!(
        recs.iter().any(|r| r
            .get("MESSAGE")
            .is_some_and(|m| m.contains("(3 of 3 steps ran; 60 migrations on disk)"))),
        "{dump}"
    );

    // check, inside, while the unit runs.
    let out = b.exec(&[LAUNCHER_PATH, "check", "--config", CONFIG_PATH]);
    let text = unit::text(&out);
    assert!(
        text.lines().any(|l| l.starts_with("0 error(s), ")),
        "check while the unit runs:\n{text}"
    );

    let t = Instant::now();
    b.exec_ok(&["systemctl", "restart", unit::UNIT]);
    eprintln!(
        "systemctl restart (warm): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let inv2 = b.invocation_id();
    assert_ne!(inv1, inv2);
    let recs = b.launcher_records_of(&inv2);
    let dump = unit::messages(&recs);
    for step in STEPS {
        assert!(
            records_with(&recs, "STEP", step)
                .iter()
                .any(|r| r.is("SKIPPED", "true")),
            "step {step} was not skipped:\n{dump}"
        );
    }
    let (code, body) = b.http_get("/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(GERMAN), "{body}");
}
