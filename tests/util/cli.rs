//! Running the launcher's one-shot commands (`check`, `manage`) in a [`TestEnv`] and
//! setting up what they look at (the service account, a first start), for tests/check.rs
//! and tests/manage.rs.

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{LAUNCHER, PATH, TestEnv};

/// Time from launch to READY=1.
pub const READY: Duration = Duration::from_secs(60);
/// A check or manage run must finish within this (a check is about one Django start).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run `check` or `manage`.
#[derive(Debug, Clone)]
pub struct Run {
    /// Arguments after the launcher's path.
    args: Vec<String>,
    /// argv to run the launcher through (setpriv ..., unshare ...).
    wrapper: Vec<String>,
    /// The PATH of the launcher's own environment.
    path: String,
    env: Vec<(String, String)>,
}

impl Run {
    pub fn new<S: AsRef<str>>(args: &[S]) -> Run {
        Run {
            args: args.iter().map(|s| s.as_ref().to_string()).collect(),
            wrapper: Vec::new(),
            path: PATH.to_string(),
            env: Vec::new(),
        }
    }

    pub fn wrap<S: AsRef<str>>(mut self, argv: &[S]) -> Run {
        self.wrapper = argv.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    pub fn path(mut self, path: &str) -> Run {
        self.path = path.to_string();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Run {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// stdout and stderr, raw (for searching secret values that may not be UTF-8).
    pub raw: Vec<u8>,
    pub elapsed: Duration,
}

impl Output {
    pub fn context(&self) -> String {
        format!(
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run the launcher with a cleared environment (PATH, LANG and `run.env` only), stdin
/// from /dev/null, in the test directory; kill it after [`RUN_TIMEOUT`].
pub fn run_launcher(env: &TestEnv, run: &Run) -> Output {
    let mut cmd = match run.wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(LAUNCHER);
            c
        }
        None => Command::new(LAUNCHER),
    };
    cmd.args(&run.args)
        .env_clear()
        .env("PATH", &run.path)
        .env("LANG", "C.UTF-8")
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&env.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn the launcher");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} ran longer than {RUN_TIMEOUT:?}", run.args);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let out = out_reader.join().expect("stdout reader");
    let err = err_reader.join().expect("stderr reader");
    let code = {
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    };
    let mut raw = out.clone();
    raw.extend_from_slice(&err);
    Output {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        raw,
        elapsed,
    }
}

/// Write the test's config file, but only when its text changed: rewriting it would
/// change its mtime, which the "check writes nothing" snapshots look at.
pub fn sync_config(env: &TestEnv) {
    let text = env
        .raw_config
        .clone()
        .unwrap_or_else(|| env.config.render());
    if fs::read_to_string(env.config_path()).ok().as_deref() != Some(text.as_str()) {
        env.write_config();
    }
}

pub fn config_arg(env: &TestEnv) -> String {
    env.config_path().display().to_string()
}

/// `manage --config F -- ARGS` as root.
pub fn manage(env: &TestEnv, args: &[&str]) -> Output {
    sync_config(env);
    let mut argv = vec!["manage".to_string(), "--config".into(), config_arg(env)];
    argv.push("--".into());
    argv.extend(args.iter().map(|s| s.to_string()));
    run_launcher(env, &Run::new(&argv))
}

/// Create the service account ahead (as an admin or sysusers would): a system user with
/// its own group. TestEnv's Drop removes both.
pub fn create_account(env: &TestEnv, home: &Path, shell: &str) -> (u32, u32) {
    let out = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home", "--home-dir"])
        .arg(home)
        .args(["--shell", shell])
        .arg(&env.user)
        .output()
        .expect("run useradd");
    assert!(
        out.status.success(),
        "useradd {}: {}",
        env.user,
        String::from_utf8_lossy(&out.stderr)
    );
    let u = nix::unistd::User::from_name(&env.user)
        .unwrap()
        .expect("the new user");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The account as the service would have it: home = data dir, no login shell.
pub fn create_service_account(env: &TestEnv) -> (u32, u32) {
    create_account(env, &env.data, "/usr/sbin/nologin")
}

pub fn uid_gid(env: &TestEnv) -> (u32, u32) {
    let u = nix::unistd::User::from_name(&env.user)
        .unwrap()
        .expect("the service user");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Start the service, wait until it serves, stop it.
pub fn launch_once(env: &mut TestEnv) {
    env.launch();
    env.wait_ready(READY);
    env.stop();
}

/// A generated secret's value as the app sees it (one trailing newline stripped).
pub fn generated_value(env: &TestEnv, name: &str) -> String {
    let raw = fs::read_to_string(env.data.join("secrets").join(name)).expect("generated secret");
    raw.strip_suffix('\n').unwrap_or(&raw).to_string()
}

/// The nobody user's ids.
pub fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The argv prefix that runs a command as `uid`:`gid` (with the user's supplementary
/// groups, or none).
pub fn setpriv_as(uid: u32, gid: u32, init_groups: bool) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        if init_groups {
            "--init-groups".into()
        } else {
            "--clear-groups".into()
        },
        "--".into(),
    ]
}
