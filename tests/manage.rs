//! End-to-end tests of `bitpoll-launcher manage`: the real binary runs Django management
//! commands of the demo app (tests/demo-app) as the service user, with its secrets, after a
//! real first start, and refuses when there is no such start or the wrong user runs it.
//!
//! They need root (they create users and run manage as other users) and run one at a time
//! (each test takes the global lock of tests/util):
//!
//!     cargo test --test suite manage:: -- --test-threads=1
//!
//! Every test removes the users, groups, processes and files it made, also when it fails.

use crate::util;

use util::cli::{
    Run, config_arg, create_service_account, generated_value, launch_once, manage, nobody,
    run_launcher, setpriv_as, sync_config, uid_gid,
};
use util::{TestEnv, contains, sha256_hex};

#[test]
fn manage_runs_a_management_command_as_the_service_user_with_its_secrets() {
    crate::util::root_only!();
    let mut env = TestEnv::new("manage");
    launch_once(&mut env);
    let (uid, gid) = uid_gid(&env);

    let out = manage(&env, &["showmigrations", "poll"]);
    assert_eq!(out.code, 0, "{}", out.context());
    assert!(
        out.stdout.contains("[X] 0001_initial") && out.stdout.contains("[X] 0002_demo_delay"),
        "{}",
        out.context()
    );

    let script = "import os, hashlib\n\
        print('ids', os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups()))\n\
        for k in ('BITPOLL_SECRET_KEY', 'BITPOLL_FIELD_ENCRYPTION_KEY'):\n    print('sha', k, hashlib.sha256(os.environ[k].encode()).hexdigest())\n\
        print('cwd', os.getcwd())\n\
        print('home', os.environ['HOME'])\n\
        st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n\
        print('caps', st['CapEff'].strip(), st['CapPrm'].strip(), st['NoNewPrivs'].strip())\n";
    let out = manage(&env, &["shell", "-c", script]);
    assert_eq!(out.code, 0, "{}", out.context());
    let line = |prefix: &str| -> String {
        out.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{}", out.context()))
            .to_string()
    };
    assert_eq!(
        line("ids "),
        format!("ids {uid} {uid} {gid} {gid} [{gid}]"),
        "ran as the service user with its own group only"
    );
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        let want = sha256_hex(generated_value(&env, name).as_bytes());
        assert_eq!(
            line(&format!("sha {name} ")),
            format!("sha {name} {want}"),
            "{name} is the generated secret"
        );
    }
    assert_eq!(line("cwd "), format!("cwd {}", env.app.display()));
    assert_eq!(
        line("home "),
        "home /nonexistent",
        "a HOME the app cannot plant code in"
    );
    assert_eq!(
        line("caps "),
        "caps 0000000000000000 0000000000000000 1",
        "no capabilities, no_new_privs"
    );
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        let v = generated_value(&env, name);
        assert!(
            !contains(&out.raw, v.as_bytes()),
            "manage printed the value of {name}"
        );
    }

    // The command's exit status is manage's.
    let out = manage(&env, &["shell", "-c", "import sys; sys.exit(7)"]);
    assert_eq!(out.code, 7, "{}", out.context());

    // Run by the service user itself, too.
    sync_config(&env);
    let argv = [
        "manage",
        "--config",
        &config_arg(&env),
        "--",
        "showmigrations",
        "poll",
    ];
    let out = run_launcher(&env, &Run::new(&argv).wrap(&setpriv_as(uid, gid, true)));
    assert_eq!(out.code, 0, "{}", out.context());
    assert!(out.stdout.contains("[X] 0001_initial"), "{}", out.context());
}

#[test]
fn manage_before_the_first_start_or_without_the_user_refuses() {
    crate::util::root_only!();
    let env = TestEnv::new("manage_refuses");
    let out = manage(&env, &["showmigrations"]);
    assert_eq!(out.code, 3, "missing user\n{}", out.context());
    // In the words check uses, under the rule's id.
    assert!(
        out.stderr.contains(&format!(
            "the service account {0}:{0} does not exist; fix: start the service once",
            env.user
        )) && out.stderr.contains("finding_id=account.never_started"),
        "{}",
        out.context()
    );
    assert!(!env.user_exists(), "manage created the user");

    create_service_account(&env);
    let out = manage(&env, &["showmigrations"]);
    assert_eq!(out.code, 3, "secrets not generated\n{}", out.context());
    for name in ["BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY"] {
        assert!(
            out.stderr.contains(&format!("{name} (generate "))
                && out.stderr.contains(
                    "has not been generated yet: the service has never started; fix: start the service once first"
                )
                && out.stderr.contains("finding_id=secrets.never_started"),
            "{}",
            out.context()
        );
    }
    assert!(!env.data.exists(), "manage created the data directory");

    // Run by anyone but root or the service user.
    let (nu, ng) = nobody();
    sync_config(&env);
    let argv = [
        "manage",
        "--config",
        &config_arg(&env),
        "--",
        "showmigrations",
    ];
    let out = run_launcher(&env, &Run::new(&argv).wrap(&setpriv_as(nu, ng, false)));
    assert_eq!(out.code, 3, "run by nobody\n{}", out.context());
    assert!(out.stderr.contains(&env.user), "{}", out.context());
}

