//! The settings contract of the packaged settings_local.py (nixos/pkgs/bitpoll/settings_local.py,
//! docs/settings.md), read back from the real Bitpoll as the service runs it:
//! every variable set in the launcher's `[environment]` and `[secrets]` arrives as the
//! Django setting the reference names (`manage -- shell`), mail goes out through a
//! throw-away SMTP listener on loopback with the user and the password secret (a real
//! SMTP conversation: EHLO, AUTH PLAIN, MAIL, RCPT, DATA), the LDAP backend binds to a
//! throw-away listener with the bind DN and the password secret, and the running server
//! answers 404 on the registration page when registration is off.
//!
//! Uses the real Bitpoll (tests/setup-bitpoll.sh); without ../shared/upstream every test
//! returns after one line saying so, and CI=true makes that a failure. Run as root:
//!
//!     cargo test --test suite settings_contract:: -- --test-threads=1

use crate::util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use util::TestEnv;
use util::cli::{self, Output};
use util::upstream;
use util::{file_secret, write_file};

const READY: Duration = Duration::from_secs(120);
const MAIL_PASSWORD: &str = "mail-password-0f9a7c";
const LDAP_PASSWORD: &str = "ldap-bind-password-3e1d5b";
const LDAP_BIND_DN: &str = "cn=bitpoll,ou=services,dc=example,dc=org";

/// The real Bitpoll, started once (account, keys and database made) and stopped again:
/// `manage` runs only where the service has started before.
fn real_env(name: &str) -> Option<TestEnv> {
    let up = upstream::install()?;
    let mut env = TestEnv::with_app(name, &up.source(), &up.venv());
    cli::launch_once(&mut env);
    Some(env)
}

/// A root-only secret file in the test directory, configured as `[secrets] NAME`.
fn secret(env: &mut TestEnv, name: &str, value: &str) {
    let path = env.dir.join(format!("secret-{name}"));
    write_file(&path, format!("{value}\n").as_bytes(), 0o600);
    let src = file_secret(&path);
    env.config.set("secrets", name, &src);
}

fn shell(env: &TestEnv, code: &str) -> Output {
    let out = cli::manage(env, &["shell", "-c", code]);
    assert_eq!(out.code, 0, "manage shell:\n{}", out.context());
    out
}

/// The settings the contract sets, as `NAME=repr` lines.
const READ_BACK: &str = r#"
from django.conf import settings as s
for name in ["EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD",
             "EMAIL_USE_TLS", "EMAIL_USE_SSL", "EMAIL_TIMEOUT", "DEFAULT_FROM_EMAIL",
             "SERVER_EMAIL", "TEAM_EMAIL", "MAIL_SIGNATURE", "EMAIL_SUBJECT_PREFIX",
             "REGISTER_ENABLED", "GROUP_MANAGEMENT", "PUBLIC_POLLS",
             "POLL_CREATION_REQUIRES_LOGIN", "CALENDAR_ENABLED", "HOME_URL", "HOME_URL_NAME",
             "IMPRINT_URL", "PRIVACY_URL", "URL_PREFIX", "SITE_NAME", "BASE_URL",
             "LANGUAGE_CODE", "TIME_ZONE", "ALLOWED_HOSTS", "SESSION_COOKIE_SECURE",
             "AUTHENTICATION_BACKENDS", "AUTH_LDAP_SERVER_URI", "AUTH_LDAP_BIND_DN",
             "AUTH_LDAP_BIND_PASSWORD", "AUTH_LDAP_START_TLS", "AUTH_LDAP_USER_ATTR_MAP",
             "AUTH_LDAP_ALWAYS_UPDATE_USER", "AUTH_LDAP_MIRROR_GROUPS",
             "AUTH_LDAP_USER_FLAGS_BY_GROUP"]:
    print(f"{name}={getattr(s, name, '<unset>')!r}")
search = getattr(s, "AUTH_LDAP_USER_SEARCH", None)
if search is not None:
    print(f"AUTH_LDAP_USER_SEARCH={search.base_dn!r} {search.filterstr!r}")
