//! Every relative link of the documentation (README.md, CONTRIBUTING.md, docs/, the
//! examples' READMEs) leads to a file of the repository, and a `#anchor` to a heading of
//! it (GitHub's anchors: lower case, punctuation dropped, spaces as dashes).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const TOP: &str = env!("CARGO_MANIFEST_DIR");

fn markdown_files() -> Vec<PathBuf> {
    let mut out = vec![
        PathBuf::from("README.md"),
        PathBuf::from("CONTRIBUTING.md"),
        PathBuf::from("examples/container/README.md"),
    ];
    let mut dirs = vec![PathBuf::from("docs")];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(Path::new(TOP).join(&dir))
            .expect("read docs")
            .flatten()
        {
            let rel = dir.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                dirs.push(rel);
            } else if rel.extension().is_some_and(|x| x == "md") {
                out.push(rel);
            }
        }
    }
    out
}

fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Lexically resolved `rel` against `dir` (`..` and `.` removed).
fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let mut out = dir.to_path_buf();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = fs::read_to_string(Path::new(TOP).join(&file)).unwrap();
        let mut in_code = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for (i, _) in line.match_indices("](") {
                let rest = &line[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let link = &rest[..end];
                if link.contains("://") || link.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
                let target = if path.is_empty() {
                    file.clone()
                } else {
                    resolve(file.parent().unwrap(), path)
                };
                let full = Path::new(TOP).join(&target);
                if !full.exists() {
                    broken.push(format!("{}: {link}: no such file", file.display()));
                } else if !anchor.is_empty() && full.extension().is_some_and(|x| x == "md") {
                    let heads = anchors(&fs::read_to_string(&full).unwrap());
                    if !heads.contains(anchor) {
                        broken.push(format!("{}: {link}: no such heading", file.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
