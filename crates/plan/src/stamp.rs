//! Preparation stamps: skip a step whose inputs did not change since it last succeeded.
//!
//! A stamp is written only after its step finished successfully. It holds two things:
//! - the *fingerprint*: a hash of everything the step reads (interpreter, app source tree,
//!   settings module, the app's environment with secret values left out), computed
//!   before the step runs;
//! - the *witness*: a description of the step's output as it stood right after success
//!   (the database file's identity, the static manifest, the compiled catalogs).
//!
//! A step is skipped only when both still match. A new database file, a deleted static
//! tree or a changed source file therefore makes it run again.

use sha2::{Digest, Sha256};

use crate::Step;
use crate::env::VOLATILE;

const HEADER: &str = "bitpoll-launcher stamp v1";

/// What a step's fingerprint is made of.
pub struct FingerprintInputs<'a> {
    pub step: Step,
    /// Interpreter path and identity (device, inode, size, mtime of its resolved target).
    pub python: &'a str,
    /// Digest of the app source tree (see the binary's source walk).
    pub source_digest: &'a str,
    pub settings_module: &'a str,
    /// The preparation environment.
    pub env: &'a [(String, String)],
    /// Names of variables whose values are secrets: only their names are hashed.
    pub secret_names: &'a [&'a str],
}

