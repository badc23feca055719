//! Nothing the app runs may reach the admin's terminal. An admin runs `check`, `manage` and
//! sometimes `run` from a root shell; everything those start runs the app's code as the
//! service user, which is who an attacker is once the web app is compromised. These tests
//! put a real root `bash -i` on a real terminal (a tmux pane) and app code that tries to
//! push a command into that shell's input (TIOCSTI on /dev/tty and on its standard
//! streams), then run the launcher there as an admin would and check the shell ran
//! nothing. A control shows the same code does reach the shell when started without the
//! launcher's care (runuser without --pty), so the tests can fail.
//!
//! Also here: manage's pty relay compared with `runuser --pty` (end of piped input, a
//! command that leaves a process behind, large input, stop signals, a terminal that takes
//! no output, the terminal's mode restored), the signal state the server and manage's
//! command start with, the user site directory the app could plant code in, and escaped
//! text on the terminal.
//!
//! Root only, one test at a time (`cargo test --test suite terminal:: -- --test-threads=1`); needs
//! tmux and runuser (util-linux).

use crate::util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use util::cli::{READY, Run, config_arg, launch_once, manage, run_launcher, sync_config, uid_gid};
use util::tmux::Tmux;
use util::{LAUNCHER, PATH, PYTHON, TestEnv, proc_status};

const LONG: Duration = Duration::from_secs(90);

/// dev.tty.legacy_tiocsti on for the test's duration (the attack needs it; kernels with it
/// off refuse TIOCSTI to everyone but CAP_SYS_ADMIN), put back as it was afterwards.
struct LegacyTiocsti(Option<String>);

const TIOCSTI_SYSCTL: &str = "/proc/sys/dev/tty/legacy_tiocsti";

impl LegacyTiocsti {
    fn on() -> LegacyTiocsti {
        match fs::read_to_string(TIOCSTI_SYSCTL) {
            // Kernels before 6.2 have no switch: TIOCSTI is always allowed.
            Err(_) => LegacyTiocsti(None),
            Ok(v) if v.trim() == "1" => LegacyTiocsti(None),
            Ok(v) => {
                fs::write(TIOCSTI_SYSCTL, "1").expect("enable dev.tty.legacy_tiocsti");
                LegacyTiocsti(Some(v))
            }
        }
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = fs::write(TIOCSTI_SYSCTL, v.trim());
        }
    }
}

/// The attack, as app code: on import, try to queue `touch PROOF` into the input of every
/// terminal it can reach, and log each attempt (pid, target, outcome) to LOG.
fn payload(proof: &Path, log: &Path) -> String {
    format!(
        r#"
# --- test payload: an attacker's code in the app ---
def _blt_attack():
    import fcntl, os, termios
    line = b"touch {proof}\n"
    with open("{log}", "a") as log:
        targets = []
        try:
            targets.append(("/dev/tty", os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)))
        except OSError as e:
            log.write("%d /dev/tty errno %d\n" % (os.getpid(), e.errno))
        targets += [("fd%d" % n, n) for n in (0, 1, 2)]
        for name, fd in targets:
            try:
                tty = os.ttyname(fd)
            except OSError:
                tty = "-"
            try:
                for b in line:
                    fcntl.ioctl(fd, termios.TIOCSTI, bytes([b]))
                log.write("%d %s injected into %s\n" % (os.getpid(), name, tty))
            except OSError as e:
                log.write("%d %s (%s) errno %d\n" % (os.getpid(), name, tty, e.errno))
_blt_attack()
"#,
        proof = proof.display(),
        log = log.display(),
    )
}

/// A deployment whose app carries the payload, started once (account, secrets, catalogs).
struct Attacked {
    env: TestEnv,
    proof: PathBuf,
    log: PathBuf,
    /// The payload on its own, for the control.
    attack: PathBuf,
}

