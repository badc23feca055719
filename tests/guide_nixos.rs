//! docs/guides/nixos.md, as far as this machine can take it (nix-instantiate without a
//! store or nixpkgs): every Nix block parses; the configuration blocks evaluate (they need
//! no nixpkgs), every `services.bitpoll` option they set is declared in nixos/module.nix,
//! and every BITPOLL_* variable they set is in the settings reference. The module itself
//! is evaluated with these options by nixos/tests/module-eval.nix under `nix flake check`.
//!
//! Needs nix-instantiate (scripts/test.sh installs nix-bin); BITPOLL_SKIP_NIX=1 skips.

mod guide;

use std::fs;
use std::path::Path;
use std::process::Command;

const GUIDE: &str = "docs/guides/nixos.md";

fn nix_available() -> bool {
    if std::env::var("BITPOLL_SKIP_NIX").as_deref() == Ok("1") {
        eprintln!("SKIP: BITPOLL_SKIP_NIX=1");
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
            if let Some(m) = v.as_object() {
                vars.extend(m.keys().cloned());
            }
        } else {
            option_paths(v, &path, out, vars);
        }
    }
}

#[test]
fn the_nixos_guide_parses_and_sets_only_declared_options() {
    if !nix_available() {
        return;
    }
    let module = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/module.nix"))
        .expect("read nixos/module.nix");
    let settings =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/settings.md"))
            .expect("read docs/settings.md");
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
        let bitpoll = &v["services"]["bitpoll"];
        assert!(
            bitpoll.is_object(),
            "{name} sets no services.bitpoll: {json}"
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
                "{GUIDE} block {name}: services.bitpoll.{path} is not declared in nixos/module.nix"
            );
            checked += 1;
        }
        for var in &vars {
            assert!(
                settings.contains(&format!("`{var}`")),
                "{GUIDE} block {name}: {var} is not in docs/settings.md"
            );
        }
    }
    assert!(checked >= 10, "only {checked} options checked");
}
