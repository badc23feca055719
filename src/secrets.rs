//! Generating a secret once: the one secret action `run` takes. Which secrets are read,
//! used or generated is judged in launcher_plan::judge::secrets from what the observer
//! read as root (crate::observe); this writes a new one atomically and, when another
//! launcher won the race, uses what that one wrote.

use std::path::PathBuf;

use launcher_config::GenerateKind;
use launcher_plan::layout::{SECRET_FILE_MODE, SECRETS_DIR};
use launcher_plan::secret::{self, SecretValue};
use launcher_sys::files::{self, WriteError};
use launcher_sys::tree::{DataTree, Owner};

/// How a generated secret was obtained, for the log.
pub enum Generated {
    New(PathBuf),
    /// Another launcher wrote it first.
    Existing(PathBuf),
}

impl std::fmt::Display for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Generated::New(p) => write!(f, "newly generated into {}", p.display()),
            Generated::Existing(p) => write!(f, "generated earlier, kept in {}", p.display()),
        }
    }
}

/// Generate `name` of `kind` into the secrets directory (0600, owned by the service user).
pub fn generate(
    name: &str,
    kind: GenerateKind,
    tree: &DataTree,
    owner: Owner,
) -> Result<(SecretValue, Generated), String> {
    let dir = tree.dir(SECRETS_DIR);
    let dir_path = tree.path_of(SECRETS_DIR);
    let path = dir_path.join(name);
    let mut rng_error = None;
    let value = secret::generate(kind, |buf| {
        if let Err(e) = launcher_sys::random_bytes(buf) {
            rng_error = Some(e);
        }
    });
    if let Some(e) = rng_error {
        return Err(format!("cannot read random bytes from /dev/urandom: {e}"));
    }
    let chown = owner.privileged.then_some((owner.uid, owner.gid));
    match files::write_atomic(
        dir,
        &dir_path,
        name,
        value.expose().as_bytes(),
        SECRET_FILE_MODE,
        chown,
        false,
    ) {
        Ok(()) => Ok((value, Generated::New(path))),
        // Another launcher won the race: use what it wrote, under the same rules.
        Err(WriteError::Exists { .. }) => {
            let bytes = files::read_generated(dir, &dir_path, name, owner.uid)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} vanished while being created", path.display()))?;
            let value = secret::from_bytes(bytes.to_vec())
                .and_then(|v| secret::check_kind(kind, &v).map(|()| v))
                .map_err(|e| format!("{} {e}", path.display()))?;
            Ok((value, Generated::Existing(path)))
        }
        Err(e) => Err(e.to_string()),
    }
}
