//! The real Bitpoll for tests: the upstream snapshot beside the checkout
//! (`../shared/upstream/bitpoll-35b0236.tar.gz`, or the folder `BITPOLL_UPSTREAM_DIR`
//! names), installed by tests/setup-bitpoll.sh as a root-owned, read-only source tree and
//! a venv under /opt (cached across runs).
//!
//! Without the snapshot (a clone outside the project's machines) [`install`] skips the test
//! (crate::util::skip: one line saying why, a failure under `CI=true`) and returns None.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const TARBALL: &str = "bitpoll-35b0236.tar.gz";
const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup-bitpoll.sh");
/// nixos/pkgs/bitpoll/build-assets.sh: the build-time assets step.
pub const BUILD_ASSETS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/nixos/pkgs/bitpoll/build-assets.sh"
);

/// One install made by tests/setup-bitpoll.sh.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Holds `src/` and `venv/`.
    pub dir: PathBuf,
}

impl Upstream {
    /// The app source: manage.py, bitpoll/ (with the packaged settings_local.py), locale/.
    pub fn source(&self) -> PathBuf {
        self.dir.join("src")
    }

    pub fn venv(&self) -> PathBuf {
        self.dir.join("venv")
    }

    pub fn python(&self) -> PathBuf {
        self.venv().join("bin/python")
    }
}

/// The folder that should hold the snapshot.
pub fn snapshot_dir() -> PathBuf {
    match std::env::var_os("BITPOLL_UPSTREAM_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/upstream"),
    }
}

static INSTALL: OnceLock<Result<Upstream, String>> = OnceLock::new();

/// The install (made or checked once per test process), or None after skipping the test
/// for why the real Bitpoll is not here. Panics when the install fails.
pub fn install() -> Option<Upstream> {
    match INSTALL.get_or_init(make) {
        Ok(up) => Some(up.clone()),
        Err(why) => {
            crate::util::skip(why);
            None
        }
    }
}

fn make() -> Result<Upstream, String> {
    let tarball = snapshot_dir().join(TARBALL);
    if !tarball.is_file() {
        return Err(format!(
            "the real Bitpoll's snapshot {} is absent (it lives in ../shared/upstream beside the project's checkout; BITPOLL_UPSTREAM_DIR names another folder)",
            tarball.display()
        ));
    }
    let out = Command::new("bash")
        .arg(SETUP)
        .env("BITPOLL_UPSTREAM_DIR", snapshot_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SETUP}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{SETUP} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let up = Upstream { dir };
    assert!(
        up.source().join("manage.py").is_file() && up.python().is_file(),
        "{SETUP} printed {}, which holds no src/manage.py and venv/bin/python",
        up.dir.display()
    );
    Ok(up)
}
