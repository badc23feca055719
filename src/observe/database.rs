//! The database as far as the launcher sees it without starting Django: the SQLite file
//! and what it records, or PostgreSQL on the launcher's own session.

use std::os::unix::fs::MetadataExt;

use launcher_config::{Config, Database};
use launcher_plan::facts::*;
use launcher_plan::postgres::Server;
use launcher_plan::secret;
use launcher_sys::privs::{Identity, Kernel};

/// The secret that holds the database password.
pub const DB_PASSWORD: &str = "BITPOLL_DB_PASSWORD";

/// The database password as read, when configured and readable.
pub fn db_password(facts: &Facts) -> Option<&secret::SecretValue> {
    read_password(&facts.secrets)
}

fn read_password(secrets: &[SecretFact]) -> Option<&secret::SecretValue> {
    secrets
        .iter()
        .find(|s| s.name == DB_PASSWORD)
        .and_then(|s| match &s.state {
            SecretState::Read { value, .. } => Some(value),
            _ => None,
        })
}

/// PostgreSQL, one attempt, as `run` would connect: the service user's identity over a
/// Unix socket, the password secret as read.
pub(super) fn postgresql<K: Kernel>(
    ids: &mut Identity<K>,
    server: &Server,
    secrets: &[SecretFact],
    account: &AccountFacts,
    euid: u32,
    observer: Observer,
) -> PostgresFacts {
    let not = |why: String| PostgresFacts {
        server: server.to_string(),
        state: PostgresState::NotObserved(why),
    };
    if let Some(s) = secrets.iter().find(|s| s.name == DB_PASSWORD) {
        if !matches!(s.state, SecretState::Read { .. }) {
            return not(format!(
                "the password secret {DB_PASSWORD} could not be read here"
            ));
        }
    }
    if server.socket_path().is_some() && observer == Observer::Other {
        return not(format!(
            "over a Unix socket the server would see uid {euid}, not the service user; run check as root"
        ));
    }
    let login = crate::postgres::Login {
        password: read_password(secrets),
        peer: super::account::user_ids(account).filter(|_| ids.privileged()),
        name: launcher_plan::postgres::instance_name(&launcher_sys::hostname(), std::process::id()),
    };
    crate::postgres::observe_once(ids, server, &login)
}

/// The SQLite database: what the file is, and which migrations it records. (PostgreSQL
/// is looked at by [`postgresql`] or by `run` itself.)
pub(super) fn database(cfg: &Config) -> DatabaseFacts {
    let Database::Sqlite { path } = &cfg.database else {
        return DatabaseFacts::default();
    };
    let meta = std::fs::symlink_metadata(path);
    let kind = match &meta {
        Err(_) => FileKind::Missing,
        Ok(m) if m.file_type().is_symlink() => FileKind::Symlink,
        Ok(m) if m.is_file() => FileKind::Regular,
        Ok(m) if m.is_dir() => FileKind::Directory,
        Ok(_) => FileKind::Other,
    };
    let (size, links) = meta.as_ref().map_or((0, 0), |m| (m.size(), m.nlink()));
    let applied = if kind == FileKind::Regular && links == 1 {
        crate::sqlite::applied_migrations(path)
    } else {
        Err(format!("{} is not a plain database file", path.display()))
    };
    DatabaseFacts {
        sqlite: Some(SqliteFacts {
            path: path.clone(),
            kind,
            size,
            links,
            applied,
        }),
        postgresql: None,
    }
}
