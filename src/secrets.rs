//! Load every configured secret: from files and systemd credentials (read as root before
//! the privilege drop), or generated once into the data directory and reused afterwards.
//! All problems are collected and reported together; no message contains a secret value.

use std::path::{Path, PathBuf};

use launcher_config::{Config, GenerateKind, SecretSource};
use launcher_plan::layout::{SECRET_FILE_MODE, SECRETS_DIR};
use launcher_plan::secret::{self, SecretValue};
use launcher_sys::files::{self, WriteError};
use launcher_sys::tree::{DataTree, Owner};

/// One secret that could not be loaded.
#[derive(Debug)]
pub struct Problem {
    pub name: String,
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret {} ({}): {}",
            self.name, self.source, self.message
        )
    }
}

/// Every problem at once.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        write!(f, "{n} secret{} refused:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// How a secret was obtained, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Credential(PathBuf),
    Generated { path: PathBuf, new: bool },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Credential(p) => write!(f, "credential {}", p.display()),
            Origin::Generated { path, new: true } => {
                write!(f, "newly generated into {}", path.display())
            }
            Origin::Generated { path, new: false } => {
                write!(f, "generated earlier, kept in {}", path.display())
            }
        }
    }
}

pub struct Loaded {
    pub name: String,
    pub value: SecretValue,
    pub origin: Origin,
}

/// A source as the admin wrote it, for messages.
fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::File(p) => format!("file {}", p.display()),
        SecretSource::Credential(id) => format!("credential {id}"),
        SecretSource::Generate(kind) => format!("generate {kind}"),
    }
}

/// Where a credential lives: `$CREDENTIALS_DIRECTORY/<id>`.
pub fn credential_path(credentials_dir: Option<&Path>, id: &str) -> Result<PathBuf, String> {
    match credentials_dir {
        Some(dir) => Ok(dir.join(id)),
        None => Err(format!(
            "CREDENTIALS_DIRECTORY is not set, so systemd passed no credentials: add `LoadCredential={id}:/path/to/file` to the unit (or use a file source)"
        )),
    }
}

/// Load all secrets. `database_exists` guards against generating a Fernet key for data
/// that was encrypted with another one.
pub fn load(
    cfg: &Config,
    tree: &DataTree,
    owner: Owner,
    credentials_dir: Option<&Path>,
    database_exists: Option<&str>,
) -> Result<Vec<Loaded>, Problems> {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for (name, source) in &cfg.secrets {
        let described = describe(source);
        let result = match source {
            SecretSource::File(path) => read_file(path).map(|v| (v, Origin::File(path.clone()))),
            SecretSource::Credential(id) => credential_path(credentials_dir, id)
                .and_then(|path| read_file(&path).map(|v| (v, Origin::Credential(path)))),
            SecretSource::Generate(kind) => generated(name, *kind, tree, owner, database_exists),
        };
        match result {
            Ok((value, origin)) => loaded.push(Loaded {
                name: name.clone(),
                value,
                origin,
            }),
            Err(message) => problems.push(Problem {
                name: name.clone(),
                source: described,
                message,
            }),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Problems(problems))
    }
}

fn read_file(path: &Path) -> Result<SecretValue, String> {
    let bytes = files::read_secret_file(path).map_err(|e| e.to_string())?;
    secret::from_bytes(bytes.to_vec()).map_err(|e| format!("{} {e}", path.display()))
}

