use super::*;

const GOOD: &str = r#"
[service]
user = "bitpoll"
create_user = true
data_dir = "/var/lib/bitpoll"

[app]
python = "/opt/bitpoll/venv/bin/python"
source_dir = "/opt/bitpoll/src"

[prepare]
compilemessages = false

[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { file = "/run/keys/bitpoll-fek" }
BITPOLL_DB_PASSWORD = { credential = "db-password" }

[environment]
BITPOLL_ALLOWED_HOSTS = "polls.example.org"

[server]
command = ["/opt/bitpoll/venv/bin/gunicorn", "--bind", "127.0.0.1:3008", "bitpoll.wsgi:application"]
"#;

fn problems(text: &str) -> Vec<Problem> {
    match parse_str(text) {
        Ok(cfg) => panic!("expected problems, got {cfg:#?}"),
        Err(ParseError::Invalid(p)) => p,
        Err(ParseError::Syntax(s)) => panic!("expected validation problems, got syntax error {s}"),
    }
}

fn rendered(text: &str) -> String {
    problems(text)
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn parses_a_complete_config_with_defaults() {
    let cfg = parse_str(GOOD).unwrap();
    assert_eq!(cfg.service.user, "bitpoll");
    assert_eq!(
        cfg.service.group, "bitpoll",
        "group defaults to the user name"
    );
    assert!(cfg.service.create_user);
    assert_eq!(cfg.app.settings_module, "bitpoll.settings");
    assert_eq!(
        cfg.database,
        Database::Sqlite {
            path: "/var/lib/bitpoll/db.sqlite3".into()
        }
    );
    assert!(cfg.prepare.migrate && cfg.prepare.collectstatic && !cfg.prepare.compilemessages);
    assert_eq!(
        cfg.prepare.stall_timeout,
        Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS)
    );
    assert_eq!(
        cfg.secrets["BITPOLL_SECRET_KEY"],
        SecretSource::Generate(GenerateKind::DjangoSecretKey)
    );
    assert_eq!(
        cfg.secrets["BITPOLL_FIELD_ENCRYPTION_KEY"],
        SecretSource::File("/run/keys/bitpoll-fek".into())
    );
    assert_eq!(
        cfg.secrets["BITPOLL_DB_PASSWORD"],
        SecretSource::Credential("db-password".into())
    );
    assert_eq!(
        cfg.environment["BITPOLL_ALLOWED_HOSTS"],
        "polls.example.org"
    );
    assert_eq!(cfg.server.command[0], "/opt/bitpoll/venv/bin/gunicorn");
}

#[test]
fn unknown_keys_name_their_path_and_suggest_the_right_one() {
    let text = GOOD.replace(
        "compilemessages = false",
        "compilemessage = false\nmigrat = true",
    );
    let out = rendered(&text);
    assert!(
        out.contains("prepare.compilemessage: unknown key (did you mean `compilemessages`?)"),
        "{out}"
    );
    assert!(
        out.contains("prepare.migrat: unknown key (did you mean `migrate`?)"),
        "{out}"
    );
}

#[test]
fn a_key_in_the_wrong_table_says_where_it_belongs() {
    let text = GOOD.replace(
        "create_user = true",
        "create_user = true\nstall_timeout_sec = 10",
    );
    let out = rendered(&text);
    assert!(
        out.contains("service.stall_timeout_sec: unknown key (`stall_timeout_sec` belongs in the [prepare] table)"),
        "{out}"
    );
}

#[test]
fn unknown_top_level_table_is_reported() {
    let out = rendered(&format!("{GOOD}\n[servr]\nx = 1\n"));
    assert!(
        out.contains("servr: unknown table (did you mean `server`?)"),
        "{out}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = r#"
[service]
user = "Bad User"
data_dir = "relative/dir"
[app]
python = 3
source_dir = "/src"
settings_module = "bitpoll..settings"
[prepare]
migrate = "yes"
stall_timeout_sec = 0
[secrets]
BITPOLL_SECRET_KEY = { file = "/a", generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { generate = "fernet" }
[environment]
DEBUG = 1
[server]
command = []
"#;
    let out = rendered(text);
    for want in [
        "service.user: \"Bad User\" is not a valid user or group name",
        "service.data_dir: \"relative/dir\" is not an absolute path",
        "app.python: must be a string, not an integer",
        "app.settings_module: \"bitpoll..settings\" is not a dotted Python module name",
        "prepare.migrate: must be true or false, not a string",
        "prepare.stall_timeout_sec: 0 is out of range",
        "secrets.BITPOLL_SECRET_KEY: has 2 sources (file, generate)",
        "secrets.BITPOLL_FIELD_ENCRYPTION_KEY.generate: unknown generator \"fernet\" (did you mean `fernet-key`?)",
        "environment.DEBUG: must be a string, not an integer (quote the value: DEBUG = \"1\")",
        "server.command: is empty",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(problems(text).len() >= 10);
}

#[test]
fn missing_required_sections_and_keys_are_reported() {
    let out = rendered("[service]\nuser = \"bitpoll\"\n");
    for want in [
        "service.data_dir: is missing",
        "app: is missing (add a [app] section)",
        "server: is missing",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn rejects_root_as_the_service_user() {
    let out = rendered(&GOOD.replace("user = \"bitpoll\"", "user = \"root\""));
    assert!(out.contains("service.user: must not be root"), "{out}");
}

#[test]
fn rejects_a_system_directory_as_data_dir() {
    let out = rendered(&GOOD.replace("/var/lib/bitpoll\"", "/var/lib\""));
    assert!(
        out.contains("service.data_dir: /var/lib is a system directory"),
        "{out}"
    );
}

#[test]
fn rejects_dot_dot_in_paths() {
    let out = rendered(&GOOD.replace("/var/lib/bitpoll\"", "/var/lib/bitpoll/../../etc\""));
    assert!(
        out.contains("service.data_dir: \"/var/lib/bitpoll/../../etc\" contains '.' or '..'"),
        "{out}"
    );
}

#[test]
fn secrets_in_plain_environment_are_refused() {
    let text = GOOD.replace(
        "BITPOLL_ALLOWED_HOSTS = \"polls.example.org\"",
        "BITPOLL_DB_PASSWORD = \"hunter2\"",
    );
    let out = rendered(&text);
    assert!(
        out.contains("environment.BITPOLL_DB_PASSWORD: is a secret and must not be written into the config file"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2"),
        "a secret value leaked into an error: {out}"
    );
}

#[test]
fn reserved_variables_cannot_be_overridden() {
    let text = GOOD.replace(
        "BITPOLL_ALLOWED_HOSTS = \"polls.example.org\"",
        "BITPOLL_DATA_DIR = \"/elsewhere\"",
    );
    assert!(
        rendered(&text).contains("environment.BITPOLL_DATA_DIR: is set by the launcher itself")
    );
}

#[test]
fn required_secrets_must_be_configured() {
    let text = GOOD.replace(
        "BITPOLL_SECRET_KEY = { generate = \"django-secret-key\" }\n",
        "",
    );
    let out = rendered(&text);
    assert!(
        out.contains("secrets.BITPOLL_SECRET_KEY: is missing; the app cannot start without it (add `BITPOLL_SECRET_KEY = { file = \"/path/to/key\" }` or `BITPOLL_SECRET_KEY = { generate = \"django-secret-key\" }` to [secrets])"),
        "{out}"
    );
}

#[test]
fn credential_names_cannot_escape_the_credentials_directory() {
    let text = GOOD.replace(
        "credential = \"db-password\"",
        "credential = \"../etc/shadow\"",
    );
    assert!(rendered(&text).contains(
        "secrets.BITPOLL_DB_PASSWORD.credential: \"../etc/shadow\" is not a credential name"
    ));
}

#[test]
fn server_program_must_be_absolute() {
    let text = GOOD.replace(
        "\"/opt/bitpoll/venv/bin/gunicorn\", \"--bind\"",
        "\"gunicorn\", \"--bind\"",
    );
    assert!(
        rendered(&text)
            .contains("server.command: the program \"gunicorn\" is not an absolute path")
    );
}

#[test]
fn postgresql_needs_a_name_and_rejects_a_path() {
    let text =
        format!("{GOOD}\n[database]\nengine = \"postgresql\"\npath = \"/x\"\nport = 70000\n");
    let out = rendered(&text);
    assert!(out.contains("database.name: is missing"), "{out}");
    assert!(
        out.contains("database.path: only applies to engine = \"sqlite\""),
        "{out}"
    );
    assert!(
        out.contains("database.port: 70000 is not a TCP port"),
        "{out}"
    );
}

#[test]
fn postgresql_config_is_read() {
    let text = format!(
        "{GOOD}\n[database]\nengine = \"postgresql\"\nname = \"bitpoll\"\nhost = \"/run/postgresql\"\nport = 5432\n"
    );
    let cfg = parse_str(&text).unwrap();
    assert_eq!(
        cfg.database,
        Database::Postgresql {
            name: "bitpoll".into(),
            user: None,
            host: Some("/run/postgresql".into()),
            port: Some(5432),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            wait_timeout: Duration::from_secs(120),
        }
    );
    let text = format!(
        "{GOOD}\n[database]\nengine = \"postgresql\"\nname = \"b\"\nsslmode = \"verify-full\"\nsslrootcert = \"/etc/ssl/db-ca.pem\"\nwait_timeout_sec = 0\n"
    );
    match parse_str(&text).unwrap().database {
        Database::Postgresql {
            sslmode,
            sslrootcert,
            wait_timeout,
            ..
        } => {
            assert_eq!(sslmode, SslMode::VerifyFull);
            assert_eq!(sslrootcert, Some(PathBuf::from("/etc/ssl/db-ca.pem")));
            assert_eq!(wait_timeout, Duration::ZERO);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn postgresql_names_with_a_nul_control_character_or_too_long_are_refused_naming_the_key() {
    for (key, value) in [
        ("name", "bit\\u0000poll"),
        ("user", "bit\\npoll"),
        ("name", "x\\u001b[2K"),
    ] {
        let text = format!(
            "{GOOD}\n[database]\nengine = \"postgresql\"\nname = \"b\"\n{key} = \"{value}\"\n"
        )
        .replacen("name = \"b\"\nname", "name", 1);
        let out = rendered(&text);
        assert!(
            out.contains(&format!(
                "database.{key}: must be 1 to 63 bytes without NUL or control characters"
            )),
            "{key} = {value:?}\n{out}"
        );
    }
    let long = "n".repeat(64);
    let text = format!("{GOOD}\n[database]\nengine = \"postgresql\"\nname = \"{long}\"\n");
    assert!(rendered(&text).contains("database.name: must be 1 to 63 bytes"));
}

#[test]
fn postgresql_connection_keys_are_validated() {
    let text = format!(
        "{GOOD}\n[database]\nengine = \"postgresql\"\nname = \"b\"\nhost = \"a,b\"\nsslmode = \"verify_full\"\nwait_timeout_sec = 4000\nsslrootcert = \"ca.pem\"\n"
    );
    let out = rendered(&text);
    for want in [
        "database.host: is empty or holds several hosts",
        "database.sslmode: unknown sslmode \"verify_full\" (did you mean `verify-full`?)",
        "database.wait_timeout_sec: 4000 is out of range",
        "database.sslrootcert: \"ca.pem\" is not an absolute path",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    let text = format!(
        "{GOOD}\n[database]\nengine = \"postgresql\"\nname = \"b\"\nsslmode = \"verify-ca\"\n"
    );
    assert!(
        rendered(&text).contains("database.sslmode: verify-ca needs database.sslrootcert"),
        "{}",
        rendered(&text)
    );
    let text = format!("{GOOD}\n[database]\nwait_timeout_sec = 5\nsslmode = \"require\"\n");
    let out = rendered(&text);
    assert!(
        out.contains("database.wait_timeout_sec: only applies to engine = \"postgresql\"")
            && out.contains("database.sslmode: only applies to engine = \"postgresql\""),
        "{out}"
    );
}

#[test]
fn syntax_errors_carry_a_location() {
    match parse_str("[service\nuser = 1") {
        Err(ParseError::Syntax(msg)) => assert!(msg.starts_with("line 1, column 9: "), "{msg}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_never_quote_the_text_of_the_file() {
    let cases = [
        "[service]\nuser = \"bitpoll\"\nnote = \"hunter2-MARKER\" trailing\n",
        "[secrets]\nX = { file = \"/k\", value = hunter2-MARKER }\n",
        "hunter2-MARKER\n",
        "[service]\nuser = \"x\"\nuser = \"hunter2-MARKER\"\n",
        "a = \"\\q hunter2-MARKER\"\n",
        "[[hunter2-MARKER\n",
    ];
    for text in cases {
        let err = from_text(Path::new("/etc/bitpoll/launcher.toml"), text).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{text:?}: {msg}");
        assert!(
            msg.starts_with("/etc/bitpoll/launcher.toml: invalid TOML: line "),
            "{text:?}: {msg}"
        );
        assert!(!msg.contains("MARKER"), "{text:?}: the text leaked: {msg}");
        assert!(!msg.contains('\n'), "{text:?}: one line, no excerpt: {msg}");
    }
}

#[test]
fn the_position_of_a_syntax_error_counts_characters_on_its_line() {
    let err = parse_str("# ä comment\nkey = \"ü\" x\n").unwrap_err();
    assert_eq!(
        err,
        ParseError::Syntax(match &err {
            ParseError::Syntax(m) => {
                assert!(m.starts_with("line 2, column 11: "), "{m}");
                m.clone()
            }
            other => panic!("{other:?}"),
        })
    );
}

#[test]
fn system_locations_are_refused_by_rule_not_by_list() {
    for (dir, want) in [
        ("/usr/local", "inside the system tree /usr"),
        ("/usr/local/lib/bitpoll", "inside the system tree /usr"),
        ("/etc/bitpoll", "inside the system tree /etc"),
        ("/nix/store/abc-bitpoll", "inside the system tree /nix"),
        ("/root/bitpoll", "inside the system tree /root"),
        ("/home", "is a system directory"),
        ("/var", "is a system directory"),
        ("/opt", "is a system directory"),
    ] {
        let out = rendered(&GOOD.replace("/var/lib/bitpoll\"", &format!("{dir}\"")));
        assert!(out.contains(want), "{dir}: {out}");
    }
    for dir in [
        "/var/lib/bitpoll",
        "/srv/bitpoll",
        "/home/bitpoll",
        "/opt/bitpoll/data",
    ] {
        assert!(
            parse_str(&GOOD.replace("/var/lib/bitpoll\"", &format!("{dir}\""))).is_ok(),
            "{dir} is a directory of its own"
        );
    }
}

#[test]
fn oversized_environment_values_are_refused_with_their_key() {
    let big = "x".repeat(MAX_ENV_VALUE + 1);
    let text = GOOD.replace(
        "[environment]\n",
        &format!("[environment]\nBITPOLL_BIG = \"{big}\"\n"),
    );
    let out = rendered(&text);
    assert!(
        out.contains("environment.BITPOLL_BIG: is 32769 bytes long"),
        "{out}"
    );
    let mut vars = String::from("[environment]\n");
    for i in 0..10 {
        vars.push_str(&format!("BITPOLL_V{i} = \"{}\"\n", "y".repeat(30_000)));
    }
    let text = GOOD.replace("[environment]\n", &vars);
    let out = rendered(&text);
    assert!(out.contains("environment: holds"), "{out}");
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_its_position_only() {
    let err = from_bytes(
        Path::new("/etc/b.toml"),
        b"[service]\nuser = \"b\xe9-MARKER\"\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/b.toml: invalid TOML: line 2, column 10: the file is not UTF-8 text; save it as UTF-8"
    );
}

#[test]
fn from_bytes_names_the_file_in_every_error() {
    let path = Path::new("/etc/bitpoll/launcher.toml");
    let err = from_bytes(path, b"[service]\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/etc/bitpoll/launcher.toml: 6 problems:\n  - service.user: is missing"),
        "{err}"
    );
    assert_eq!(
        from_bytes(path, GOOD.as_bytes()).unwrap(),
        parse_str(GOOD).unwrap()
    );
    let unreadable = ConfigError::Unreadable {
        path: path.into(),
        reason: format!("{} does not exist", path.display()),
        fix: "create the file".into(),
    };
    assert_eq!(
        unreadable.to_string(),
        "cannot read config file: /etc/bitpoll/launcher.toml does not exist; create the file"
    );
    assert_eq!(
        unreadable.problems(),
        vec![Problem {
            key: String::new(),
            message: "cannot read the file: /etc/bitpoll/launcher.toml does not exist".into(),
            hint: Some("create the file".into()),
        }]
    );
}

/// Nesting deep enough to overflow a recursive parser's stack many times over. Runs on a
/// test thread, whose stack (2 MiB) is smaller than the launcher's main thread's.
#[test]
fn deeply_nested_input_is_refused_without_overflowing_the_stack() {
    const DEPTH: usize = 100_000;
    let cases = [
        "[".repeat(DEPTH),
        format!("a = {}", "[".repeat(DEPTH)),
        format!("a = {}1{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        format!("a = {}1{}", "{ b = ".repeat(DEPTH), " }".repeat(DEPTH)),
        format!("{}a = 1", "a.".repeat(DEPTH)),
        format!("[{}a]", "a.".repeat(DEPTH)),
    ];
    for text in cases {
        match parse_str(&text) {
            Err(ParseError::Syntax(msg)) => assert!(msg.starts_with("line 1, column "), "{msg}"),
            other => panic!("{}...: expected a syntax error, got {other:?}", &text[..20]),
        }
    }
}

#[test]
fn the_unit_table_defaults_come_from_the_shared_file_and_validate() {
    let cfg = parse_str(GOOD).unwrap();
    let defaults: toml::Table = toml::from_str(unit::DEFAULTS).unwrap();
    for key in defaults.keys() {
        assert!(
            unit::UNIT_KEYS.contains(&key.as_str()),
            "unknown default {key}"
        );
    }
    let u = &cfg.unit;
    assert_eq!(u.memory_high, Limit::Bytes(1 << 30));
    assert_eq!(u.memory_max, Limit::Bytes(1536 << 20));
    assert_eq!(u.tasks_max, Limit::Count(512));
    assert_eq!(
        (u.memory_high.to_string(), u.memory_max.to_string()),
        ("1G".into(), "1536M".into())
    );
    assert_eq!(Limit::Bytes(1000).to_string(), "1000");
    assert_eq!((u.limit_nofile, u.restart_sec), (8192, 5));
    assert_eq!((u.restart_steps, u.restart_max_delay_sec), (None, None));
    assert_eq!((u.start_limit_interval_sec, u.start_limit_burst), (600, 10));
    // gunicorn without a config file of its own: READY=1 once a worker answered.
    assert_eq!(cfg.server.ready, Ready::Answer);
    assert_eq!(cfg.server.ready_path, "/");
}

#[test]
fn ready_defaults_to_answer_for_gunicorn_without_a_config_file_and_arbiter_otherwise() {
    let command = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        default_ready(&command(&["/v/bin/gunicorn", "app:wsgi"])),
        Ready::Answer
    );
    assert_eq!(
        default_ready(&command(&["/v/bin/python", "-m", "gunicorn", "app:wsgi"])),
        Ready::Answer
    );
    for other in [
        &["/v/bin/gunicorn", "-c", "/etc/g.py", "app:wsgi"][..],
        &["/v/bin/gunicorn", "--config=/etc/g.py", "app:wsgi"][..],
        &["/usr/bin/uwsgi", "--http", ":8000"][..],
        &["/bin/true"][..],
    ] {
        assert_eq!(default_ready(&command(other)), Ready::Arbiter, "{other:?}");
    }
    let cfg = parse_str(&GOOD.replace(
        "command = [\"/opt/bitpoll/venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:3008\", \"bitpoll.wsgi:application\"]",
        "command = [\"/usr/bin/uwsgi\", \"--http\", \":8000\"]",
    ))
    .unwrap();
    assert_eq!(cfg.server.ready, Ready::Arbiter);
}

#[test]
fn unit_keys_override_the_defaults_and_render_as_directives() {
    let cfg = parse_str(&format!(
        "{GOOD}\n[unit]\nmemory_max = \"infinity\"\nmemory_high = \"50%\"\ntasks_max = \"infinity\"\nrestart_sec = 2\nrestart_steps = 4\nrestart_max_delay_sec = 60\n"
    ))
    .unwrap();
    let lines: Vec<String> = cfg
        .unit
        .directives()
        .iter()
        .map(|d| format!("{:?} {}={}", d.section, d.name, d.value))
        .collect();
    assert_eq!(
        lines,
        [
            "Unit StartLimitIntervalSec=600s",
            "Unit StartLimitBurst=10",
            "Service RestartSec=2s",
            "Service RestartSteps=4",
            "Service RestartMaxDelaySec=60s",
            "Service MemoryHigh=50%",
            "Service MemoryMax=infinity",
            "Service TasksMax=infinity",
            "Service LimitNOFILE=8192",
        ]
    );
}

#[test]
fn bad_unit_values_are_reported_with_their_keys() {
    let text = rendered(&format!(
        "{GOOD}\n[unit]\nmemory_max = \"1 GB\"\nmemory_high = \"2G\"\ntasks_max = 0\nlimit_nofile = 10\nrestart_steps = 3\nstart_limit_burst = \"5\"\nmemroy_max = 1\n"
    ));
    for want in [
        "unit.memory_max: \"1 GB\" is not a memory size",
        "unit.tasks_max: 0 is not a task limit",
        "unit.limit_nofile: 10 is out of range",
        "unit: restart_steps and restart_max_delay_sec go together",
        "unit.start_limit_burst: must be an integer, not a string",
        "unit.memroy_max: unknown key (did you mean `memory_max`?)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let text = rendered(&format!(
        "{GOOD}\n[unit]\nmemory_high = \"2G\"\nmemory_max = \"1G\"\nrestart_steps = 3\nrestart_max_delay_sec = 5\n"
    ));
    assert!(
        text.contains("unit.memory_high: 2147483648 bytes is above unit.memory_max"),
        "{text}"
    );
    assert!(
        text.contains("unit.restart_max_delay_sec: 5 is not above restart_sec (5)"),
        "{text}"
    );
}

#[test]
fn ready_answer_takes_a_request_path_and_needs_gunicorn() {
    let with = |lines: &str| {
        GOOD.replace(
            "command = [\"/opt/bitpoll/venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:3008\", \"bitpoll.wsgi:application\"]",
            &format!("command = [\"/v/bin/gunicorn\", \"app:wsgi\"]\n{lines}"),
        )
    };
    let cfg = parse_str(&with("ready = \"answer\"")).unwrap();
    assert_eq!(cfg.server.ready, Ready::Answer);
    assert_eq!(cfg.server.ready_path, "/");
    assert!(cfg.server.ready.uses_hook() && !cfg.server.ready.from_worker());
    assert_eq!(cfg.server.ready_timeout, Duration::from_secs(30));
    let cfg = parse_str(&with(
        "ready = \"answer\"\nready_path = \"/healthz?warm=1\"\nready_timeout_sec = 5",
    ))
    .unwrap();
    assert_eq!(cfg.server.ready_path, "/healthz?warm=1");
    assert_eq!(cfg.server.ready_timeout, Duration::from_secs(5));
    // The default for gunicorn without a config file of its own.
    let cfg = parse_str(&with("ready_path = \"/healthz\"")).unwrap();
    assert_eq!(cfg.server.ready, Ready::Answer);
    assert_eq!(cfg.server.ready_path, "/healthz");
    for (lines, want) in [
        (
            "ready = \"answer\"\nready_path = \"healthz\"",
            "server.ready_path: \"healthz\" is not a request path",
        ),
        (
            "ready = \"answer\"\nready_path = \"/a b\"",
            "server.ready_path: \"/a b\" is not a request path",
        ),
        (
            "ready = \"answer\"\nready_path = \"/ä\"",
            "is not a request path",
        ),
        (
            "ready = \"arbiter\"\nready_path = \"/\"",
            "server.ready_path: is only used with ready = \"answer\"",
        ),
        (
            "ready = \"worker\"\nready_path = \"/\"",
            "server.ready_path: is only used with ready = \"answer\"",
        ),
        ("ready = \"answr\"", "(did you mean `answer`?)"),
        (
            "ready = \"answer\"\nready_timeout_sec = 0",
            "server.ready_timeout_sec: 0 is out of range",
        ),
        (
            "ready = \"arbiter\"\nready_timeout_sec = 5",
            "server.ready_timeout_sec: is only used with ready = \"answer\"",
        ),
        (
            "ready = \"answer\"\nready_path = 1",
            "server.ready_path: must be a string",
        ),
    ] {
        let text = rendered(&with(lines));
        assert!(text.contains(want), "{lines}: missing {want:?} in\n{text}");
    }
    let text = rendered(&GOOD.replace(
        "command = [\"/opt/bitpoll/venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:3008\", \"bitpoll.wsgi:application\"]",
        "command = [\"/usr/bin/uwsgi\"]\nready = \"answer\"",
    ));
    assert!(
        text.contains("server.ready: \"answer\" needs gunicorn"),
        "{text}"
    );
}

#[test]
fn ready_worker_needs_gunicorn_without_a_config_file_of_its_own() {
    let with = |command: &str| {
        GOOD.replace(
            "command = [\"/opt/bitpoll/venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:3008\", \"bitpoll.wsgi:application\"]",
            &format!("command = {command}\nready = \"worker\""),
        )
    };
    let cfg = parse_str(&with("[\"/v/bin/gunicorn\", \"app:wsgi\"]")).unwrap();
    assert_eq!(cfg.server.ready, Ready::Worker);
    let cfg = parse_str(&with(
        "[\"/v/bin/python\", \"-m\", \"gunicorn\", \"app:wsgi\"]",
    ))
    .unwrap();
    assert_eq!(cfg.server.ready, Ready::Worker);
    let text = rendered(&with("[\"/usr/bin/uwsgi\", \"--http\", \":8000\"]"));
    assert!(
        text.contains("server.ready: \"worker\" needs gunicorn"),
        "{text}"
    );
    let text = rendered(&with(
        "[\"/v/bin/gunicorn\", \"-c\", \"/etc/g.py\", \"app:wsgi\"]",
    ));
    assert!(text.contains("server.command already has -c"), "{text}");
    let text = rendered(&GOOD.replace("[server]\n", "[server]\nready = \"workers\"\n"));
    assert!(
        text.contains("server.ready: unknown value \"workers\" (did you mean `worker`?)"),
        "{text}"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Keys the validator knows, and a few it does not, so generated documents reach the
    /// validation of every table and not just "unknown key".
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "service",
                "app",
                "database",
                "prepare",
                "secrets",
                "environment",
                "server",
                "user",
                "group",
                "create_user",
                "data_dir",
                "python",
                "source_dir",
                "settings_module",
                "engine",
                "path",
                "name",
                "host",
                "port",
                "migrate",
                "collectstatic",
                "compilemessages",
                "stall_timeout_sec",
                "command",
                "file",
                "credential",
                "generate",
                "BITPOLL_SECRET_KEY",
                "BITPOLL_FIELD_ENCRYPTION_KEY",
            ])
            .prop_map(String::from),
            "[A-Za-z_][A-Za-z0-9_-]{0,8}",
        ]
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
            Just("\"/var/lib/bitpoll\"".to_string()),
            Just("\"django-secret-key\"".to_string()),
            Just("1979-05-27T07:32:00Z".to_string()),
        ]
    }

    /// A TOML value: scalars, arrays and inline tables nested a few levels.
    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                    let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", body.join(", "))
                }),
            ]
        })
    }

    /// A document of tables (dotted headers included) with key = value lines.
    fn document() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::collection::vec(key(), 0..3),
                prop::collection::vec((key(), value()), 0..6),
            ),
            0..8,
        )
        .prop_map(|tables| {
            let mut out = String::new();
            for (header, lines) in tables {
                if !header.is_empty() {
                    out.push_str(&format!("[{}]\n", header.join(".")));
                }
                for (k, v) in lines {
                    out.push_str(&format!("{k} = {v}\n"));
                }
            }
            out
        })
    }

    /// Characters TOML gives meaning to, to make near-TOML garbage.
    fn tomlish() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "[", "]", "[[", "]]", "{", "}", "=", ",", ".", "\"", "'", "\"\"\"", "\\", "#",
                    "\n", "\r\n", " ", "\t", "service", "user", "=\"x\"", "1", "-", "+", "e", "T",
                    ":", "nan", "inf", "true", "\u{0}", "\u{feff}", "ä",
                ])
                .prop_map(String::from),
                key(),
            ],
            0..200,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_str_never_panics_on_any_string(text in any::<String>()) {
            let _ = parse_str(&text);
        }

        #[test]
        fn from_bytes_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_bytes(Path::new("/c.toml"), &bytes);
        }

        #[test]
        fn parse_str_never_panics_on_toml_like_garbage(text in tomlish()) {
            let _ = parse_str(&text);
        }

        #[test]
        fn parse_str_never_panics_on_nested_documents(text in document()) {
            let _ = parse_str(&text);
        }

        #[test]
        fn a_syntax_error_position_lies_inside_the_text(text in tomlish()) {
            if let Err(ParseError::Syntax(msg)) = parse_str(&text) {
                let pos = msg.strip_prefix("line ").and_then(|m| m.split_once(", column "));
                let (line, rest) = pos.unwrap_or_else(|| panic!("no position: {msg}"));
                let line: usize = line.parse().unwrap();
                let column: usize = rest.split_once(':').unwrap().0.parse().unwrap();
                let lines: Vec<&str> = text.split('\n').collect();
                prop_assert!(line >= 1 && line <= lines.len(), "{msg}");
                prop_assert!(column >= 1 && column <= lines[line - 1].chars().count() + 1, "{msg}");
            }
        }
    }
}

