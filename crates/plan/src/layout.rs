//! The data directory tree the launcher maintains, and where things live in it.

/// A directory the launcher keeps with an exact mode, owned by the service user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// Relative to the data directory; empty for the data directory itself.
    pub name: &'static str,
    pub mode: u32,
}

/// Sub-directory holding generated secrets (0700).
pub const SECRETS_DIR: &str = "secrets";
/// Sub-directory holding preparation stamps.
pub const STATE_DIR: &str = "state";
pub const STATIC_DIR: &str = "static";
pub const MEDIA_DIR: &str = "media";

/// The tree, parents first. The data directory and static/ are group-readable so a web
/// server in the service group can serve static files; secrets/ is the user's alone.
pub const TREE: &[DirSpec] = &[
    DirSpec {
        name: "",
        mode: 0o750,
    },
    DirSpec {
        name: STATIC_DIR,
        mode: 0o750,
    },
    DirSpec {
        name: MEDIA_DIR,
        mode: 0o750,
    },
    DirSpec {
        name: STATE_DIR,
        mode: 0o750,
    },
    DirSpec {
        name: SECRETS_DIR,
        mode: 0o700,
    },
];

/// Mode of generated secret files.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of stamp files.
pub const STAMP_FILE_MODE: u32 = 0o600;

/// File name of a step's stamp inside [`STATE_DIR`].
pub fn stamp_file_name(step: crate::Step) -> String {
    format!("{}.stamp", step.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_comes_first_and_secrets_are_private() {
        assert_eq!(TREE[0].name, "");
        let secrets = TREE.iter().find(|d| d.name == SECRETS_DIR).unwrap();
        assert_eq!(secrets.mode, 0o700);
        assert!(
            TREE.iter().all(|d| d.mode & 0o007 == 0),
            "nothing is world-accessible"
        );
    }
}
