//! The unit for non-NixOS hosts and the NixOS module share one hardening list and one
//! table of limits, and the units `bitpoll-launcher unit` prints, in both modes and with
//! socket activation, are valid and meet their security targets.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `systemd-analyze security` exposure targets, times ten: the privileged unit (the
/// launcher starts as root) and the unprivileged one (started as the service user).
const THRESHOLD_PRIVILEGED: u32 = 20;
const THRESHOLD_UNPRIVILEGED: u32 = 12;

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

/// `bitpoll-launcher unit --config <dir>/launcher.toml ARGS...`, written to
/// `<dir>/<file>`.
fn render_unit_with(dir: &Path, args: &[&str], file: &str) -> PathBuf {
    let config = write_config(dir);
    let out = Command::new(BIN)
        .args(["unit", "--config"])
        .arg(&config)
        .args(["--binary", BIN, "--credential", "fek=/etc/bitpoll/fek"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = dir.join(file);
    std::fs::write(&unit, &out.stdout).unwrap();
    unit
}

fn render_unit(dir: &Path) -> PathBuf {
    render_unit_with(dir, &[], "bitpoll.service")
}

/// A table of the hardening file as `Directive=value` lines, rendered the way both readers
/// do.
fn hardening_lines_from(json: &serde_json::Value, table: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (k, v) in json[table].as_object().expect("a table of that name") {
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
    assert!(
        module.contains("hardeningFile.Service")
            && module.contains(
                "(if cfg.unprivileged then hardeningFile.Unprivileged else hardeningFile.Privileged)"
            ),
        "the module must add the mode's table to the shared one"
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
    for (mode, args) in [
        ("Privileged", &[][..]),
        ("Unprivileged", &["--unprivileged"][..]),
    ] {
        let unit =
            std::fs::read_to_string(render_unit_with(&dir.0, args, "bitpoll.service")).unwrap();
        let mut expected = hardening_lines_from(&as_json, "Service");
        expected.extend(hardening_lines_from(&as_json, mode));
        for line in expected {
            assert!(
                unit.lines().any(|l| l == line),
                "the {mode} unit lacks hardening line {line:?}:\n{unit}"
            );
        }
        let other = if mode == "Privileged" {
            "Unprivileged"
        } else {
            "Privileged"
        };
        for line in hardening_lines_from(&as_json, other) {
            if !hardening_lines_from(&as_json, mode).contains(&line) {
                assert!(
                    !unit.lines().any(|l| l == line),
                    "the {mode} unit has the {other} line {line:?}"
                );
            }
        }
    }
}

#[test]
fn the_module_renders_the_unit_table_as_the_launcher_does() {
    let module = std::fs::read_to_string(Path::new(ROOT).join("nixos/module.nix")).unwrap();
    for want in [
        "builtins.fromTOML (builtins.readFile ./unit-defaults.toml)",
        "import ./unit-directives.nix cfg.settings.unit",
        "unit = mapAttrs (_: mkDefault) unitDefaults;",
        "serviceConfig = hardening // unitDirectives.serviceConfig //",
        "unitConfig = unitDirectives.unitConfig //",
    ] {
        assert!(module.contains(want), "nixos/module.nix lacks {want:?}");
    }
    let Some(nix) = nix_instantiate() else {
        crate::util::skip("BITPOLL_SKIP_NIX=1");
        return;
    };
    let dir = Dir::new("limits");
    let extra = "restart_steps = 3\nrestart_max_delay_sec = 60\nmemory_max = \"2G\"\n";
    let config = write_config(&dir.0);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[unit]\n{extra}")).unwrap();
    let out = Command::new(BIN)
        .args(["unit", "--config"])
        .arg(&config)
        .args(["--binary", BIN, "--credential", "fek=/etc/bitpoll/fek"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = String::from_utf8(out.stdout).unwrap();
    let expr = format!(
        "import ./nixos/unit-directives.nix (builtins.fromTOML (builtins.readFile ./nixos/unit-defaults.toml) // builtins.fromTOML ''{extra}'')"
    );
    let out = Command::new(nix)
        .current_dir(ROOT)
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_nix: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (unit_section, service) = unit.split_once("\n[Service]\n").unwrap();
    let mut seen = 0;
    for (table, section) in [("unitConfig", unit_section), ("serviceConfig", service)] {
        for line in hardening_lines_from(&from_nix, table) {
            assert!(
                section.lines().any(|l| l == line),
                "the module renders {line:?} ({table}), the launcher's unit does not:\n{unit}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 9, "every key of the [unit] table, steps included");
}

/// `systemd-analyze verify` of the unit files, which must pass without a word.
fn verify(units: &[&Path]) {
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {units:?} failed:\n{stderr}"
    );
}

/// `systemd-analyze security --offline=true --threshold=N`: fails above N/10.
fn assert_exposure_at_most(unit: &Path, threshold: u32) {
    let security = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=true",
            &format!("--threshold={threshold}"),
        ])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall line")
        .to_string();
    eprintln!("{}: {overall}", unit.display());
    assert!(
        security.status.success(),
        "{}: exposure above {threshold}/10:\n{text}",
        unit.display()
    );
}

#[test]
fn the_privileged_unit_verifies_and_meets_its_security_target() {
    let dir = Dir::new("verify");
    let unit = render_unit(&dir.0);
    verify(&[&unit]);
    assert_exposure_at_most(&unit, THRESHOLD_PRIVILEGED);
}

#[test]
fn the_unprivileged_unit_verifies_and_meets_its_security_target() {
    let dir = Dir::new("unpriv");
    let unit = render_unit_with(&dir.0, &["--unprivileged"], "bitpoll.service");
    verify(&[&unit]);
    assert_exposure_at_most(&unit, THRESHOLD_UNPRIVILEGED);
}

#[test]
fn socket_activated_units_verify_in_both_modes_with_tcp_and_unix_sockets() {
    for (listen, unprivileged) in [("127.0.0.1:8000", true), ("/run/bitpoll/http.sock", false)] {
        let dir = Dir::new("socket");
        let mut args = vec!["--socket", "--listen", listen];
        if unprivileged {
            args.push("--unprivileged");
        }
        let service = render_unit_with(&dir.0, &args, "bitpoll.service");
        let socket = render_unit_with(
            &dir.0,
            &["--socket-unit", "--listen", listen],
            "bitpoll.socket",
        );
        verify(&[&service, &socket]);
        let text = std::fs::read_to_string(&socket).unwrap();
        assert!(
            text.lines().any(|l| l == format!("ListenStream={listen}")),
            "{text}"
        );
        let threshold = if unprivileged {
            THRESHOLD_UNPRIVILEGED
        } else {
            THRESHOLD_PRIVILEGED
        };
        assert_exposure_at_most(&service, threshold);
    }
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
        crate::util::skip("BITPOLL_SKIP_NIX=1");
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