group = getattr(s, "AUTH_LDAP_GROUP_SEARCH", None)
if group is not None:
    print(f"AUTH_LDAP_GROUP_SEARCH={group.base_dn!r} {group.filterstr!r} {type(s.AUTH_LDAP_GROUP_TYPE).__name__}")
"#;

fn values(out: &Output) -> Vec<(String, String)> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn value<'a>(vals: &'a [(String, String)], name: &str) -> &'a str {
    vals.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} not printed: {vals:?}"))
}

#[test]
fn every_variable_of_the_contract_reaches_the_app_as_its_setting() {
    crate::util::root_only!();
    let Some(mut env) = real_env("contract") else {
        return;
    };
    for (k, v) in [
        ("BITPOLL_EMAIL_HOST", "mail.example.org"),
        ("BITPOLL_EMAIL_PORT", "587"),
        ("BITPOLL_EMAIL_HOST_USER", "polls@example.org"),
        ("BITPOLL_EMAIL_USE_TLS", "true"),
        ("BITPOLL_EMAIL_TIMEOUT", "12"),
        ("BITPOLL_DEFAULT_FROM_EMAIL", "Polls <polls@example.org>"),
        ("BITPOLL_TEAM_EMAIL", "team@example.org"),
        ("BITPOLL_MAIL_SIGNATURE", "The poll team"),
        ("BITPOLL_REGISTER_ENABLED", "false"),
        ("BITPOLL_PUBLIC_POLLS", "false"),
        ("BITPOLL_POLL_CREATION_REQUIRES_LOGIN", "true"),
        ("BITPOLL_CALENDAR_ENABLED", "off"),
        ("BITPOLL_HOME_URL", "https://www.example.org"),
        ("BITPOLL_HOME_URL_NAME", "Example"),
        ("BITPOLL_IMPRINT_URL", "https://www.example.org/imprint"),
        ("BITPOLL_PRIVACY_URL", "https://www.example.org/privacy"),
        ("BITPOLL_URL_PREFIX", "/polls/"),
        ("BITPOLL_SITE_NAME", "Example Polls"),
        ("BITPOLL_BASE_URL", "https://polls.example.org/"),
        ("BITPOLL_LANGUAGE_CODE", "en-us"),
        ("BITPOLL_TIME_ZONE", "UTC"),
        ("BITPOLL_SECURE_COOKIES", "true"),
        ("BITPOLL_AUTH_LDAP_SERVER_URI", "ldaps://ldap.example.org"),
        ("BITPOLL_AUTH_LDAP_BIND_DN", LDAP_BIND_DN),
        (
            "BITPOLL_AUTH_LDAP_USER_SEARCH_BASE",
            "ou=People,dc=example,dc=org",
        ),
        ("BITPOLL_AUTH_LDAP_USER_SEARCH_FILTER", "(mail=%(user)s)"),
        (
            "BITPOLL_AUTH_LDAP_USER_ATTR_MAP",
            "first_name=givenName,email=mail",
        ),
        (
            "BITPOLL_AUTH_LDAP_GROUP_SEARCH_BASE",
            "ou=groups,dc=example,dc=org",
        ),
        ("BITPOLL_AUTH_LDAP_GROUP_TYPE", "groupOfNames"),
        ("BITPOLL_AUTH_LDAP_MIRROR_GROUPS", "true"),
        (
            "BITPOLL_AUTH_LDAP_STAFF_GROUPS",
            "cn=editors,ou=groups,dc=example,dc=org;cn=admins,ou=groups,dc=example,dc=org",
        ),
        (
            "BITPOLL_AUTH_LDAP_SUPERUSER_GROUPS",
            "cn=admins,ou=groups,dc=example,dc=org",
        ),
    ] {
        env.config.set_str("environment", k, v);
    }
    secret(&mut env, "BITPOLL_EMAIL_HOST_PASSWORD", MAIL_PASSWORD);
    secret(&mut env, "BITPOLL_AUTH_LDAP_BIND_PASSWORD", LDAP_PASSWORD);
    let vals = values(&shell(&env, READ_BACK));
    let expect = [
        ("EMAIL_HOST", "'mail.example.org'"),
        ("EMAIL_PORT", "587"),
        ("EMAIL_HOST_USER", "'polls@example.org'"),
        ("EMAIL_HOST_PASSWORD", &format!("'{MAIL_PASSWORD}'")),
        ("EMAIL_USE_TLS", "True"),
        ("EMAIL_USE_SSL", "False"),
        ("EMAIL_TIMEOUT", "12"),
        ("DEFAULT_FROM_EMAIL", "'Polls <polls@example.org>'"),
        ("SERVER_EMAIL", "'Polls <polls@example.org>'"),
        ("TEAM_EMAIL", "'team@example.org'"),
        ("MAIL_SIGNATURE", "'The poll team'"),
        ("EMAIL_SUBJECT_PREFIX", "'[Example Polls] '"),
        ("REGISTER_ENABLED", "False"),
        ("GROUP_MANAGEMENT", "False"),
        ("PUBLIC_POLLS", "False"),
        ("POLL_CREATION_REQUIRES_LOGIN", "True"),
        ("CALENDAR_ENABLED", "False"),
        ("HOME_URL", "'https://www.example.org'"),
        ("HOME_URL_NAME", "'Example'"),
        ("IMPRINT_URL", "'https://www.example.org/imprint'"),
        ("PRIVACY_URL", "'https://www.example.org/privacy'"),
        ("URL_PREFIX", "'polls'"),
        ("SITE_NAME", "'Example Polls'"),
        ("BASE_URL", "'https://polls.example.org'"),
        ("LANGUAGE_CODE", "'en-us'"),
        ("TIME_ZONE", "'UTC'"),
        ("SESSION_COOKIE_SECURE", "True"),
        (
            "AUTHENTICATION_BACKENDS",
            "('django_auth_ldap.backend.LDAPBackend', 'django.contrib.auth.backends.ModelBackend')",
        ),
        ("AUTH_LDAP_SERVER_URI", "'ldaps://ldap.example.org'"),
        ("AUTH_LDAP_BIND_DN", &format!("'{LDAP_BIND_DN}'")),
        ("AUTH_LDAP_BIND_PASSWORD", &format!("'{LDAP_PASSWORD}'")),
        ("AUTH_LDAP_START_TLS", "False"),
        (
            "AUTH_LDAP_USER_ATTR_MAP",
            "{'first_name': 'givenName', 'email': 'mail'}",
        ),
        ("AUTH_LDAP_ALWAYS_UPDATE_USER", "True"),
        ("AUTH_LDAP_MIRROR_GROUPS", "True"),
        (
            "AUTH_LDAP_USER_FLAGS_BY_GROUP",
            "{'is_staff': ['cn=editors,ou=groups,dc=example,dc=org', 'cn=admins,ou=groups,dc=example,dc=org'], 'is_superuser': ['cn=admins,ou=groups,dc=example,dc=org']}",
        ),
        (
            "AUTH_LDAP_USER_SEARCH",
            "'ou=People,dc=example,dc=org' '(mail=%(user)s)'",
        ),
        (
            "AUTH_LDAP_GROUP_SEARCH",
            "'ou=groups,dc=example,dc=org' '(objectClass=groupOfNames)' GroupOfNamesType",
        ),
    ];
    for (name, want) in expect {
        assert_eq!(value(&vals, name), want, "{name}");
    }

    // Without any of them: Bitpoll's behaviour, and no LDAP backend. (One test world at
    // a time: the first goes before the next is made.)
    drop(env);
    let Some(bare) = real_env("contract-defaults") else {
        return;
    };
    let vals = values(&shell(&bare, READ_BACK));
    for (name, want) in [
        ("EMAIL_HOST", "'localhost'"),
        ("EMAIL_PORT", "25"),
        ("EMAIL_HOST_PASSWORD", "''"),
        ("EMAIL_SUBJECT_PREFIX", "'[Bitpoll] '"),
        ("REGISTER_ENABLED", "True"),
        ("GROUP_MANAGEMENT", "True"),
        ("HOME_URL", "''"),
        (
            "AUTHENTICATION_BACKENDS",
            "['django.contrib.auth.backends.ModelBackend']",
        ),
        ("AUTH_LDAP_SERVER_URI", "'<unset>'"),
    ] {
        assert_eq!(value(&vals, name), want, "{name} by default");
    }
}

