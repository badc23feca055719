//! When systemd hears READY=1: gunicorn's config file with the readiness hooks
//! (src/gunicorn_ready.py), for `[server] ready = "worker"` and `"answer"`.
//!
//! The launcher writes the file into the data directory's state directory on every start
//! (so it is always the launcher's own text, for this config), and the server gets it with
//! `-c` (launcher_plan::layout::server_argv).

use anyhow::Context as _;

use launcher_config::Config;
use launcher_plan::layout::{READY_HOOK_FILE, STATE_DIR};
use launcher_sys::tree::{DataTree, Owner};

const HOOK: &str = include_str!("gunicorn_ready.py");

/// The hook file for `cfg`: the settings it works with, then the hooks.
pub fn hook_text(cfg: &Config) -> String {
    // A JSON string is a Python string literal too (the path is printable ASCII).
    let path = serde_json::to_string(&cfg.server.ready_path).unwrap_or_else(|_| "\"/\"".into());
    format!(
        "MODE = \"{}\"\nREADY_PATH = {path}\nANSWER_TIMEOUT = {}\n\n{HOOK}",
        cfg.server.ready.as_str(),
        cfg.server.ready_timeout.as_secs(),
    )
}

/// Write the hook file when the config's readiness needs it.
pub fn write_hook(cfg: &Config, tree: &DataTree, owner: Owner) -> anyhow::Result<()> {
    if !cfg.server.ready.uses_hook() {
        return Ok(());
    }
    launcher_sys::files::write_atomic(
        tree.dir(STATE_DIR),
        &tree.path_of(STATE_DIR),
        READY_HOOK_FILE,
        hook_text(cfg).as_bytes(),
        0o600,
        owner.privileged.then_some((owner.uid, owner.gid)),
        true,
    )
    .with_context(|| {
        format!(
            "cannot write gunicorn's readiness hook into {}",
            tree.path_of(STATE_DIR).display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> Config {
        let text = format!(
            "[service]\nuser = \"bitpoll\"\ndata_dir = \"/var/lib/bitpoll\"\n[app]\npython = \"/opt/v/bin/python\"\nsource_dir = \"/opt/bitpoll\"\n[secrets]\nBITPOLL_SECRET_KEY = {{ generate = \"django-secret-key\" }}\nBITPOLL_FIELD_ENCRYPTION_KEY = {{ generate = \"fernet-key\" }}\n[server]\ncommand = [\"/opt/v/bin/gunicorn\", \"bitpoll.wsgi:application\"]\n{server}\n"
        );
        launcher_config::parse_str(&text).expect("a valid config")
    }

    #[test]
    fn the_hook_gets_its_mode_path_and_bound_first() {
        let text = hook_text(&config(
            "ready = \"answer\"\nready_path = \"/poll/\\\"x\\\\?a=1\"\nready_timeout_sec = 7",
        ));
        let head: Vec<&str> = text.lines().take(3).collect();
        assert_eq!(
            head,
            [
                "MODE = \"answer\"",
                "READY_PATH = \"/poll/\\\"x\\\\?a=1\"",
                "ANSWER_TIMEOUT = 7",
            ]
        );
        assert!(text.ends_with(HOOK));
        let text = hook_text(&config("ready = \"worker\""));
        assert!(
            text.starts_with("MODE = \"worker\"\nREADY_PATH = \"/\"\n"),
            "{text}"
        );
    }

    /// Runs `script` with /usr/bin/python3 after the hook text for `cfg` (as gunicorn
    /// would load it, without gunicorn); its stdout.
    fn run_hook(server: &str, script: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import sys; exec(sys.stdin.read())"])
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run /usr/bin/python3");
        let text = format!("{}\n{script}", hook_text(&config(server)));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write the hook to python3");
        let out = child.wait_with_output().expect("wait for python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_worker_without_a_thread_for_its_warm_up_serves_without_it() {
        // TasksMax= reached: starting the warm-up thread fails. The worker must not fail
        // to boot over it (gunicorn would halt the whole server).
        let out = run_hook(
            "ready = \"answer\"",
            r#"
class Log:
    def info(self, *a): print("info", a[0] % a[1:])
    def warning(self, *a): print("warning", a[0] % a[1:])

class Worker:
    log = Log()
    def wsgi(self, environ, start_response):
        raise AssertionError("the app is not called")
    def notify(self):
        pass

def refuse(self):
    raise RuntimeError("can't start new thread")

threading.Thread.start = refuse
print("status", _warm_up(Worker()))
"#,
        );
        assert!(
            out.contains("warning bitpoll-launcher warm-up: GET / failed after 0 ms: cannot start a thread for it: can't start new thread"),
            "{out}"
        );
        assert!(
            out.contains("status Gunicorn worker ")
                && out.contains("started; its warm-up GET / failed: cannot start a thread"),
            "{out}"
        );
    }

    #[test]
    fn the_hook_is_python_that_compiles() {
        let out = run_hook(
            "ready = \"answer\"\nready_path = \"/a\\\"b\"",
            "print(READY_PATH)",
        );
        assert_eq!(out, "/a\"b\n");
    }
}