impl Attacked {
    fn new(name: &str) -> Attacked {
        let mut env = TestEnv::new(name);
        launch_once(&mut env);
        let shared = env.dir.join("attempts");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let proof = env.dir.join("proof");
        let log = shared.join("log");
        let attack = env.dir.join("attack.py");
        fs::write(&attack, payload(&proof, &log)).unwrap();
        fs::set_permissions(&attack, fs::Permissions::from_mode(0o644)).unwrap();
        let settings = env.app.join("bitpoll/settings.py");
        let mut text = fs::read_to_string(&settings).unwrap();
        text.push_str(&format!("\nexec(open(\"{}\").read())\n", attack.display()));
        fs::write(&settings, text).unwrap();
        sync_config(&env);
        Attacked {
            env,
            proof,
            log,
            attack,
        }
    }

    fn attempts(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Forget the attempts so far.
    fn clear(&self) {
        let _ = fs::remove_file(&self.log);
    }

    /// The launcher as a root shell runs it: a clean environment, then `args`.
    fn command(&self, args: &str) -> String {
        format!("env -i PATH={PATH} LANG=C.UTF-8 {LAUNCHER} {args}")
    }

    /// After the shell has read its input: the app's code ran (it logged attempts), none
    /// reached the root shell, and nothing was pushed into the shell's terminal `tty` (the
    /// command's own pty under `manage` may take it: nobody else reads that).
    fn assert_no_injection(&self, case: &str, tty: &str) {
        let attempts = self.attempts();
        assert!(
            !attempts.is_empty(),
            "{case}: the app's code never ran, so this case tested nothing"
        );
        assert!(
            !self.proof.exists(),
            "{case}: the root shell ran a command the app pushed into its terminal\n{attempts}"
        );
        assert!(
            !attempts.contains(&format!("injected into {tty}\n")),
            "{case}: the app pushed input into the admin's terminal {tty}\n{attempts}"
        );
    }
}

#[test]
fn app_code_run_by_check_manage_or_run_never_reaches_the_admins_root_shell() {
    crate::util::root_only!();
    let _tiocsti = LegacyTiocsti::on();
    let a = Attacked::new("tty_injection");
    let (uid, gid) = uid_gid(&a.env);
    let config = config_arg(&a.env);
    let mut shell = Tmux::start(&a.env.dir, PATH);
    let tty = shell.tty();

    // Control: the same code, started as the service user from this shell by a tool that
    // keeps the shell's session, does reach the shell.
    let control = format!(
        "env -i PATH={PATH} setpriv --reuid={uid} --regid={gid} --clear-groups -- {PYTHON} {}",
        a.attack.display()
    );
    shell.run(&control, LONG);
    assert!(
        a.proof.exists(),
        "control: the payload did not reach the shell when started without the launcher, so this test cannot tell (attempts: {})",
        a.attempts()
    );
    fs::remove_file(&a.proof).unwrap();

    let out = a.env.dir.join("out");
    let cases = [
        ("check on the terminal", format!("check --config {config}")),
        (
            "check redirected",
            format!(
                "check --config {config} </dev/null >{0} 2>&1",
                out.display()
            ),
        ),
        (
            "manage on the terminal (pty)",
            format!("manage --config {config} -- shell -c pass"),
        ),
        (
            "manage redirected",
            format!(
                "manage --config {config} -- shell -c pass </dev/null >{0} 2>&1",
                out.display()
            ),
        ),
        (
            "manage with only stdin on the terminal",
            format!(
                "manage --config {config} -- shell -c pass >{0} 2>&1",
                out.display()
            ),
        ),
    ];
    for (case, args) in cases {
        a.clear();
        shell.run(&a.command(&args), LONG);
        a.assert_no_injection(case, &tty);
    }

    // run, started by hand on the terminal: the preparation and the server import the app.
    a.clear();
    // A migration to apply, so the preparation driver runs the app's code too.
    util::add_migration(&a.env, "0099_tty");
    shell.type_line(&a.command(&format!("run --config {config}")));
    wait_serving(a.env.port);
    // Ctrl-C as the admin would stop it: it still reaches the server.
    shell.key("C-c");
    shell.settle();
    let attempts = a.attempts();
    assert!(
        attempts
            .lines()
            .map(|l| l.split(' ').next())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 2,
        "the driver and the server both ran the app's code:\n{attempts}"
    );
    a.assert_no_injection("run on the terminal", &tty);
    assert!(
        util::listening_socket_inode(a.env.port).is_none(),
        "Ctrl-C on the terminal did not stop the server"
    );
}

/// Wait until the app answers on 127.0.0.1:`port` (a worker has loaded it).
fn wait_serving(port: u16) {
    let deadline = std::time::Instant::now() + READY;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && util::http_get(port, "/").status == 200
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the app did not answer on port {port} within {READY:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_usercustomize_planted_in_the_service_home_never_runs() {
    crate::util::root_only!();
    let mut env = TestEnv::new("usersite");
    launch_once(&mut env);
    let (uid, gid) = uid_gid(&env);
    // An interpreter outside a virtualenv honours the user site directory.
    let python = "/usr/bin/python3";
    let home = format!("HOME={}", env.data.display());
    let site = as_user(
        uid,
        gid,
        &[
            "env",
            &home,
            python,
            "-c",
            "import site; print(site.getusersitepackages())",
        ],
    );
    let site = PathBuf::from(site.trim());
    assert!(site.starts_with(&env.data), "{}", site.display());
    let shared = env.dir.join("usersite-shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let marker = shared.join("usersite-ran");
    // Planted as the app could: by the service user, in its own home.
    let plant = format!(
        "mkdir -p '{0}' && printf 'open(\"{1}\", \"a\").write(\"ran\\\\n\")\\n' > '{0}/usercustomize.py'",
        site.display(),
        marker.display()
    );
    as_user(uid, gid, &["sh", "-c", &plant]);
    // Control: the planted file runs in a plain interpreter with that HOME.
    as_user(uid, gid, &["env", &home, python, "-c", "pass"]);
    assert!(
        marker.exists(),
        "control: the planted usercustomize.py did not run"
    );
    fs::remove_file(&marker).unwrap();

    env.config.set_str("app", "python", python);
    sync_config(&env);
    let out = run_launcher(&env, &Run::new(&["check", "--config", &config_arg(&env)]));
    assert!(
        !marker.exists(),
        "check's probe ran the planted code\n{}",
        out.context()
    );
    let out = manage(&env, &["help"]);
    assert!(
        !marker.exists(),
        "manage ran the planted code\n{}",
        out.context()
    );
    // The service's own start, too (it fails later for want of Django in this interpreter).
    env.launch();
    let _ = env.wait_exit(LONG);
    assert!(
        !marker.exists(),
        "run ran the planted code\n{}",
        env.log_context()
    );
}

/// Run `argv` as `uid`:`gid` with a cleared environment; its stdout.
fn as_user(uid: u32, gid: u32, argv: &[&str]) -> String {
    let out = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .args(argv)
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Django check the app registers: a warning whose text is terminal control.
const EVIL_CHECK: &str = r#"
from django.core import checks as _blt_checks
@_blt_checks.register(deploy=True)
def _blt_evil(app_configs, **kwargs):
    return [_blt_checks.Warning(
        "all clear\x1b[2K\x1b[1A\x1b]0;pwned\x07\r\x05",
        hint="\x1b[32mnothing to do\x1b[0m",
        id="blt.W001",
    )]
import os as _blt_os, sys as _blt_sys
if _blt_os.environ.get("BLT_EVIL_SETUP"):
    raise RuntimeError("broken\x1b]0;pwned\x07\x1b[2K")
print("migrating\x1b]0;pwned\x07\r\x05 done", file=_blt_sys.stderr)
"#;

#[test]
fn outside_text_reaches_the_terminal_escaped_and_json_as_it_is() {
    crate::util::root_only!();
    let mut env = TestEnv::new("escape");
    launch_once(&mut env);
    let settings = env.app.join("bitpoll/settings.py");
    let mut text = fs::read_to_string(&settings).unwrap();
    text.push_str(EVIL_CHECK);
    fs::write(&settings, text).unwrap();
    sync_config(&env);

    let config = config_arg(&env);
    let out = run_launcher(&env, &Run::new(&["check", "--config", &config]));
    assert!(
        !out.stdout.contains('\x1b') && !out.stdout.contains('\r') && !out.stdout.contains('\x05'),
        "check printed raw control characters:\n{:?}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(r"all clear\x1b[2K\x1b[1A\x1b]0;pwned\x07\x0d\x05")
            && out.stdout.contains(r"\x1b[32mnothing to do\x1b[0m"),
        "the warning and its hint are shown escaped:\n{}",
        out.stdout
    );
    let out = run_launcher(&env, &Run::new(&["check", "--config", &config, "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("check --json");
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"]
                .as_str()
                .is_some_and(|m| m.contains("all clear\u{1b}[2K"))),
        "JSON carries the text as it is:\n{}",
        out.stdout
    );

    // The "does not start" error of a broken app.
    env.config.set_str("environment", "BLT_EVIL_SETUP", "1");
    sync_config(&env);
    let out = run_launcher(&env, &Run::new(&["check", "--config", &config]));
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    assert!(
        out.stdout.contains(r"broken\x1b]0;pwned\x07\x1b[2K"),
        "{}",
        out.stdout
    );

    // The preparation's output, logged by the launcher as text.
    env.config.remove("environment", "BLT_EVIL_SETUP");
    util::add_migration(&env, "0099_escape");
    env.launch();
    env.wait_ready(READY);
    env.stop();
    let logged: Vec<String> = env
        .stderr()
        .lines()
        .filter(|l| l.contains("migrating") && l.contains("INFO"))
        .map(str::to_string)
        .collect();
    assert!(
        !logged.is_empty(),
        "the driver's output was logged\n{}",
        env.stderr()
    );
    for line in &logged {
        assert!(
            line.contains(r"migrating\x1b]0;pwned\x07\x0d\x05 done"),
            "logged escaped: {line:?}"
        );
    }
}

/// `SigIgn:` and `SigBlk:` of a /proc/PID/status text.
fn sig_fields(status: &str) -> (String, String) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in\n{status}"))
    };
    (field("SigIgn:"), field("SigBlk:"))
}

/// A parent as careless as some are: SIGHUP and SIGUSR1 ignored, SIGUSR2 and SIGTERM
/// blocked (Python also leaves SIGPIPE and SIGXFSZ ignored), then exec the rest.
const CARELESS_PARENT: &str = "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); signal.signal(signal.SIGUSR1, signal.SIG_IGN); signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM}); os.execv(sys.argv[1], sys.argv[1:])";

#[test]
fn the_server_and_manages_command_start_with_default_signals_whatever_the_caller_left() {
    crate::util::root_only!();
    let mut env = TestEnv::new("signal_state");
    launch_once(&mut env);
    let wrapper = ["/usr/bin/python3", "-c", CARELESS_PARENT];

    // The server: a program that touches no signal reports what it inherited.
    let shared = env.dir.join("reports");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let report = shared.join("server-status");
    let mut cfg = env.config.clone();
    cfg.set(
        "server",
        "command",
        &format!(
            "[\"/bin/sh\", \"-c\", \"cat /proc/self/status > {0}; exec sleep 60\"]",
            report.display()
        ),
    );
    // `sh` is the server: dash sets no disposition of its own, cat inherits its state.
    let saved = std::mem::replace(&mut env.config, cfg);
    env.launch_with(util::Launch::default().wrap(&wrapper));
    let deadline = std::time::Instant::now() + READY;
    while !report.exists() || fs::read_to_string(&report).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            env.log_context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let (ign, blk) = sig_fields(&fs::read_to_string(&report).unwrap());
    assert_eq!(
        ign, "0000000000000000",
        "the server inherited ignored signals"
    );
    assert_eq!(
        blk, "0000000000000000",
        "the server inherited blocked signals"
    );
    let _ = env.stop();
    env.config = saved;

    // gunicorn, a Python program: CPython ignores SIGPIPE and SIGXFSZ itself at start;
    // nothing else may be ignored.
    let python_ign = format!(
        "{:016x}",
        (1u64 << (nix::libc::SIGPIPE - 1)) | (1u64 << (nix::libc::SIGXFSZ - 1))
    );
    let pid = env.launch_with(util::Launch::default().wrap(&wrapper));
    env.wait_ready(READY);
    let status = proc_status(pid);
    assert_eq!(
        status["SigBlk"], "0000000000000000",
        "gunicorn's blocked signals"
    );
    assert_eq!(status["SigIgn"], python_ign, "gunicorn's ignored signals");
    env.stop();

    // manage's command, without a terminal (exec in place) and with one (pty).
    let script = "print('STATUS', open('/proc/self/status').read().replace(chr(10), ' | '))";
    let out = run_launcher(
        &env,
        &Run::new(&[
            "manage",
            "--config",
            &config_arg(&env),
            "--",
            "shell",
            "-c",
            script,
        ])
        .wrap(&wrapper),
    );
    assert_eq!(out.code, 0, "{}", out.context());
    let status = out.stdout.replace(" | ", "\n");
    let (ign, blk) = sig_fields(&status);
    assert_eq!(
        blk, "0000000000000000",
        "manage's command inherited blocked signals"
    );
    assert_eq!(
        ign, python_ign,
        "manage's command inherited ignored signals"
    );

    let mut shell = Tmux::start(&env.dir, PATH);
    let file = shared.join("manage-status");
    let script = format!(
        "open('{}', 'w').write(open('/proc/self/status').read())",
        file.display()
    );
    let w = format!("/usr/bin/python3 -c \"{CARELESS_PARENT}\"");
    let code = shell.run(
        &format!(
            "env -i PATH={PATH} {w} {LAUNCHER} manage --config {} -- shell -c \"{script}\"",
            config_arg(&env)
        ),
        LONG,
    );
    assert_eq!(code, 0, "{}", shell.screen());
    let (ign, blk) = sig_fields(&fs::read_to_string(&file).expect("the command's status"));
    assert_eq!(
        blk, "0000000000000000",
        "manage's command on a pty: blocked signals"
    );
    assert_eq!(
        ign, python_ign,
        "manage's command on a pty: ignored signals"
    );
}

/// `manage -- shell` and `runuser --pty -- python manage.py shell` side by side.
struct Both {
    env: TestEnv,
    shell: Tmux,
}

impl Both {
    fn new(name: &str) -> Both {
        let mut env = TestEnv::new(name);
        launch_once(&mut env);
        let shell = Tmux::start(&env.dir, PATH);
        Both { env, shell }
    }

    fn manage(&self, args: &str) -> String {
        format!(
            "env -i PATH={PATH} LANG=C.UTF-8 {LAUNCHER} manage --config {} -- {args}",
            config_arg(&self.env)
        )
    }
}

#[test]
fn manage_ends_piped_input_and_returns_when_its_command_exits_as_runuser_pty_does() {
    crate::util::root_only!();
    let mut b = Both::new("relay_eof");
    let before = b.shell.stty();

    // Piped input on a terminal: the command reads it to its end and exits.
    let code = b.shell.run(
        &format!("printf 'print(6*7)\\n' | {}", b.manage("shell")),
        LONG,
    );
    assert_eq!(code, 0, "{}", b.shell.screen());
    assert!(b.shell.screen().contains("\n42"), "{}", b.shell.screen());
    let code = b.shell.run(
        &format!(
            "printf 'print(6*7)\\n' | runuser --pty -u {} -- /usr/bin/python3 -i -q",
            b.env.user
        ),
        LONG,
    );
    assert_eq!(
        code,
        0,
        "runuser --pty ends the same pipe\n{}",
        b.shell.screen()
    );

    // A command that leaves a process behind on its terminal: manage returns when the
    // command exits, with its status, and the terminal is as it was.
    let leave = "import subprocess, sys; subprocess.Popen(['sleep', '300']); sys.exit(3)";
    let started = std::time::Instant::now();
    let code = b
        .shell
        .run(&b.manage(&format!("shell -c \"{leave}\"")), LONG);
    let manage_took = started.elapsed();
    assert_eq!(code, 3, "{}", b.shell.screen());
    let started = std::time::Instant::now();
    let code = b.shell.run(
        &format!(
            "runuser --pty -u {} -- /usr/bin/python3 -c \"{leave}\"",
            b.env.user
        ),
        LONG,
    );
    assert_eq!(code, 3, "runuser --pty: {}", b.shell.screen());
    eprintln!(
        "returned with a process left behind: manage {manage_took:?}, runuser --pty {:?}",
        started.elapsed()
    );
    assert!(
        manage_took < Duration::from_secs(30),
        "manage waited for the leftover"
    );
    assert_eq!(
        b.shell.stty(),
        before,
        "the terminal's mode was not restored"
    );
}

#[test]
fn manage_relays_large_input_without_deadlock_and_restores_the_terminal_on_stop_signals() {
    crate::util::root_only!();
    let mut b = Both::new("relay_io");
    let before = b.shell.stty();
    // The command puts its terminal in raw mode and echoes every byte it reads: input and
    // output flow at once.
    let echo = b.env.dir.join("echo.py");
    const SIZE: usize = 256 * 1024;
    fs::write(
        &echo,
        format!(
            "import os, sys, tty\ntty.setraw(0)\nos.write(1, b'READY\\r\\n')\nn = 0\nwhile n < {SIZE}:\n    b = os.read(0, 65536)\n    if not b:\n        break\n    n += len(b)\n    os.write(1, b)\nos.write(1, b'\\r\\nGOT %d\\r\\n' % n)\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&echo, fs::Permissions::from_mode(0o644)).unwrap();
    b.shell.type_line(&format!(
        "{}; echo \"large-done=$?\"",
        b.manage(&format!(
            "shell -c \"exec(open('{}').read())\"",
            echo.display()
        ))
    ));
    b.shell.wait_for_line("READY", LONG);
    let data: Vec<u8> = (0..SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    b.shell.paste(&data);
    assert_eq!(
        b.shell.wait_for_line("GOT ", LONG),
        SIZE.to_string(),
        "all input reached the command"
    );
    assert_eq!(b.shell.wait_for_line("large-done=", LONG), "0");
    b.shell.settle();
    assert_eq!(
        b.shell.stty(),
        before,
        "the terminal's mode was not restored"
    );

    // Stop signals sent to manage reach the command; manage ends and the terminal comes
    // back. runuser --pty does the same on SIGTERM (on SIGHUP it keeps the command).
    for (signal, name) in [
        (nix::sys::signal::Signal::SIGTERM, "TERM"),
        (nix::sys::signal::Signal::SIGHUP, "HUP"),
        (nix::sys::signal::Signal::SIGINT, "INT"),
    ] {
        for tool in ["manage", "runuser --pty"] {
            if tool != "manage" && name != "TERM" {
                continue;
            }
            let mark = format!("sleeping-{name}-{}", tool.len());
            let sleep = format!("import time; print('{mark}'); time.sleep(300)");
            let line = match tool {
                "manage" => b.manage(&format!("shell -c \"{sleep}\"")),
                _ => format!(
                    "runuser --pty -u {} -- /usr/bin/python3 -c \"{sleep}\"",
                    b.env.user
                ),
            };
            let done = format!("stopped-{name}-{}=", tool.len());
            b.shell.type_line(&format!("{line}; echo \"{done}$?\""));
            b.shell.wait_for_line(&mark, LONG);
            let pid = child_of(b.shell.shell_pid());
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
            let code = b.shell.wait_for_line(&done, Duration::from_secs(30));
            eprintln!("{tool} after SIG{name}: exit status {code}");
            assert_ne!(code, "0", "{tool}: SIG{name} did not end the command");
            b.shell.settle();
            assert_eq!(
                b.shell.stty(),
                before,
                "{tool}: the terminal's mode after SIG{name}"
            );
            // (runuser leaves its command unreaped to whoever inherits it; only running
            // processes count.)
            let running: Vec<i32> = b
                .env
                .processes_of_user()
                .into_iter()
                .filter(|p| util::proc_stat(*p).is_some_and(|(state, _, _)| state != 'Z'))
                .collect();
            assert!(
                running.is_empty(),
                "{tool}: the command outlived SIG{name}: {running:?}"
            );
        }
    }
}

/// Output of the pane's terminal held (as Ctrl-S or a stalled connection would) while
/// alive; let go when dropped, so the pane always comes back.
struct HeldOutput(fs::File);

impl HeldOutput {
    fn hold(tty: &str) -> HeldOutput {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tty)
            .expect("open the pane's terminal");
        nix::sys::termios::tcflow(&file, nix::sys::termios::FlowArg::TCOOFF)
            .expect("stop the pane's output");
        HeldOutput(file)
    }
}

impl Drop for HeldOutput {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcflow(&self.0, nix::sys::termios::FlowArg::TCOON);
    }
}

#[test]
fn manage_ends_on_a_stop_signal_while_the_terminal_takes_no_output() {
    crate::util::root_only!();
    let mut b = Both::new("relay_held");
    let before = b.shell.stty();
    let flood = "import sys\nwhile True: sys.stdout.write('x' * 80 + chr(10))";
    let flood_file = b.env.dir.join("flood.py");
    fs::write(&flood_file, flood).unwrap();
    fs::set_permissions(&flood_file, fs::Permissions::from_mode(0o644)).unwrap();
    b.shell.type_line(&format!(
        "{}; echo \"held-done=$?\"",
        b.manage(&format!(
            "shell -c \"exec(open('{}').read())\"",
            flood_file.display()
        ))
    ));
    b.shell.wait_for(&"x".repeat(80), LONG);
    let launcher = child_of(b.shell.shell_pid());
    let held = HeldOutput::hold(&b.shell.tty());
    // Every buffer between the command and the held terminal fills up.
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + PTY_GRACE + Duration::from_secs(10);
    while Path::new(&format!("/proc/{launcher}")).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = !Path::new(&format!("/proc/{launcher}")).exists()
        || util::proc_stat(launcher as i32).is_some_and(|(state, _, _)| state == 'Z');
    let running: Vec<i32> = b
        .env
        .processes_of_user()
        .into_iter()
        .filter(|p| util::proc_stat(*p).is_some_and(|(state, _, _)| state != 'Z'))
        .collect();
    drop(held);
    assert!(
        ended,
        "manage did not end on SIGTERM while its terminal took no output"
    );
    assert!(
        running.is_empty(),
        "the command outlived SIGTERM: {running:?}"
    );
    // What the command wrote but the terminal had not taken is dropped: the shell's line
    // may follow a cut one.
    let screen = b.shell.wait_for("held-done=", LONG);
    let code: String = screen
        .rsplit("held-done=")
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code, "143", "SIGTERM ends the command\n{screen}");
    b.shell.settle();
    assert_eq!(b.shell.stty(), before, "the terminal's mode after SIGTERM");
}

/// How long manage gives its command after a stop signal.
const PTY_GRACE: Duration = Duration::from_secs(5);

/// The one child of `ppid` (the launcher or runuser started by the shell).
fn child_of(ppid: u32) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let children = util::children_of(ppid);
        if let [one] = children[..] {
            return one;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shell {ppid} has children {children:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stop_between_the_end_of_preparation_and_the_exec_stops_the_start() {
    crate::util::root_only!();
    let mut env = TestEnv::new("stop_window");
    launch_once(&mut env);
    // strace holds the chdir into the app source (after the privilege drop, right before
    // the exec) for two seconds: a SIGTERM then arrives inside the window.
    let strace = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=chdir",
        "-e",
        "inject=chdir:delay_enter=2000000",
    ];
    let pid = env.launch_with(util::Launch::default().wrap(&strace));
    env.wait_for_log("preparation: nothing to do", READY);
    // The launcher is strace's child.
    let launcher = child_of(pid);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let code = env.wait_exit(LONG);
    let log = env.log_context();
    assert!(
        log.contains("stopped by signal 15 (SIGTERM) before the server started"),
        "exit {code}\n{log}"
    );
    assert!(
        util::listening_socket_inode(env.port).is_none(),
        "the server started after the stop\n{log}"
    );
}
