//! examples/launcher.toml is the config an admin copies: `check` must find nothing wrong
//! with it except what only the admin's host can provide (the account install declares,
//! the virtualenv and source under /opt/bitpoll, a free port). The container example
//! (examples/container) is one valid config, in its file and in the Kubernetes ConfigMap.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/launcher.toml");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example copied into a fresh directory, as an admin copies it to /etc/bitpoll
/// (owned by the caller, 0644, in a directory nobody else can write).
fn copy_of_example() -> (Dir, PathBuf) {
    let dir = std::env::temp_dir().join(format!("blt-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("launcher.toml");
    std::fs::copy(EXAMPLE, &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    (Dir(dir), config)
}

/// Is this finding about something only the host provides? Exactly these:
/// - the account, which `install` declares (create_user = false until then);
/// - the interpreter, the app source and the server binary under /opt/bitpoll;
/// - the app probe, which needs those;
/// - the server's port, when something else on this host uses it.
fn host_specific(f: &serde_json::Value) -> bool {
    let field = |k: &str| f[k].as_str().unwrap_or_default();
    let (group, subject, message) = (field("group"), field("subject"), field("message"));
    match group {
        "account" => {
            ["user bitpoll", "group bitpoll"].contains(&subject)
                && message == "does not exist and service.create_user = false"
        }
        "python" => {
            subject == "/opt/bitpoll/venv/bin/python" && message == "is not an executable file"
        }
        "app" => subject == "/opt/bitpoll/src" && message.starts_with("cannot be read: "),
        "server" => {
            (subject == "/opt/bitpoll/venv/bin/gunicorn" && message == "is not an executable file")
                || subject == "--bind 127.0.0.1:3008"
        }
        _ => false,
    }
}

#[test]
fn check_finds_only_host_specific_problems_in_the_example_config() {
    crate::util::root_only!();
    let (_dir, config) = copy_of_example();
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&config)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings = report["findings"].as_array().expect("a findings array");
    let config_ok = findings
        .iter()
        .any(|f| f["group"] == "config" && f["severity"] == "ok" && f["message"] == "valid");
    assert!(config_ok, "the example is not a valid config:\n{report:#}");

    let problems: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["severity"] == "error" || f["severity"] == "warning")
        .collect();
    let other: Vec<&&serde_json::Value> = problems.iter().filter(|f| !host_specific(f)).collect();
    assert!(
        other.is_empty(),
        "findings that are not about this host:\n{other:#?}"
    );
    // On a host without /opt/bitpoll (any test machine), those are the errors, so the
    // exit status says "errors" for exactly them.
    if !Path::new("/opt/bitpoll").exists() {
        assert!(
            problems
                .iter()
                .any(|f| f["subject"] == "/opt/bitpoll/venv/bin/python"),
            "{report:#}"
        );
        assert_eq!(out.status.code(), Some(2), "{report:#}");
    }
}

#[test]
fn the_example_config_names_what_install_and_the_unit_need() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let cfg: toml::Table = toml::from_str(&text).unwrap();
    // The hardened unit cannot create the account at start: install declares it.
    assert_eq!(cfg["service"]["create_user"].as_bool(), Some(false));
    for cmd in ["check", "install", "systemctl enable --now bitpoll"] {
        assert!(
            text.contains(cmd),
            "the header tells the admin to run {cmd:?}"
        );
    }
}

/// The lines that say something: no comments, no blank lines, one space around `=`.
fn settings(toml: &str) -> Vec<String> {
    toml.lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn the_container_examples_are_one_valid_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container");
    let file = std::fs::read_to_string(root.join("launcher.toml")).unwrap();
    let manifest = std::fs::read_to_string(root.join("kubernetes/bitpoll.yaml")).unwrap();
    let start = manifest
        .find("launcher.toml: |\n")
        .expect("the ConfigMap holds launcher.toml")
        + "launcher.toml: |\n".len();
    let embedded: String = manifest[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or_default()))
        .collect();
    assert_eq!(
        settings(&file),
        settings(&embedded),
        "the ConfigMap and examples/container/launcher.toml say the same"
    );
    let dir =
        Dir(std::env::temp_dir().join(format!("blt-example-container-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.0.join("launcher.toml");
    std::fs::write(&config, &file).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["unit", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dir);
    // What the Containerfile copies from the repository exists.
    let containerfile = std::fs::read_to_string(root.join("Containerfile")).unwrap();
    for line in containerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        // Every source: the words between COPY and the destination.
        for from in &words[1..words.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(from).exists(),
                "{line}: {from}"
            );
        }
    }
    // Bitpoll at the pinned commit, never a branch.
    assert!(
        containerfile.contains("ARG BITPOLL_COMMIT=35b0236534fa181fd026436bd95fe7d0c60f37ba"),
        "the Containerfile does not fetch the pinned commit"
    );
}
