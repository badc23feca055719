//! docs/guides/nixos.md, as far as this machine can take it (nix-instantiate without a
//! store or nixpkgs): every Nix block parses; the configuration blocks evaluate (they need
//! no nixpkgs), every `services.bitpoll` option they set is declared in nixos/module.nix,
//! and every BITPOLL_* variable they set is in the settings reference. The module itself
//! is evaluated with these options by nixos/tests/module-eval.nix under `nix flake check`.
//! The NixOS parts of the day-2 pages likewise: upgrade.md's commands and input override
//! name what the NixOS guide's flake and this repository's flake.nix declare;
//! postgresql.md's configuration evaluates and sets declared options and `[database]` keys.
//! `nix flake update` and `nixos-rebuild` themselves run only where Nix is installed.
//!
//! Needs nix-instantiate (scripts/test.sh installs nix-bin); BITPOLL_SKIP_NIX=1 skips.

use crate::guide;

use std::fs;
use std::path::Path;
use std::process::Command;

const GUIDE: &str = "docs/guides/nixos.md";

fn nix_available() -> bool {
    if std::env::var("BITPOLL_SKIP_NIX").as_deref() == Ok("1") {
        crate::util::skip("BITPOLL_SKIP_NIX=1");
        return false;
    }
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "nix-instantiate is missing: apt-get install nix-bin (or set BITPOLL_SKIP_NIX=1)"
    );
    true
}

fn nix(args: &[&str], expr: &str) -> String {
    let out = Command::new("nix-instantiate")
        .args(args)
        .args(["--expr", expr])
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate {args:?} failed on:\n{expr}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Option paths below `services.bitpoll` a value sets; the attribute sets of free-form
/// options (environment, secretFiles, settings) are not descended into.
fn option_paths(
    v: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
    vars: &mut Vec<String>,
) {
    let Some(map) = v.as_object() else {
        out.push(prefix.to_string());
        return;
    };
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if ["environment", "secretFiles", "settings"].contains(&k.as_str()) && prefix.is_empty() {
            out.push(path);
            if let Some(m) = v.as_object().filter(|_| k != "settings") {
                vars.extend(m.keys().cloned());
            }
        } else {
            option_paths(v, &path, out, vars);
        }
    }
}