#[test]
fn check_accept_lists_finding_ids_and_is_empty_by_default() {
    assert!(parse_str(GOOD).unwrap().check.accept.is_empty());
    let cfg = parse_str(&format!(
        "{GOOD}\n[check]\naccept = [\"django:security.W004\", \"secrets.shared_by_instances\"]\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.check.accept,
        ["django:security.W004", "secrets.shared_by_instances"]
    );
}

#[test]
fn check_accept_refuses_what_is_no_finding_id_and_suggests_the_key() {
    let out = rendered(&format!(
        "{GOOD}\n[check]\naccept = [\"W004\", \"data_dir.free_space\", \"django:a b\", \"data_dir.free_space\"]\naccpt = []\n"
    ));
    for want in [
        "check.accpt: unknown key (did you mean `accept`?)",
        "check.accept[0]: \"W004\" is not a finding id",
        "check.accept[2]: \"django:a b\" is not a finding id",
        "check.accept[3]: \"data_dir.free_space\" is listed twice",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("check.accept[1]"), "{out}");
    let out = rendered(&format!(
        "{GOOD}\n[check]\naccept = \"django:security.W004\"\n"
    ));
    assert!(
        out.contains("check.accept: must be an array of strings"),
        "{out}"
    );
    let out = rendered(&GOOD.replace("[service]\n", "[service]\naccept = []\n"));
    assert!(
        out.contains("`accept` belongs in the [check] table"),
        "{out}"
    );
}

#[test]
fn finding_ids_are_rule_ids_or_another_programs() {
    for ok in [
        "data_dir.foreign_owner",
        "django:security.W004",
        "django:fields.E304",
        "x.y",
    ] {
        assert!(is_finding_id(ok), "{ok}");
    }
    for bad in [
        "",
        "W004",
        "data_dir.",
        ".x",
        "Data.x",
        "django:",
        ":x",
        "django:a b",
        "a.b.c",
    ] {
        assert!(!is_finding_id(bad), "{bad}");
    }
}
