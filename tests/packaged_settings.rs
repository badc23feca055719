//! The settings_local.py the Nix package ships (nixos/pkgs/bitpoll/settings_local.py),
//! loaded by the demo venv's Python and Django: its logging turns a foreign Host header
//! into one line, and BITPOLL_SERVE_STATIC adds WhiteNoise (the container image).

use std::path::Path;
use std::process::Command;

const SETTINGS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/nixos/pkgs/bitpoll/settings_local.py"
);
const PYTHON: &str = "/opt/bitpoll-launcher-demo/venv/bin/python";

fn ensure_venv() {
    if Path::new(PYTHON).is_file() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup-venv.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "tests/setup-venv.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What Django does with a request whose Host is not allowed (django.core.handlers.exception
/// logs the DisallowedHost under django.security.DisallowedHost with the exception).
const SCRIPT: &str = r#"
import importlib.util, logging.config, sys
spec = importlib.util.spec_from_file_location("settings_local", sys.argv[1])
s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(s)
logging.config.dictConfig(s.LOGGING)
from django.core.exceptions import DisallowedHost
for _ in range(2):
    try:
        raise DisallowedHost("Invalid HTTP_HOST header: 'foreign.example'.")
    except DisallowedHost as e:
        logging.getLogger("django.security.DisallowedHost").error(str(e), exc_info=e, extra={"status_code": 400})
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("django.request").error("Internal Server Error: /", exc_info=True)
"#;

#[test]
fn the_packaged_settings_log_a_foreign_host_in_one_line_and_keep_500_tracebacks() {
    ensure_venv();
    let out = Command::new(PYTHON)
        .args(["-c", SCRIPT, SETTINGS])
        .env_clear()
        .env("BITPOLL_DATA_DIR", "/nonexistent/data")
        .env(
            "BITPOLL_SECRET_KEY",
            "test-only-secret-key-of-reasonable-length-0123456789",
        )
        .env(
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let host_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("foreign.example"))
        .collect();
    assert_eq!(
        host_lines,
        ["ERROR django.security.DisallowedHost: Invalid HTTP_HOST header: 'foreign.example'."; 2],
        "{stderr}"
    );
    // Only the 500's traceback is there: exactly one.
    assert_eq!(stderr.matches("Traceback").count(), 1, "{stderr}");
    assert!(stderr.contains("ValueError: boom"), "{stderr}");
}

/// MIDDLEWARE_LOCAL of the packaged settings under BITPOLL_SERVE_STATIC=`value` (unset for
/// None), or the error that stopped the import.
fn middleware_local(value: Option<&str>) -> Result<String, String> {
    ensure_venv();
    let script = r#"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("settings_local", sys.argv[1])
s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(s)
print(s.MIDDLEWARE_LOCAL)
"#;
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", script, SETTINGS])
        .env_clear()
        .env("BITPOLL_DATA_DIR", "/nonexistent/data")
        .env(
            "BITPOLL_SECRET_KEY",
            "test-only-secret-key-of-reasonable-length-0123456789",
        )
        .env(
            "BITPOLL_FIELD_ENCRYPTION_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
    if let Some(v) = value {
        cmd.env("BITPOLL_SERVE_STATIC", v);
    }
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_packaged_settings_serve_static_files_only_when_asked() {
    assert_eq!(middleware_local(None).unwrap(), "[]");
    assert_eq!(middleware_local(Some("false")).unwrap(), "[]");
    assert_eq!(
        middleware_local(Some("true")).unwrap(),
        "['whitenoise.middleware.WhiteNoiseMiddleware']"
    );
    let err = middleware_local(Some("sometimes")).unwrap_err();
    assert!(
        err.contains("BITPOLL_SERVE_STATIC='sometimes' is not a boolean"),
        "{err}"
    );
}