/// An admin runs `manage` as root from a terminal: the app's code runs as the service user
/// and tries to push a command line into its terminal (TIOCSTI). It must land on a
/// terminal of the app's own, never on the admin's, where the admin's shell would read and
/// run it as root once manage returns.
#[test]
fn manage_from_a_root_terminal_cannot_push_input_into_it() {
    crate::util::root_only!();
    let mut env = TestEnv::new("manage_pty");
    launch_once(&mut env);
    sync_config(&env);
    let marker = env.dir.join("pushed-command-ran");
    // The admin's terminal is a pty of script(1); its shell runs manage, then reads what is
    // waiting on the terminal and runs it, as an interactive shell would.
    let shell = format!(
        "echo outer=$(tty); {launcher} manage --config {config} -- push_input 'touch {marker}'; \
         echo exit=$?; read -t 3 line; echo \"read=[$line]\"; eval \"$line\"",
        launcher = util::LAUNCHER,
        config = config_arg(&env),
        marker = marker.display(),
    );
    let mut out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("bash -c '{}'", shell.replace('\'', "'\\''")),
            "/dev/null",
        ])
        .env_clear()
        .env("PATH", util::PATH)
        .env("LANG", "C.UTF-8")
        .env("TERM", "xterm")
        .current_dir(&env.dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script(1)");
    // The terminal's input stays open (nothing is typed) until the shell is done: an end
    // of input would make script(1) hang up the terminal and hide what was pushed.
    let typing = out.stdin.take();
    let out = out.wait_with_output().expect("wait for script(1)");
    drop(typing);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(
        !marker.exists(),
        "the app's pushed input ran in the admin's shell\n{text}"
    );
    assert!(text.contains("exit=0"), "manage failed\n{text}");
    assert!(
        text.contains("read=[]"),
        "the admin's terminal received input\n{text}"
    );
    let outer = text
        .lines()
        .find_map(|l| l.strip_prefix("outer="))
        .expect("the outer terminal's name")
        .trim()
        .to_string();
    let app_line = text
        .lines()
        .find(|l| l.starts_with("fd 0: tty="))
        .unwrap_or_else(|| panic!("no report from the app\n{text}"));
    assert!(
        !app_line.contains(&format!("tty={outer} ")),
        "the app ran on the admin's terminal {outer}: {app_line}"
    );
    assert!(
        app_line.contains("tty=/dev/pts/"),
        "the app had no terminal: {app_line}"
    );
}

#[test]
fn manage_passes_django_superuser_variables_and_env_options_for_one_command() {
    crate::util::root_only!();
    let mut env = TestEnv::new("manage_env");
    launch_once(&mut env);
    sync_config(&env);
    let args = [
        "manage",
        "--config",
        &config_arg(&env),
        "--env",
        "DEMO_GREETING=hello from --env",
        "--",
        "createsuperuser",
        "--noinput",
    ];
    let out = run_launcher(
        &env,
        &Run::new(&args)
            .env("DJANGO_SUPERUSER_USERNAME", "admin")
            .env("DJANGO_SUPERUSER_EMAIL", "admin@example.org")
            .env("DJANGO_SUPERUSER_PASSWORD", "a-long-test-password-1"),
    );
    assert_eq!(out.code, 0, "{}", out.context());
    let script = "import os\nfrom django.contrib.auth import get_user_model\n\
        u = get_user_model().objects.get(username='admin')\n\
        print('superuser', u.is_superuser, u.check_password('a-long-test-password-1'))\n\
        print('greeting', os.environ.get('DEMO_GREETING'))\n";
    let out = run_launcher(
        &env,
        &Run::new(&[
            "manage",
            "--config",
            &config_arg(&env),
            "--env",
            "DEMO_GREETING=hello from --env",
            "--",
            "shell",
            "-c",
            script,
        ]),
    );
    assert_eq!(out.code, 0, "{}", out.context());
    assert!(
        out.stdout.contains("superuser True True"),
        "{}",
        out.context()
    );
    assert!(
        out.stdout.contains("greeting hello from --env"),
        "{}",
        out.context()
    );

    // A variable the launcher sets, or a secret, cannot be replaced.
    for bad in ["BITPOLL_DATA_DIR=/tmp", "BITPOLL_SECRET_KEY=x"] {
        let out = run_launcher(
            &env,
            &Run::new(&[
                "manage",
                "--config",
                &config_arg(&env),
                "--env",
                bad,
                "--",
                "check",
            ]),
        );
        assert_eq!(out.code, 2, "{bad}: {}", out.context());
        assert!(out.stderr.contains("--env BITPOLL_"), "{}", out.context());
    }
}