fn read(rel: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Asserts that every `services.bitpoll` option the evaluated block `v` sets is declared
/// in nixos/module.nix and every BITPOLL_* variable it sets is in the settings reference;
/// returns how many options it checked.
fn check_bitpoll_options(page: &str, name: &str, v: &serde_json::Value) -> usize {
    let module = read("nixos/module.nix");
    let settings = read("docs/settings.md");
    let bitpoll = &v["services"]["bitpoll"];
    assert!(
        bitpoll.is_object(),
        "{page} block {name} sets no services.bitpoll: {v}"
    );
    let (mut paths, mut vars) = (Vec::new(), Vec::new());
    option_paths(bitpoll, "", &mut paths, &mut vars);
    for path in &paths {
        // Each component is declared: a leaf as an option, a parent as a set of them.
        let parts: Vec<&str> = path.split('.').collect();
        let (leaf, parents) = parts.split_last().unwrap();
        let option = |name: &str| {
            ["mkOption", "mkEnableOption", "mkPackageOption"]
                .iter()
                .any(|f| module.contains(&format!("{name} = {f}")))
        };
        // Declared as a dotted name, or each parent as a set of options and the leaf.
        let declared = option(path)
            || (parents
                .iter()
                .all(|p| module.contains(&format!("    {p} = {{")))
                && option(leaf));
        assert!(
            declared,
            "{page} block {name}: services.bitpoll.{path} is not declared in nixos/module.nix"
        );
    }
    for var in &vars {
        assert!(
            settings.contains(&format!("`{var}`")),
            "{page} block {name}: {var} is not in docs/settings.md"
        );
    }
    paths.len()
}

#[test]
fn the_nixos_guide_parses_and_sets_only_declared_options() {
    if !nix_available() {
        return;
    }
    let blocks = guide::blocks(GUIDE);
    assert!(blocks.len() >= 3, "{blocks:?}");
    let mut checked = 0;
    for (name, text) in &blocks {
        nix(&["--parse"], text);
        if name == "flake" {
            assert!(
                text.contains("bitpoll-launcher.nixosModules.default"),
                "{text}"
            );
            continue;
        }
        let json = nix(&["--eval", "--strict", "--json"], text);
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON from nix");
        checked += check_bitpoll_options(GUIDE, name, &v);
    }
    assert!(checked >= 10, "only {checked} options checked");
}

/// The NixOS parts of the day-2 pages, as far as they can be taken here: upgrade.md's
/// commands name the input and the host of the NixOS guide's flake, and its override of
/// Bitpoll's source names the input this repository's flake.nix pins, in the same form;
/// postgresql.md's configuration evaluates, sets declared options, only `[database]`
/// keys the configuration reference lists, and a PostgreSQL role and database that match.
#[test]
fn the_nix_blocks_of_the_day_two_pages_evaluate_and_name_what_exists() {
    if !nix_available() {
        return;
    }
    const UPGRADE: &str = "docs/guides/upgrade.md";
    const POSTGRESQL: &str = "docs/guides/postgresql.md";
    let flake_nix = Path::new(env!("CARGO_MANIFEST_DIR")).join("flake.nix");

    // The host's flake of the NixOS guide, its outputs called with stand-ins for its inputs.
    let host_flake = guide::block(GUIDE, "flake");
    let json = nix(
        &["--eval", "--strict", "--json"],
        &format!(
            "let f = {host_flake}; in {{ inputs = builtins.attrNames f.inputs; hosts = builtins.attrNames \
             (f.outputs {{ nixpkgs.lib.nixosSystem = x: x; bitpoll-launcher.nixosModules.default = null; }}).nixosConfigurations; }}"
        ),
    );
    let host: serde_json::Value = serde_json::from_str(&json).unwrap();
    let update = guide::block(UPGRADE, "nixos-update");
    for input in host["inputs"].as_array().unwrap() {
        let input = input.as_str().unwrap();
        if input != "nixpkgs" {
            assert!(
                update.contains(&format!("nix flake update {input}\n")),
                "{UPGRADE} nixos-update does not update the input {input}: {update}"
            );
        }
    }
    let hosts = host["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{json}");
    let rebuild = format!(
        "nixos-rebuild switch --flake .#{}",
        hosts[0].as_str().unwrap()
    );
    assert!(update.contains(&rebuild), "{update} lacks {rebuild}");

    // The override of Bitpoll's source: the pinned input of this repository's flake.
    let json = nix(
        &["--eval", "--strict", "--json"],
        &format!("(import {}).inputs.bitpoll-src", flake_nix.display()),
    );
    let pinned: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pinned["flake"], false, "{json}");
    let url = pinned["url"].as_str().unwrap();
    let rev = url.rsplit('/').next().unwrap();
    assert_eq!(rev.len(), 40, "{url}");
    let page = read(UPGRADE);
    assert!(
        page.contains(&format!("(`{rev}`)")),
        "{UPGRADE} does not name the pinned commit {rev}"
    );
    let input = guide::block(UPGRADE, "nixos-bitpoll-input");
    nix(&["--parse"], &input);
    assert_eq!(input.matches("COMMIT").count(), 1, "{input}");
    let json = nix(
        &["--eval", "--strict", "--json"],
        &input.replace("COMMIT", rev),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["inputs"]["bitpoll-launcher"]["inputs"]["bitpoll-src"]["url"].as_str(),
        Some(url),
        "{UPGRADE} nixos-bitpoll-input: {json}"
    );
    assert!(
        host["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "bitpoll-launcher"),
        "the NixOS guide's flake has no input bitpoll-launcher"
    );

    // PostgreSQL on NixOS.
    let text = guide::block(POSTGRESQL, "nixos-postgresql");
    nix(&["--parse"], &text);
    let json = nix(&["--eval", "--strict", "--json"], &text);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    check_bitpoll_options(POSTGRESQL, "nixos-postgresql", &v);
    let database = v["services"]["bitpoll"]["settings"]["database"]
        .as_object()
        .expect("settings.database");
    let reference = read("docs/configuration.md");
    let section = &reference[reference
        .find("## `[database]`")
        .expect("the [database] section of docs/configuration.md")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    for key in database.keys() {
        assert!(
            section.contains(&format!("| `{key}` |")),
            "{POSTGRESQL}: database.{key} is not a key of [database] in docs/configuration.md"
        );
    }
    assert_eq!(database["engine"], "postgresql");
    let postgresql = &v["services"]["postgresql"];
    assert_eq!(postgresql["enable"], true);
    assert!(
        postgresql["ensureDatabases"]
            .as_array()
            .unwrap()
            .contains(&database["name"]),
        "{json}"
    );
    let users = postgresql["ensureUsers"].as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|u| u["name"] == database["user"] && u["ensureDBOwnership"] == true),
        "{json}"
    );
}
