//! The secrets: files and credentials read with the caller's own rights (root's, for
//! `run`), generated ones from the data directory's secrets/ as the service user.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use launcher_config::{Config, SecretSource};
use launcher_plan::facts::{Origin, SecretFact, SecretFailure, SecretState, View};
use launcher_plan::layout::SECRETS_DIR;
use launcher_plan::secret;
use launcher_sys::files::SecretFileError;
use launcher_sys::privs::{Identity, Kernel};

use super::Options;

/// Where credentials are: `$CREDENTIALS_DIRECTORY` inside the unit; outside it (check,
/// manage), the running unit's own directory `/run/credentials/<unit>` (readable by root).
pub(super) fn credentials_dir(opts: &Options<'_>) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        return Some(PathBuf::from(dir));
    }
    if opts.view == View::Service {
        return None;
    }
    let unit = if opts.unit.contains('.') {
        opts.unit.to_string()
    } else {
        format!("{}.service", opts.unit)
    };
    let dir = PathBuf::from("/run/credentials").join(unit);
    dir.is_dir().then_some(dir)
}

/// A source as the admin wrote it, for messages.
pub fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::File(p) => format!("file {}", p.display()),
        SecretSource::Credential(id) => format!("credential {id}"),
        SecretSource::Generate(kind) => format!("generate {kind}"),
    }
}

/// A secret the admin placed: a file or a credential, read with the caller's own rights
/// (root's, for `run`). None for a generated one, which lives in the data directory.
pub(super) fn read_source(
    source: &SecretSource,
    credentials_dir: Option<&Path>,
) -> Option<SecretState> {
    match source {
        SecretSource::File(path) => Some(read_file(path, Origin::File(path.clone()))),
        SecretSource::Credential(id) => Some(match credentials_dir {
            Some(dir) => read_file(&dir.join(id), Origin::Credential(dir.join(id))),
            None => SecretState::Failed {
                failure: SecretFailure::NoCredentialsDirectory,
                message: "CREDENTIALS_DIRECTORY is not set, so systemd passed no credentials"
                    .into(),
            },
        }),
        SecretSource::Generate(_) => None,
    }
}

/// Every secret in config order: those `from_root` read already, and the generated ones
/// from the data directory's secrets/.
pub(super) fn secrets<K: Kernel>(
    ids: &mut Identity<K>,
    cfg: &Config,
    from_root: &mut [Option<SecretState>],
    secrets_dir: Option<(BorrowedFd<'_>, PathBuf)>,
    owner_uid: u32,
) -> Vec<SecretFact> {
    cfg.secrets
        .iter()
        .zip(from_root.iter_mut())
        .map(|((name, source), read)| {
            let state = match (read.take(), source) {
                (Some(state), _) => state,
                (None, SecretSource::File(_) | SecretSource::Credential(_)) => {
                    unreachable!("read_source reads every file and credential")
                }
                (None, SecretSource::Generate(kind)) => {
                    let path = cfg.service.data_dir.join(SECRETS_DIR).join(name);
                    match &secrets_dir {
                        None => SecretState::NotGenerated { kind: *kind, path },
                        Some((dir, dir_path)) => {
                            match launcher_sys::files::read_generated(
                                ids,
                                *dir,
                                dir_path,
                                name,
                                owner_uid.into(),
                            ) {
                                Ok(None) => SecretState::NotGenerated { kind: *kind, path },
                                Ok(Some(bytes)) => match secret::from_bytes(bytes.to_vec())
                                    .and_then(|v| secret::check_kind(*kind, &v).map(|()| v))
                                {
                                    Ok(value) => SecretState::Read {
                                        value,
                                        origin: Origin::Generated(path),
                                    },
                                    Err(e) => SecretState::Failed {
                                        failure: SecretFailure::WrongKind,
                                        message: format!(
                                            "{} {e}; it was not written by the launcher",
                                            path.display()
                                        ),
                                    },
                                },
                                Err(e) => file_failure(&e),
                            }
                        }
                    }
                }
            };
            SecretFact {
                name: name.clone(),
                source: describe(source),
                state,
            }
        })
        .collect()
}

/// Every secret in config order when the data directory could not be looked at: those
/// `from_root` read, and the generated ones not read for `error`.
pub(super) fn secrets_not_read(
    cfg: &Config,
    from_root: Vec<Option<SecretState>>,
    error: &str,
) -> Vec<SecretFact> {
    cfg.secrets
        .iter()
        .zip(from_root)
        .map(|((name, source), read)| SecretFact {
            name: name.clone(),
            source: describe(source),
            state: read.unwrap_or_else(|| SecretState::Failed {
                failure: SecretFailure::Io,
                message: format!("not read: {error}"),
            }),
        })
        .collect()
}

fn read_file(path: &Path, origin: Origin) -> SecretState {
    match launcher_sys::files::read_secret_file(path) {
        Err(e) => file_failure(&e),
        Ok(bytes) => match secret::from_bytes(bytes.to_vec()) {
            Ok(value) => SecretState::Read { value, origin },
            Err(e) => SecretState::Failed {
                failure: match e {
                    secret::SecretProblem::KnownSample(_) => SecretFailure::KnownSample,
                    _ => SecretFailure::Invalid,
                },
                message: format!("{} {e}", path.display()),
            },
        },
    }
}

/// A refused secret file, by kind.
fn file_failure(e: &SecretFileError) -> SecretState {
    use SecretFileError as E;
    use launcher_sys::trust::TrustError as T;
    let failure = match e {
        E::Untrusted(T::Missing { .. }) => SecretFailure::Missing,
        E::Untrusted(T::Open {
            source: nix::errno::Errno::EACCES,
            ..
        })
        | E::Open {
            source: nix::errno::Errno::EACCES,
            ..
        } => SecretFailure::PermissionDenied,
        E::Untrusted(T::Open { .. } | T::Read { .. }) | E::Open { .. } | E::Read { .. } => {
            SecretFailure::Io
        }
        E::Untrusted(T::TooLarge { .. }) | E::TooLarge { .. } => SecretFailure::Invalid,
        E::Untrusted(T::Writable {
            file, component, ..
        }) if file == component => SecretFailure::Exposed,
        E::WorldReadable { .. } | E::NotPrivate { .. } => SecretFailure::Exposed,
        E::Untrusted(_)
        | E::Symlink { .. }
        | E::NotRegular { .. }
        | E::HardLinked { .. }
        | E::UntrustedOwner { .. } => SecretFailure::Untrusted,
    };
    SecretState::Failed {
        failure,
        message: e.to_string(),
    }
}
