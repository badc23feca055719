//! The unit for non-NixOS hosts and the NixOS module share one hardening list, and the
//! unit `bitpoll-launcher unit` prints is valid and meets the security target.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `systemd-analyze security` exposure target, times ten.
const THRESHOLD: &str = "25";

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("blt-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("launcher.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[service]
user = "bitpoll"
create_user = false
data_dir = "/var/lib/bitpoll"
[app]
python = "/usr/bin/python3"
source_dir = "{root}/tests/demo-app"
[prepare]
compilemessages = false
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ credential = "fek" }}
[server]
command = ["/usr/bin/python3", "-m", "gunicorn"]
"#,
            root = ROOT
        ),
    )
    .unwrap();
    config
}

fn render_unit(dir: &Path) -> PathBuf {
    let config = write_config(dir);
    let out = Command::new(BIN)
        .args(["unit", "--config"])
        .arg(&config)
        .args(["--binary", BIN, "--credential", "fek=/etc/bitpoll/fek"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = dir.join("bitpoll.service");
    std::fs::write(&unit, &out.stdout).unwrap();
    unit
}

/// The hardening table as `Directive=value` lines, rendered the way both readers do.
fn hardening_lines_from(json: &serde_json::Value) -> Vec<String> {
    let mut lines = Vec::new();
    for (k, v) in json["Service"].as_object().expect("a Service table") {
        let scalar = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match v {
            serde_json::Value::Array(items) => {
                lines.extend(items.iter().map(|i| format!("{k}={}", scalar(i))))
            }
            v => lines.push(format!("{k}={}", scalar(v))),
        }
    }
    lines
}

#[test]
fn the_module_reads_the_same_hardening_file_the_unit_is_rendered_from() {
    let module = std::fs::read_to_string(Path::new(ROOT).join("nixos/module.nix")).unwrap();
    assert!(
        module.contains("builtins.fromTOML (builtins.readFile ./hardening.toml)"),
        "nixos/module.nix must take its hardening from nixos/hardening.toml"
    );
    assert!(
        module.contains("serviceConfig = hardening //"),
        "the module must apply that list to the unit"
    );
    let src = std::fs::read_to_string(Path::new(ROOT).join("src/unit.rs")).unwrap();
    assert!(
        src.contains("include_str!(\"../nixos/hardening.toml\")"),
        "the unit renderer must embed the same file"
    );

    // What Nix reads, compared with what ends up in the rendered unit.
    let toml_text = std::fs::read_to_string(Path::new(ROOT).join("nixos/hardening.toml")).unwrap();
    let as_rust: toml::Table = toml::from_str(&toml_text).unwrap();
    let as_json = serde_json::to_value(&as_rust).unwrap();
    let mut expected = hardening_lines_from(&as_json);
    if let Ok(out) = Command::new("nix-instantiate")
        .current_dir(ROOT)
        .args([
            "--eval",
            "--strict",
            "--json",
            "-E",
            "builtins.fromTOML (builtins.readFile ./nixos/hardening.toml)",
        ])
        .output()
    {
        assert!(
            out.status.success(),
            "nix-instantiate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let as_nix: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            as_nix, as_json,
            "Nix and the launcher read nixos/hardening.toml differently"
        );
    } else {
        eprintln!("nix-instantiate not installed: compared with the TOML parser only");
    }
    let dir = Dir::new("same");
    let unit = std::fs::read_to_string(render_unit(&dir.0)).unwrap();
    expected.sort();
    for line in expected {
        assert!(
            unit.lines().any(|l| l == line),
            "rendered unit lacks hardening line {line:?}:\n{unit}"
        );
    }
}

#[test]
fn the_rendered_unit_verifies_and_meets_the_security_target() {
    let dir = Dir::new("verify");
    let unit = render_unit(&dir.0);
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    let security = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=true",
            &format!("--threshold={THRESHOLD}"),
        ])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall line")
        .to_string();
    eprintln!("{overall}");
    assert!(
        security.status.success(),
        "exposure above {THRESHOLD}/10:\n{text}"
    );
}

#[test]
fn sysusers_and_tmpfiles_entries_match_the_config() {
    let dir = Dir::new("sysusers");
    let config = write_config(&dir.0);
    let run = |sub: &str| {
        let out = Command::new(BIN)
            .args([sub, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run("sysusers").contains("u bitpoll - \"Bitpoll service\" /var/lib/bitpoll -\n"));
    assert!(run("tmpfiles").contains("d /var/lib/bitpoll 0750 bitpoll bitpoll -\n"));
}

/// nix-instantiate is required unless BITPOLL_SKIP_NIX=1 (scripts/test.sh installs it).
fn nix_instantiate() -> Option<&'static str> {
    let present = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match (present, std::env::var_os("BITPOLL_SKIP_NIX").is_some()) {
        (true, _) => Some("nix-instantiate"),
        (false, true) => None,
        (false, false) => panic!(
            "nix-instantiate is missing: apt-get install nix-bin (or set BITPOLL_SKIP_NIX=1)"
        ),
    }
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = nix_instantiate() else {
        eprintln!("SKIP: BITPOLL_SKIP_NIX=1");
        return;
    };
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from(ROOT)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".nix") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() >= 4,
        "expected the flake, the module, the VM test and the example: {files:?}"
    );
    for f in files {
        let out = Command::new(nix).arg("--parse").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
