//! The one way the binary reads its config file: through the trust rule (the file and
//! every directory and link on its path owned by root or the launching user and writable
//! by nobody else; see docs/security.md), as a regular file of at most
//! [`launcher_config::MAX_CONFIG_BYTES`], then validated by the config crate. Every
//! subcommand goes through [`load`], so none of them can read a config root should not
//! trust, hang on a FIFO or read a device without end.

use std::path::Path;

use launcher_config::{Config, ConfigError, MAX_CONFIG_BYTES};

/// Read and validate the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = launcher_sys::trust::read_trusted(path, MAX_CONFIG_BYTES, nix::unistd::geteuid())
        .map_err(|e| ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason: e.reason(),
            fix: e.fix(),
        })?;
    let cfg = launcher_config::from_bytes(path, &file.bytes)?;
    crate::observability::use_app_zone(&cfg);
    Ok(cfg)
}
