//! Preparation stamps: skip a step whose inputs did not change since it last succeeded,
//! and whose output is still there.
//!
//! A stamp is written only after its step finished successfully. It holds:
//! - the *inputs*: a short hash per input the step reads (interpreter, app source,
//!   settings module, each variable of the app's environment with secret values left out
//!   and the service manager's and the fixed defaults left out), and a fingerprint over all of them,
//!   computed before the step ran; when one changes, the log names it;
//! - the *witness*: a description of the step's output right after success (the database
//!   file's identity, the static manifest, the compiled catalogs);
//! - for migrate, the *migrations* Django knew on disk, so that the database's own
//!   `django_migrations` can be checked against them (see [`crate::judge::prepare`]).
//!
//! A step is skipped only when all of them still hold.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::Step;
use crate::env::{ALLOWLIST, DEFAULTS, VOLATILE};

const HEADER: &str = "bitpoll-launcher stamp v2";
const OLD_HEADER: &str = "bitpoll-launcher stamp v1";

/// What a step's fingerprint is made of.
pub struct FingerprintInputs<'a> {
    pub step: Step,
    /// Interpreter path and identity (device, inode, size, mtime of its resolved target).
    pub python: &'a str,
    /// Digest of the app source tree (see the observer's source walk).
    pub source_digest: &'a str,
    pub settings_module: &'a str,
    /// The preparation environment.
    pub env: &'a crate::env::Env,
    /// Names of variables whose values are secrets: only their names are hashed.
    pub secret_names: &'a [&'a str],
    /// Names the config sets in [environment]: these count even when they are also
    /// inherited names (an explicit LANG).
    pub configured: &'a [&'a str],
}

/// The inputs of a step, each as a short hash, and the fingerprint over all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub inputs: BTreeMap<String, String>,
    pub digest: String,
}

/// Hash every input. The variables the service manager sets for one start and the fixed
/// defaults (PATH, which follows the interpreter, and LANG) are left out unless the config
/// sets them: a start from a root shell and a start by systemd must not disagree, and an
/// upgrade from a launcher that passed the caller's PATH on keeps its stamps.
pub fn fingerprint(inputs: &FingerprintInputs<'_>) -> Fingerprint {
    let mut map = BTreeMap::new();
    map.insert("interpreter".to_string(), short(inputs.python));
    map.insert("app source".to_string(), short(inputs.source_digest));
    map.insert("settings module".to_string(), short(inputs.settings_module));
    // Secrets count by name, whether or not this observer could read their values.
    for k in inputs.secret_names {
        map.insert(format!("${k}"), short("<secret>"));
    }
    for (k, v) in inputs.env.iter() {
        let inherited =
            (ALLOWLIST.contains(&k) || DEFAULTS.contains(&k)) && !inputs.configured.contains(&k);
        if VOLATILE.contains(&k) || inherited || inputs.secret_names.contains(&k) {
            continue;
        }
        map.insert(format!("${k}"), short(v));
    }
    let mut h = Sha256::new();
    field(&mut h, "step", inputs.step.name());
    for (k, v) in &map {
        field(&mut h, k, v);
    }
    Fingerprint {
        inputs: map,
        digest: hex(&h.finalize()),
    }
}

fn field(h: &mut Sha256, name: &str, value: &str) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update((value.len() as u64).to_le_bytes());
    h.update(value.as_bytes());
}

/// The first 16 hex digits of a SHA-256: enough to tell inputs apart, short in a stamp.
fn short(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes())[..8])
}

/// Lower-case hex digits of `bytes` (every start judges dozens of inputs: no formatting
/// machinery per byte).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A stamp as stored in `<data_dir>/state/<step>.stamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub step: Step,
    pub fingerprint: Fingerprint,
    pub witness: String,
    /// Seconds since the epoch when the step finished.
    pub finished: u64,
    /// migrate only: every migration Django knew on disk ("app.name"), sorted.
    pub migrations: Option<Vec<String>>,
}

impl Stamp {
    pub fn render(&self) -> String {
        let mut out = format!(
            "{HEADER}\nstep={}\nfingerprint={}\nwitness={}\nfinished={}\n",
            self.step.name(),
            self.fingerprint.digest,
            self.witness.replace('\n', " "),
            self.finished
        );
        for (k, v) in &self.fingerprint.inputs {
            out.push_str(&format!("input={v} {}\n", k.replace('\n', " ")));
        }
        if let Some(m) = &self.migrations {
            out.push_str(&format!("migrations={}\n", m.join(" ")));
        }
        out
    }

