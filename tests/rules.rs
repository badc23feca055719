//! The rule table (launcher_plan::rule) is the one source of the finding ids docs/check.md
//! lists and of the journal catalog `bitpoll-launcher catalog` prints; this keeps both in
//! sync with it and has journalctl itself parse the catalog.
//!
//! Regenerate the id table of docs/check.md with `BITPOLL_BLESS=1 cargo test --test suite rules::`.

use std::path::Path;
use std::process::Command;

use launcher_plan::rule::{Rule, catalog};

const BIN: &str = env!("CARGO_BIN_EXE_bitpoll-launcher");
const BEGIN: &str = "<!-- finding ids: generated from the rule table (crates/plan/src/rule.rs) by `BITPOLL_BLESS=1 cargo test --test suite rules::` -->\n";
const END: &str = "<!-- end of finding ids -->\n";

fn id_table() -> String {
    let mut out = String::from("| id | about | journal `MESSAGE_ID` |\n| --- | --- | --- |\n");
    for rule in Rule::ALL {
        let id = if *rule == Rule::DjangoCheck {
            "django:ID".to_string()
        } else {
            rule.id().to_string()
        };
        let message_id = if rule.in_catalog() {
            format!("`{}`", rule.message_id())
        } else {
            String::new()
        };
        out.push_str(&format!("| `{id}` | {} | {message_id} |\n", rule.title()));
    }
    out
}

#[test]
fn docs_check_md_lists_every_finding_id() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/check.md");
    let have = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (have.find(BEGIN), have.find(END)) else {
        panic!("docs/check.md lacks the id table's markers {BEGIN:?} and {END:?}");
    };
    let want = format!("{}{BEGIN}{}{}", &have[..start], id_table(), &have[end..]);
    if std::env::var_os("BITPOLL_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        have == want,
        "docs/check.md's finding ids are out of date with the rule table; run `BITPOLL_BLESS=1 cargo test --test suite rules::` and review the diff"
    );
}

#[test]
fn the_catalog_subcommand_prints_the_rule_tables_catalog() {
    let out = Command::new(BIN).arg("catalog").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), catalog());
}

/// journalctl (the host's) reads the catalog into its database and gives every entry back.
#[test]
fn journalctl_reads_every_entry_of_the_catalog() {
    let Some(journalctl) = ["/usr/bin/journalctl", "/bin/journalctl"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        crate::util::skip("needs journalctl (apt-get install systemd)");
        return;
    };
    let root = std::env::temp_dir().join(format!("blt-catalog-{}", std::process::id()));
    let _cleanup = Cleanup(root.clone());
    let dir = root.join("usr/lib/systemd/catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(root.join("var/lib/systemd/catalog")).unwrap();
    std::fs::write(dir.join("bitpoll-launcher.catalog"), catalog()).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(journalctl)
            .arg(format!("--root={}", root.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "journalctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["--update-catalog"]);
    let listed = run(&["--list-catalog"]);
    for rule in Rule::ALL.iter().filter(|r| r.in_catalog()) {
        let line = listed
            .lines()
            .find(|l| l.starts_with(rule.message_id()))
            .unwrap_or_else(|| panic!("{} is not in the catalog:\n{listed}", rule.id()));
        assert!(line.contains("bitpoll-launcher: "), "{line}");
        let entry = run(&["--dump-catalog", rule.message_id()]);
        assert!(
            entry.contains(&format!("as {} (its JSON field", rule.id())),
            "{entry}"
        );
    }
    let ours = listed
        .lines()
        .filter(|l| l.contains(" bitpoll-launcher: "))
        .count();
    assert_eq!(ours, Rule::ALL.iter().filter(|r| r.in_catalog()).count());
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