#[test]
fn a_malformed_variable_stops_the_start_naming_it() {
    crate::util::root_only!();
    let Some(mut env) = real_env("contract-bad") else {
        return;
    };
    for (k, v, says) in [
        (
            "BITPOLL_EMAIL_PORT",
            "smtp",
            "BITPOLL_EMAIL_PORT='smtp' is not a whole number from 1 to 65535",
        ),
        (
            "BITPOLL_REGISTER_ENABLED",
            "maybe",
            "BITPOLL_REGISTER_ENABLED='maybe' is not a boolean",
        ),
        (
            "BITPOLL_AUTH_LDAP_SERVER_URI",
            "ldap://ldap.example.org",
            "neither BITPOLL_AUTH_LDAP_USER_SEARCH_BASE nor BITPOLL_AUTH_LDAP_USER_DN_TEMPLATE",
        ),
    ] {
        env.config.set_str("environment", k, v);
        let out = cli::manage(&env, &["check"]);
        assert_ne!(out.code, 0, "{k}={v}:\n{}", out.context());
        assert!(out.stderr.contains(says), "{k}={v}:\n{}", out.context());
        env.config.remove("environment", k);
    }
    env.config
        .set_str("environment", "BITPOLL_EMAIL_USE_TLS", "true");
    env.config
        .set_str("environment", "BITPOLL_EMAIL_USE_SSL", "true");
    let out = cli::manage(&env, &["check"]);
    assert!(
        out.stderr.contains("are both on; choose one"),
        "{}",
        out.context()
    );
}

