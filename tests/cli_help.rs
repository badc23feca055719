//! docs/cli.md holds every subcommand's --help verbatim; this keeps the two in sync.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
const SUBCOMMANDS: &[&str] = &[
    "",
    "run",
    "check",
    "manage",
    "unit",
    "sysusers",
    "tmpfiles",
    "install",
    "uninstall",
    "catalog",
];

const HEADER: &str = "# Command-line reference

Every subcommand's `--help`, verbatim. A test (`tests/cli_help.rs`) keeps this page
identical to the binary's help texts; regenerate it with
`BITPOLL_BLESS=1 cargo test --test suite cli_help::`.

";

fn help(sub: &str) -> String {
    let mut cmd = Command::new(BIN);
    if !sub.is_empty() {
        cmd.arg(sub);
    }
    // A clean environment: clap shows the values of env-backed options.
    let out = cmd
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{sub} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

fn expected() -> String {
    let mut doc = HEADER.to_string();
    for sub in SUBCOMMANDS {
        let title = if sub.is_empty() {
            "bitpoll-launcher".to_string()
        } else {
            format!("bitpoll-launcher {sub}")
        };
        doc.push_str(&format!("## `{title}`\n\n```text\n{}```\n\n", help(sub)));
    }
    doc
}

#[test]
fn docs_cli_md_matches_every_help_text() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let want = expected();
    if std::env::var_os("BITPOLL_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli.md is out of date with --help; run `BITPOLL_BLESS=1 cargo test --test suite cli_help::` and review the diff"
    );
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("bitpoll-launcher {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_subcommand_documents_its_exit_codes_where_they_matter() {
    assert!(
        help("run").contains("128+N"),
        "run --help lists its exit codes"
    );
    assert!(
        help("check").contains("2  errors"),
        "check --help lists its exit codes"
    );
}