    /// Parse a stamp; None for anything that is not a complete, well-formed stamp.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let (mut step, mut digest, mut witness, mut finished, mut migrations) =
            (None, None, None, None, None);
        let mut inputs = BTreeMap::new();
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "step" => step = Step::from_name(v),
                "fingerprint" => digest = Some(v.to_string()),
                "witness" => witness = Some(v.to_string()),
                "finished" => finished = v.parse().ok(),
                "input" => {
                    let (hash, name) = v.split_once(' ')?;
                    inputs.insert(name.to_string(), hash.to_string());
                }
                "migrations" => {
                    migrations = Some(
                        v.split(' ')
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect(),
                    )
                }
                _ => return None,
            }
        }
        Some(Stamp {
            step: step?,
            fingerprint: Fingerprint {
                inputs,
                digest: digest?,
            },
            witness: witness?,
            finished: finished?,
            migrations,
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
    /// The stamp was written by an older launcher that recorded less.
    OldStamp,
    /// These inputs changed (names as in [`Fingerprint::inputs`]).
    InputsChanged(Vec<String>),
    /// The step's output is gone or replaced (new database, deleted static files...).
    OutputChanged { was: String, now: String },
    /// The database does not hold every migration the last migrate applied (emptied,
    /// replaced or restored from an older copy).
    DatabaseBehind { missing: Vec<String>, count: usize },
    /// The database could not be read exactly, so it may need migrating.
    DatabaseUnknown(String),
    /// The admin asked for it.
    Forced,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoStamp => f.write_str("no record of an earlier success"),
            Reason::BadStamp => f.write_str("its stamp is unreadable"),
            Reason::OldStamp => f.write_str("its stamp is from an older launcher"),
            Reason::InputsChanged(what) => {
                write!(
                    f,
                    "the app, interpreter, settings or environment changed: {}",
                    abbreviate(what, 5)
                )
            }
            Reason::OutputChanged { was, now } => {
                write!(f, "its output changed (was {was}, now {now})")
            }
            Reason::DatabaseBehind { missing, count } => write!(
                f,
                "the database lacks {count} migration(s) applied before ({}): it was emptied, replaced or restored",
                abbreviate(missing, 3)
            ),
            Reason::DatabaseUnknown(why) => {
                write!(
                    f,
                    "the database's migrations cannot be read exactly ({why})"
                )
            }
            Reason::Forced => f.write_str("forced"),
        }
    }
}

/// "a, b, c and 4 more".
pub fn abbreviate(items: &[String], n: usize) -> String {
    if items.len() <= n {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..n].join(", "), items.len() - n)
    }
}

/// What the stamp alone says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Reason),
    /// Inputs and output unchanged; the stamp is handed on for further checks.
    Skip(Box<Stamp>),
}

/// Decide from the stored stamp text (if any), the fingerprint of the current inputs and
/// the current witness of the step's output.
pub fn decide(
    step: Step,
    stored: Option<&str>,
    fingerprint: &Fingerprint,
    witness: &str,
    force: bool,
) -> Decision {
    if force {
        return Decision::Run(Reason::Forced);
    }
    let Some(text) = stored else {
        return Decision::Run(Reason::NoStamp);
    };
    if text.lines().next() == Some(OLD_HEADER) {
        return Decision::Run(Reason::OldStamp);
    }
    let Some(stamp) = Stamp::parse(text).filter(|s| s.step == step) else {
        return Decision::Run(Reason::BadStamp);
    };
    if stamp.fingerprint.digest != fingerprint.digest {
        let mut changed: Vec<String> = fingerprint
            .inputs
            .iter()
            .filter(|(k, v)| stamp.fingerprint.inputs.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            stamp
                .fingerprint
                .inputs
                .keys()
                .filter(|k| !fingerprint.inputs.contains_key(*k))
                .cloned(),
        );
        return Decision::Run(Reason::InputsChanged(changed));
    }
    if stamp.witness != witness {
        return Decision::Run(Reason::OutputChanged {
            was: stamp.witness,
            now: witness.to_string(),
        });
    }
    Decision::Skip(Box::new(stamp))
}

