//! A healthy deployment as config + facts, for the judgement tests to break one fact at a
//! time.

use std::collections::{BTreeMap, BTreeSet};

use launcher_config::{Config, GenerateKind};

use crate::Step;
use crate::facts::*;
use crate::layout::TREE;

/// The config, with `service_extra` appended to [service].
pub fn config(service_extra: &str) -> Config {
    launcher_config::parse_str(&format!(
        r#"
[service]
user = "bitpoll"
data_dir = "/var/lib/bitpoll"
{service_extra}
[app]
python = "/opt/venv/bin/python"
source_dir = "/opt/src"
[secrets]
BITPOLL_SECRET_KEY = {{ generate = "django-secret-key" }}
BITPOLL_FIELD_ENCRYPTION_KEY = {{ generate = "fernet-key" }}
[server]
command = ["/opt/venv/bin/gunicorn", "bitpoll.wsgi:application"]
"#
    ))
    .unwrap()
}

/// [`config`] with PostgreSQL on `host` instead of SQLite.
pub fn postgresql_config(host: &str) -> Config {
    let mut cfg = config("");
    let text = format!(
        "[service]\nuser = \"bitpoll\"\ndata_dir = \"/var/lib/bitpoll\"\n[app]\npython = \"/opt/venv/bin/python\"\nsource_dir = \"/opt/src\"\n[database]\nengine = \"postgresql\"\nname = \"bitpoll\"\nhost = \"{host}\"\n[secrets]\nBITPOLL_SECRET_KEY = {{ generate = \"django-secret-key\" }}\nBITPOLL_FIELD_ENCRYPTION_KEY = {{ generate = \"fernet-key\" }}\n[server]\ncommand = [\"/opt/venv/bin/gunicorn\", \"bitpoll.wsgi:application\"]\n"
    );
    cfg.database = launcher_config::parse_str(&text).unwrap().database;
    cfg
}

/// [`facts`] for [`postgresql_config`]: no SQLite file, a reachable server whose
/// `django_migrations` holds `applied`.
pub fn postgresql_facts(applied: &[&str]) -> Facts {
    let mut facts = facts();
    facts.database.sqlite = None;
    facts.database.postgresql = Some(PostgresFacts {
        server: "role bitpoll at db:5432, database bitpoll".into(),
        state: PostgresState::Connected {
            version: "15.18".into(),
            tables: if applied.is_empty() { 0 } else { 12 },
            applied: Ok(applied.iter().map(|m| m.to_string()).collect()),
        },
    });
    facts
}

pub fn env() -> crate::env::Env {
    crate::env::Env::of([
        ("BITPOLL_DATA_DIR".into(), "/var/lib/bitpoll".into()),
        ("PATH".into(), "/opt/venv/bin:/usr/bin".into()),
    ])
}

/// Facts of a deployment that has everything: account, tree, secrets, a database.
pub fn facts() -> Facts {
    let (uid, gid) = (990, 990);
    let dirs = TREE
        .iter()
        .map(|d| DirFact {
            name: d.name,
            path: if d.name.is_empty() {
                "/var/lib/bitpoll".into()
            } else {
                format!("/var/lib/bitpoll/{}", d.name).into()
            },
            want_mode: d.mode,
            state: DirState::Present {
                uid,
                gid,
                mode: d.mode,
                owner_name: Some("bitpoll".into()),
            },
        })
        .collect();
    let secret = |name: &str, kind: GenerateKind, value: &str| SecretFact {
        name: name.into(),
        source: format!("generate {kind}"),
        state: SecretState::Read {
            value: crate::secret::from_bytes(value.as_bytes().to_vec()).unwrap(),
            origin: Origin::Generated(format!("/var/lib/bitpoll/secrets/{name}").into()),
        },
    };
    Facts {
        euid: 0,
        observer: Observer::Root,
        view: View::Service,
        inherited: Vec::new(),
        programs: Programs {
            python_executable: true,
            server_executable: true,
        },
        account: AccountFacts {
            user: Some(UserEntry {
                name: "bitpoll".into(),
                uid,
                gid,
                home: "/var/lib/bitpoll".into(),
                shell: "/usr/sbin/nologin".into(),
            }),
            group: Some(GroupEntry {
                name: "bitpoll".into(),
                gid,
                members: Vec::new(),
            }),
            supplementary: vec![(gid, "bitpoll".into())],
            etc_read_only: false,
            uid_min: 1000,
        },
        tree: TreeFacts {
            parent_exists: true,
            dirs,
            entries: vec!["db.sqlite3".into(), "secrets".into()],
            free_bytes: Some(("/var/lib/bitpoll".into(), 10 << 30)),
        },
        secrets: vec![
            secret(
                "BITPOLL_FIELD_ENCRYPTION_KEY",
                GenerateKind::FernetKey,
                "Hh0Gm0Tq4yYbK2bF3sWk2o1n0cXb0rGQ4k3fJm0Zx8c=",
            ),
            secret(
                "BITPOLL_SECRET_KEY",
                GenerateKind::DjangoSecretKey,
                "a-long-random-secret-key-of-fifty-characters-xyz12",
            ),
        ],
        database: DatabaseFacts {
            sqlite: Some(SqliteFacts {
                path: "/var/lib/bitpoll/db.sqlite3".into(),
                kind: FileKind::Regular,
                size: 4096,
                links: 1,
                applied: Ok(BTreeSet::from(["poll.0001_initial".to_string()])),
            }),
            postgresql: None,
        },
        source: Ok(SourceFacts {
            manage_py: true,
            digest: "source-digest".into(),
            po_files: 1,
            fresh_mo_files: 0,
            locale_dirs: vec!["locale".into()],
            fresh_in_data_dir: 0,
            catalog_targets: Vec::new(),
        }),
        python_identity: "/opt/venv/bin/python 1:2".into(),
        stamps: BTreeMap::new(),
        witnesses: Step::ALL
            .into_iter()
            .map(|s| (s, format!("{s} output")))
            .collect(),
        key_record: None,
        systemd: SystemdFacts::default(),
        trust: crate::facts::TrustFacts::default(),
        can_chown: true,
    }
}
