//! The secrets phase: the values the judgement allows, taken over from it once, and the
//! keys it says to generate, generated now (atomically, once: when another launcher won
//! the race, what that one wrote is used, under the same rules).

use std::path::PathBuf;

use anyhow::anyhow;
use tracing::info;

use launcher_config::GenerateKind;
use launcher_plan::judge::{SecretPlan, Start};
use launcher_plan::layout::{SECRET_FILE_MODE, SECRETS_DIR};
use launcher_plan::secret::{self, SecretValue};
use launcher_sys::files::{self, WriteError};
use launcher_sys::privs::Switched;

use super::Phase;
use super::account::Account;
use super::tree::DataTree;
use crate::exit::{self, Exit};

/// The secret values the app starts with, in config order. Only this phase makes them.
pub(super) struct Secrets {
    values: Vec<(String, SecretValue)>,
}

impl Secrets {
    pub fn values(&self) -> &[(String, SecretValue)] {
        &self.values
    }
}

/// The plans of `start` become values: it hands each over once.
pub(super) fn secrets(
    acting: &mut Switched<'_>,
    start: &mut Start,
    tree: &DataTree,
    account: &Account,
) -> Result<Secrets, Exit> {
    let phase = Phase::begin("secrets", "Loading secrets");
    let mut values = Vec::with_capacity(start.secrets.len());
    let mut problems = Vec::new();
    for plan in std::mem::take(&mut start.secrets) {
        match plan {
            SecretPlan::Use {
                name,
                value,
                origin,
            } => {
                info!(phase = "secrets", secret = %name, "secret {name}: {origin}");
                values.push((name, value));
            }
            SecretPlan::Generate { name, kind } => {
                match generate(acting, &name, kind, tree, account) {
                    Ok((value, how)) => {
                        info!(phase = "secrets", secret = %name, "secret {name}: {how}");
                        values.push((name, value));
                    }
                    Err(e) => problems.push(format!("secret {name}: {e}")),
                }
            }
            // Refused in the preflight, which stops the start.
            SecretPlan::Unavailable { name } => {
                problems.push(format!("secret {name} has no value"))
            }
        }
    }
    if !problems.is_empty() {
        return Err(Exit::new(exit::SYSTEM, anyhow!("{}", problems.join("\n")))
            .rule(launcher_plan::rule::Rule::SecretGenerateFailed));
    }
    phase.end(&format!(
        "{} secret{} loaded",
        values.len(),
        if values.len() == 1 { "" } else { "s" }
    ));
    Ok(Secrets { values })
}

/// How a generated secret was obtained, for the log.
enum Generated {
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
fn generate(
    acting: &mut Switched<'_>,
    name: &str,
    kind: GenerateKind,
    tree: &DataTree,
    account: &Account,
) -> Result<(SecretValue, Generated), String> {
    let owner = account.owner();
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
            let bytes = files::read_generated(acting, dir, &dir_path, name, owner.uid)
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
