//! The commands of the admin guides (docs/guides/*.md) as the tests run them: a fenced
//! block directly after a line `<!-- test: NAME -->` is the block NAME. A test runs it as
//! written (`bash -euo pipefail -c TEXT`), or, where it cannot (a download this machine
//! cannot make), checks what it says and does the same from a local source, saying so.

use std::fs;
use std::path::Path;

/// The blocks of a guide, in order: (name, the block's text without its fences).
pub fn blocks(guide: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(guide);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- test: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{guide}: the line after <!-- test: {name} --> is not a fence: {fence}"
        );
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        assert!(
            !out.iter().any(|(n, _): &(String, String)| n == name),
            "{guide}: two blocks are named {name}"
        );
        out.push((name.to_string(), body));
    }
    out
}

/// The block NAME of a guide; panics naming the guide when it has none.
pub fn block(guide: &str, name: &str) -> String {
    blocks(guide)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("{guide} has no block <!-- test: {name} -->"))
}

/// The words of a block's `apt-get install` line after its options.
pub fn apt_packages(block: &str) -> Vec<String> {
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("apt-get install"))
        .expect("an apt-get install line");
    line.split_whitespace()
        .skip(2)
        .filter(|w| !w.starts_with('-'))
        .map(str::to_string)
        .collect()
}