/// A hex SHA-256 over the inputs, in a fixed, unambiguous encoding.
pub fn fingerprint(inputs: &FingerprintInputs<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &str| {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    };
    field("step", inputs.step.name());
    field("python", inputs.python);
    field("source", inputs.source_digest);
    field("settings", inputs.settings_module);
    for (k, v) in inputs.env {
        if VOLATILE.contains(&k.as_str()) {
            continue;
        }
        if inputs.secret_names.contains(&k.as_str()) {
            field(k, "<secret>");
        } else {
            field(k, v);
        }
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stamp as stored in `<data_dir>/state/<step>.stamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub step: Step,
    pub fingerprint: String,
    pub witness: String,
    /// Seconds since the epoch when the step finished.
    pub finished: u64,
}

impl Stamp {
    pub fn render(&self) -> String {
        format!(
            "{HEADER}\nstep={}\nfingerprint={}\nwitness={}\nfinished={}\n",
            self.step.name(),
            self.fingerprint,
            self.witness.replace('\n', " "),
            self.finished
        )
    }

    /// Parse a stamp; None for anything that is not a complete, well-formed stamp.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut step = None;
        let mut fingerprint = None;
        let mut witness = None;
        let mut finished = None;
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "step" => step = Step::from_name(v),
                "fingerprint" => fingerprint = Some(v.to_string()),
                "witness" => witness = Some(v.to_string()),
                "finished" => finished = v.parse().ok(),
                _ => return None,
            }
        }
        Some(Stamp {
            step: step?,
            fingerprint: fingerprint?,
            witness: witness?,
            finished: finished?,
        })
    }
}

/// Why a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No stamp: the step never succeeded here (or its stamp was removed).
    NoStamp,
    /// The stamp is not readable as a stamp (truncated, foreign, other step).
    BadStamp,
    /// Interpreter, source, settings or environment changed.
    InputsChanged,
    /// The step's output is gone or replaced (new database, deleted static files...).
    OutputChanged { was: String, now: String },
    /// The admin asked for it.
    Forced,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoStamp => f.write_str("no record of an earlier success"),
            Reason::BadStamp => f.write_str("its stamp is unreadable"),
            Reason::InputsChanged => {
                f.write_str("the app, interpreter, settings or environment changed")
            }
            Reason::OutputChanged { was, now } => {
                write!(f, "its output changed (was {was}, now {now})")
            }
            Reason::Forced => f.write_str("forced"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Reason),
    Skip { finished: u64 },
}

/// Decide whether `step` runs, from the stored stamp text (if any), the fingerprint of
/// the current inputs and the current witness of its output.
pub fn decide(
    step: Step,
    stored: Option<&str>,
    fingerprint: &str,
    witness: &str,
    force: bool,
) -> Decision {
    if force {
        return Decision::Run(Reason::Forced);
    }
    let Some(text) = stored else {
        return Decision::Run(Reason::NoStamp);
    };
    let Some(stamp) = Stamp::parse(text).filter(|s| s.step == step) else {
        return Decision::Run(Reason::BadStamp);
    };
    if stamp.fingerprint != fingerprint {
        return Decision::Run(Reason::InputsChanged);
    }
    if stamp.witness != witness {
        return Decision::Run(Reason::OutputChanged {
            was: stamp.witness,
            now: witness.to_string(),
        });
    }
    Decision::Skip {
        finished: stamp.finished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fp(env: &[(String, String)], source: &str) -> String {
        fingerprint(&FingerprintInputs {
            step: Step::Migrate,
            python: "/venv/bin/python 1:2",
            source_digest: source,
            settings_module: "bitpoll.settings",
            env,
            secret_names: &["BITPOLL_SECRET_KEY"],
        })
    }

    #[test]
    fn fingerprint_ignores_volatile_variables_and_secret_values() {
        let a = env(&[
            ("INVOCATION_ID", "1"),
            ("BITPOLL_SECRET_KEY", "a"),
            ("X", "1"),
        ]);
        let b = env(&[
            ("INVOCATION_ID", "2"),
            ("BITPOLL_SECRET_KEY", "b"),
            ("X", "1"),
        ]);
        assert_eq!(fp(&a, "src1"), fp(&b, "src1"));
    }

    #[test]
    fn fingerprint_changes_with_source_and_plain_environment() {
        let a = env(&[("X", "1")]);
        let b = env(&[("X", "2")]);
        assert_ne!(fp(&a, "src1"), fp(&b, "src1"));
        assert_ne!(fp(&a, "src1"), fp(&a, "src2"));
        // The encoding is unambiguous: moving a boundary changes the hash.
        assert_ne!(fp(&env(&[("XY", "")]), "s"), fp(&env(&[("X", "Y")]), "s"));
    }

    #[test]
    fn stamp_round_trips() {
        let s = Stamp {
            step: Step::Collectstatic,
            fingerprint: "ab".into(),
            witness: "manifest present".into(),
            finished: 17,
        };
        assert_eq!(Stamp::parse(&s.render()), Some(s));
    }

    #[test]
    fn decisions() {
        let stamp = Stamp {
            step: Step::Migrate,
            fingerprint: "f1".into(),
            witness: "w1".into(),
            finished: 5,
        }
        .render();
        struct Case {
            name: &'static str,
            stored: Option<&'static str>,
            fp: &'static str,
            witness: &'static str,
            force: bool,
            want: Decision,
        }
        let stamp: &'static str = Box::leak(stamp.into_boxed_str());
        let cases = [
            Case {
                name: "unchanged",
                stored: Some(stamp),
                fp: "f1",
                witness: "w1",
                force: false,
                want: Decision::Skip { finished: 5 },
            },
            Case {
                name: "never ran",
                stored: None,
                fp: "f1",
                witness: "w1",
                force: false,
                want: Decision::Run(Reason::NoStamp),
            },
            Case {
                name: "inputs changed",
                stored: Some(stamp),
                fp: "f2",
                witness: "w1",
                force: false,
                want: Decision::Run(Reason::InputsChanged),
            },
            Case {
                name: "output replaced",
                stored: Some(stamp),
                fp: "f1",
                witness: "w2",
                force: false,
                want: Decision::Run(Reason::OutputChanged {
                    was: "w1".into(),
                    now: "w2".into(),
                }),
            },
            Case {
                name: "truncated",
                stored: Some("bitpoll-launcher stamp v1\nstep=migrate\n"),
                fp: "f1",
                witness: "w1",
                force: false,
                want: Decision::Run(Reason::BadStamp),
            },
            Case {
                name: "garbage",
                stored: Some("hello"),
                fp: "f1",
                witness: "w1",
                force: false,
                want: Decision::Run(Reason::BadStamp),
            },
            Case {
                name: "forced",
                stored: Some(stamp),
                fp: "f1",
                witness: "w1",
                force: true,
                want: Decision::Run(Reason::Forced),
            },
        ];
        for c in cases {
            assert_eq!(
                decide(Step::Migrate, c.stored, c.fp, c.witness, c.force),
                c.want,
                "{}",
                c.name
            );
        }
        assert_eq!(
            decide(Step::Collectstatic, Some(stamp), "f1", "w1", false),
            Decision::Run(Reason::BadStamp),
            "a stamp of another step never counts"
        );
    }
}