fn generated(
    name: &str,
    kind: GenerateKind,
    tree: &DataTree,
    owner: Owner,
    database_exists: Option<&str>,
) -> Result<(SecretValue, Origin), String> {
    let dir = tree.dir(SECRETS_DIR);
    let dir_path = tree.path_of(SECRETS_DIR);
    let path = dir_path.join(name);
    let existing = |bytes: zeroize::Zeroizing<Vec<u8>>| -> Result<SecretValue, String> {
        let value = secret::from_bytes(bytes.to_vec()).map_err(|e| {
            format!("{} {e}; it was not written by the launcher: remove it to have a new one generated (only if no data depends on it)", path.display())
        })?;
        secret::check_kind(kind, &value).map_err(|e| format!("{} {e}", path.display()))?;
        Ok(value)
    };
    if let Some(bytes) =
        files::read_generated(dir, &dir_path, name, owner.uid).map_err(|e| e.to_string())?
    {
        return existing(bytes).map(|v| {
            (
                v,
                Origin::Generated {
                    path: path.clone(),
                    new: false,
                },
            )
        });
    }
    if kind == GenerateKind::FernetKey {
        if let Some(evidence) = database_exists {
            return Err(format!(
                "refusing to generate a new Fernet key because the database already exists ({evidence}): data encrypted with the old key would become unreadable. Restore the old key to {} (mode 0600, owned by the service user) or provide it with a file or credential source",
                path.display()
            ));
        }
    }
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
        Ok(()) => Ok((value, Origin::Generated { path, new: true })),
        // Another launcher won the race: use what it wrote.
        Err(WriteError::Exists { .. }) => {
            match files::read_generated(dir, &dir_path, name, owner.uid)
                .map_err(|e| e.to_string())?
            {
                Some(bytes) => existing(bytes).map(|v| (v, Origin::Generated { path, new: false })),
                None => Err(format!("{} vanished while being created", path.display())),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A secret as a read-only look finds it (for `check` and `manage`, which never write).
pub enum Observed {
    Loaded(Loaded),
    /// Not generated yet; the first `run` will.
    WillGenerate(GenerateKind),
}

/// Where credentials are: `$CREDENTIALS_DIRECTORY` inside the unit; outside it, the
/// running unit's own directory `/run/credentials/<unit>` (readable by root).
pub fn credentials_dir_for(unit: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        return Some(PathBuf::from(dir));
    }
    let unit = if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    };
    let dir = PathBuf::from("/run/credentials").join(unit);
    dir.is_dir().then_some(dir)
}

/// Read every secret without creating anything. `secrets_dir` is the data directory's
/// secrets/ descriptor when it exists.
pub fn observe(
    cfg: &Config,
    secrets_dir: Option<(std::os::fd::BorrowedFd<'_>, &Path)>,
    owner_uid: launcher_sys::Uid,
    credentials_dir: Option<&Path>,
    database_exists: Option<&str>,
) -> Vec<(String, String, Result<Observed, String>)> {
    let mut out = Vec::new();
    for (name, source) in &cfg.secrets {
        let described = describe(source);
        let result = match source {
            SecretSource::File(path) => read_file(path).map(|value| {
                Observed::Loaded(Loaded {
                    name: name.clone(),
                    value,
                    origin: Origin::File(path.clone()),
                })
            }),
            SecretSource::Credential(id) => credential_path(credentials_dir, id).and_then(|path| {
                read_file(&path).map(|value| {
                    Observed::Loaded(Loaded {
                        name: name.clone(),
                        value,
                        origin: Origin::Credential(path),
                    })
                })
            }),
            SecretSource::Generate(kind) => match secrets_dir {
                None => match (kind, database_exists) {
                    (GenerateKind::FernetKey, Some(evidence)) => Err(format!(
                        "no key has been generated although the database exists ({evidence}); the launcher will refuse to generate one: restore the key that encrypted the data"
                    )),
                    _ => Ok(Observed::WillGenerate(*kind)),
                },
                Some((dir, dir_path)) => {
                    match files::read_generated(dir, dir_path, name, owner_uid) {
                        Err(e) => Err(e.to_string()),
                        Ok(Some(bytes)) => secret::from_bytes(bytes.to_vec())
                            .and_then(|v| secret::check_kind(*kind, &v).map(|()| v))
                            .map(|value| {
                                Observed::Loaded(Loaded {
                                    name: name.clone(),
                                    value,
                                    origin: Origin::Generated {
                                        path: dir_path.join(name),
                                        new: false,
                                    },
                                })
                            })
                            .map_err(|e| format!("{} {e}", dir_path.join(name).display())),
                        Ok(None) => match (kind, database_exists) {
                            (GenerateKind::FernetKey, Some(evidence)) => Err(format!(
                                "no key in {} although the database exists ({evidence}); the launcher will refuse to generate one: restore the key that encrypted the data",
                                dir_path.join(name).display()
                            )),
                            _ => Ok(Observed::WillGenerate(*kind)),
                        },
                    }
                }
            },
        };
        out.push((name.clone(), described, result));
    }
    out
}