/// Seconds since the epoch as "YYYY-MM-DD HH:MM:SS UTC".
pub fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_is_the_first_16_hex_digits_of_the_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(short("abc"), "ba7816bf8f01cfea");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    fn env(pairs: &[(&str, &str)]) -> crate::env::Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fp(env: &crate::env::Env, source: &str) -> Fingerprint {
        fingerprint(&FingerprintInputs {
            step: Step::Migrate,
            python: "/venv/bin/python 1:2",
            source_digest: source,
            settings_module: "bitpoll.settings",
            env,
            secret_names: &["BITPOLL_SECRET_KEY"],
            configured: &["TZ"],
        })
    }

    #[test]
    fn fingerprint_ignores_volatile_variables_secret_values_and_the_callers_locale() {
        let a = env(&[
            ("INVOCATION_ID", "1"),
            ("BITPOLL_SECRET_KEY", "a"),
            ("X", "1"),
            ("PATH", "/usr/bin"),
            ("LANG", "C.UTF-8"),
        ]);
        let b = env(&[
            ("INVOCATION_ID", "2"),
            ("BITPOLL_SECRET_KEY", "b"),
            ("X", "1"),
            ("PATH", "/root/bin:/usr/sbin"),
            ("LANG", "de_DE.UTF-8"),
        ]);
        assert_eq!(fp(&a, "src1"), fp(&b, "src1"));
        // A variable the config sets counts even when its name is inheritable.
        assert_ne!(
            fp(&env(&[("TZ", "UTC")]), "s"),
            fp(&env(&[("TZ", "Europe/Berlin")]), "s")
        );
    }

    #[test]
    fn fingerprint_changes_with_source_and_plain_environment() {
        let a = env(&[("X", "1")]);
        let b = env(&[("X", "2")]);
        assert_ne!(fp(&a, "src1"), fp(&b, "src1"));
        assert_ne!(fp(&a, "src1"), fp(&a, "src2"));
        assert_ne!(fp(&env(&[("XY", "")]), "s"), fp(&env(&[("X", "Y")]), "s"));
    }

    fn stamp(f: &Fingerprint) -> Stamp {
        Stamp {
            step: Step::Migrate,
            fingerprint: f.clone(),
            witness: "w1".into(),
            finished: 5,
            migrations: Some(vec!["poll.0001_initial".into(), "auth.0001_initial".into()]),
        }
    }

    #[test]
    fn stamp_round_trips() {
        let s = stamp(&fp(&env(&[("X", "1")]), "s"));
        assert_eq!(Stamp::parse(&s.render()), Some(s));
    }

    #[test]
    fn decisions_name_what_changed() {
        let f1 = fp(&env(&[("X", "1"), ("Y", "1")]), "s");
        let text = stamp(&f1).render();
        let d = |stored: Option<&str>, f: &Fingerprint, w: &str, force| {
            decide(Step::Migrate, stored, f, w, force)
        };
        assert!(matches!(
            d(Some(&text), &f1, "w1", false),
            Decision::Skip(_)
        ));
        assert_eq!(d(None, &f1, "w1", false), Decision::Run(Reason::NoStamp));
        assert_eq!(
            d(Some(&text), &fp(&env(&[("X", "2")]), "s2"), "w1", false),
            Decision::Run(Reason::InputsChanged(vec![
                "$X".into(),
                "app source".into(),
                "$Y".into()
            ]))
        );
        assert_eq!(
            d(Some(&text), &f1, "w2", false),
            Decision::Run(Reason::OutputChanged {
                was: "w1".into(),
                now: "w2".into()
            })
        );
        assert_eq!(
            d(
                Some("bitpoll-launcher stamp v2\nstep=migrate\n"),
                &f1,
                "w1",
                false
            ),
            Decision::Run(Reason::BadStamp)
        );
        assert_eq!(
            d(Some("hello"), &f1, "w1", false),
            Decision::Run(Reason::BadStamp)
        );
        assert_eq!(
            d(
                Some("bitpoll-launcher stamp v1\nstep=migrate\n"),
                &f1,
                "w1",
                false
            ),
            Decision::Run(Reason::OldStamp)
        );
        assert_eq!(
            d(Some(&text), &f1, "w1", true),
            Decision::Run(Reason::Forced)
        );
        assert_eq!(
            decide(Step::Collectstatic, Some(&text), &f1, "w1", false),
            Decision::Run(Reason::BadStamp),
            "a stamp of another step never counts"
        );
    }

    #[test]
    fn utc_formats_epoch_seconds() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_635_566), "2026-11-25 19:39:26 UTC");
    }
}