/// What the SMTP listener heard.
#[derive(Debug, Default)]
struct Heard {
    commands: Vec<String>,
    data: String,
}

/// A one-connection SMTP server on 127.0.0.1 that offers AUTH PLAIN and accepts one
/// message; its port and what it heard (once the client said QUIT).
fn smtp_listener() -> (u16, mpsc::Receiver<Heard>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP listener");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept the SMTP client");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut heard = Heard::default();
        let _ = out.write_all(b"220 test.invalid ESMTP\r\n");
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let cmd = line.trim_end().to_string();
            let verb = cmd
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            heard.commands.push(cmd.clone());
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-test.invalid\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
                "AUTH" => b"235 2.7.0 accepted\r\n",
                "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 ok\r\n",
                "DATA" => {
                    let _ = out.write_all(b"354 go on\r\n");
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        heard.data.push_str(&line);
                    }
                    b"250 2.0.0 queued\r\n"
                }
                "QUIT" => {
                    let _ = out.write_all(b"221 bye\r\n");
                    break;
                }
                _ => b"502 5.5.2 not here\r\n",
            };
            let _ = out.write_all(reply);
        }
        let _ = tx.send(heard);
    });
    (port, rx)
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = alphabet
            .iter()
            .position(|a| *a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn mail_goes_out_through_the_configured_server_with_the_password_secret() {
    crate::util::root_only!();
    let Some(mut env) = real_env("contract-smtp") else {
        return;
    };
    let (port, heard) = smtp_listener();
    env.config
        .set_str("environment", "BITPOLL_EMAIL_HOST", "127.0.0.1")
        .set_str("environment", "BITPOLL_EMAIL_PORT", &port.to_string())
        .set_str(
            "environment",
            "BITPOLL_EMAIL_HOST_USER",
            "polls@example.org",
        )
        .set_str(
            "environment",
            "BITPOLL_DEFAULT_FROM_EMAIL",
            "polls@example.org",
        );
    secret(&mut env, "BITPOLL_EMAIL_HOST_PASSWORD", MAIL_PASSWORD);
    let out = cli::manage(&env, &["sendtestemail", "admin@example.org"]);
    assert_eq!(out.code, 0, "sendtestemail:\n{}", out.context());
    let heard = heard
        .recv_timeout(Duration::from_secs(60))
        .expect("the SMTP listener heard the conversation");
    let auth = heard
        .commands
        .iter()
        .find(|c| c.starts_with("AUTH PLAIN "))
        .unwrap_or_else(|| panic!("no AUTH PLAIN: {heard:?}"));
    let creds = base64_decode(auth.trim_start_matches("AUTH PLAIN "));
    assert_eq!(
        creds,
        format!("\0polls@example.org\0{MAIL_PASSWORD}").into_bytes(),
        "{heard:?}"
    );
    assert!(
        heard
            .commands
            .iter()
            .any(|c| c.eq_ignore_ascii_case("MAIL FROM:<polls@example.org>")),
        "{heard:?}"
    );
    assert!(
        heard
            .commands
            .iter()
            .any(|c| c.eq_ignore_ascii_case("RCPT TO:<admin@example.org>")),
        "{heard:?}"
    );
    assert!(
        heard.data.contains("Subject: Test email from"),
        "{}",
        heard.data
    );
}

#[test]
fn the_ldap_backend_binds_with_the_configured_dn_and_password_secret() {
    crate::util::root_only!();
    let Some(mut env) = real_env("contract-ldap") else {
        return;
    };
    // The first LDAP message a client sends to search for the user is its simple bind:
    // the DN and the password travel as plain octet strings in it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the LDAP listener");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _): (TcpStream, _) = listener.accept().expect("accept the client");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        let _ = tx.send(buf);
        // Closing the connection: the client reports the server as down.
    });
    env.config
        .set_str(
            "environment",
            "BITPOLL_AUTH_LDAP_SERVER_URI",
            &format!("ldap://127.0.0.1:{port}"),
        )
        .set_str("environment", "BITPOLL_AUTH_LDAP_BIND_DN", LDAP_BIND_DN)
        .set_str(
            "environment",
            "BITPOLL_AUTH_LDAP_USER_SEARCH_BASE",
            "ou=People,dc=example,dc=org",
        );
    secret(&mut env, "BITPOLL_AUTH_LDAP_BIND_PASSWORD", LDAP_PASSWORD);
    let out = shell(
        &env,
        "from django.contrib.auth import authenticate; print('user:', authenticate(username='alice', password='x'))",
    );
    assert!(out.stdout.contains("user: None"), "{}", out.context());
    let bind = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the LDAP listener got a message");
    let text = String::from_utf8_lossy(&bind);
    assert!(
        text.contains(LDAP_BIND_DN) && text.contains(LDAP_PASSWORD),
        "the bind request holds neither the DN nor the password: {bind:?}"
    );
}

#[test]
fn with_registration_off_the_running_server_has_no_registration_page() {
    crate::util::root_only!();
    let Some(mut env) = real_env("contract-register") else {
        return;
    };
    env.config
        .set_str("environment", "BITPOLL_REGISTER_ENABLED", "false");
    env.launch();
    env.wait_ready(READY);
    let page = env.http_get("/registration/request_account");
    assert_eq!(page.status, 404, "{}", page.body);
    assert_eq!(env.http_get("/groups/").status, 404);
    assert_eq!(env.http_get("/login/").status, 200);
    env.stop();

    env.config
        .set_str("environment", "BITPOLL_REGISTER_ENABLED", "true");
    env.launch();
    env.wait_ready(READY);
    let page = env.http_get("/registration/request_account");
    assert_eq!(page.status, 200, "{}", page.body);
    env.stop();
}
