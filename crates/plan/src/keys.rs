//! Key continuity: a keyed fingerprint of the keys that protect the data, recorded in
//! `<data_dir>/state/keys` after a successful start, so a later start can tell that
//! FIELD_ENCRYPTION_KEY or SECRET_KEY changed without ever storing a key.
//!
//! A fingerprint is SHA-256 over a random per-deployment salt (kept in the record) and the
//! key: it identifies a key to whoever holds the key, and nothing more. FIELD_ENCRYPTION_KEY
//! may be a rotation list, `NEW,OLD,...` (django-encrypted-model-fields encrypts with the
//! first and decrypts with any): every key of the list is recorded.

use sha2::{Digest, Sha256};

const HEADER: &str = "bitpoll-launcher keys v1";

/// The variables whose keys are tracked.
pub const FIELD_KEY: &str = "BITPOLL_FIELD_ENCRYPTION_KEY";
pub const SECRET_KEY: &str = "BITPOLL_SECRET_KEY";

/// The keys of a FIELD_ENCRYPTION_KEY value: one key, or a comma-separated rotation list.
pub fn field_keys(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect()
}

/// The fingerprint of `key` under `salt` (hex).
pub fn fingerprint(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update((salt.len() as u64).to_le_bytes());
    h.update(salt.as_bytes());
    h.update(key.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What `state/keys` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Random hex, chosen when the record is first written.
    pub salt: String,
    /// Fingerprints of every FIELD_ENCRYPTION_KEY configured at the recorded start.
    pub field: Vec<String>,
    /// Fingerprint of the SECRET_KEY of the recorded start.
    pub secret: Option<String>,
    /// Seconds since the epoch of the recorded start.
    pub recorded: u64,
}

impl Record {
    /// The record for the keys of this start, keeping `previous`'s salt.
    pub fn of(salt: String, field: Option<&str>, secret: Option<&str>, now: u64) -> Record {
        Record {
            field: field
                .map(|v| {
                    field_keys(v)
                        .iter()
                        .map(|k| fingerprint(&salt, k))
                        .collect()
                })
                .unwrap_or_default(),
            secret: secret.map(|k| fingerprint(&salt, k)),
            salt,
            recorded: now,
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!("{HEADER}\nsalt={}\nrecorded={}\n", self.salt, self.recorded);
        for f in &self.field {
            out.push_str(&format!("field={f}\n"));
        }
        if let Some(s) = &self.secret {
            out.push_str(&format!("secret={s}\n"));
        }
        out
    }

    /// None for anything but a complete, well-formed record.
    pub fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let (mut salt, mut recorded, mut field, mut secret) = (None, None, Vec::new(), None);
        let hex = |v: &str| {
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_string())
        };
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "salt" => salt = Some(hex(v)?),
                "recorded" => recorded = v.parse().ok(),
                "field" => field.push(hex(v)?),
                "secret" => secret = Some(hex(v)?),
                _ => return None,
            }
        }
        Some(Record {
            salt: salt?,
            field,
            secret,
            recorded: recorded?,
        })
    }

    /// Does any key of the FIELD_ENCRYPTION_KEY value `value` appear in the record?
    pub fn knows_field_key(&self, value: &str) -> bool {
        field_keys(value)
            .iter()
            .any(|k| self.field.contains(&fingerprint(&self.salt, k)))
    }

    /// Is `value` the recorded SECRET_KEY?
    pub fn is_secret_key(&self, value: &str) -> bool {
        self.secret.as_deref() == Some(fingerprint(&self.salt, value).as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_never_holds_a_key() {
        let r = Record::of("00ff".into(), Some("keyA,keyB"), Some("secret"), 7);
        let text = r.render();
        assert!(!text.contains("keyA") && !text.contains("keyB"));
        assert_eq!(Record::parse(&text), Some(r));
        assert_eq!(Record::parse("garbage"), None);
    }

    #[test]
    fn a_rotation_list_shares_a_key_with_the_record_and_a_new_key_does_not() {
        let r = Record::of("a1".into(), Some("old"), Some("s1"), 1);
        assert!(r.knows_field_key("old"));
        assert!(r.knows_field_key("new, old"));
        assert!(!r.knows_field_key("new"));
        assert!(r.is_secret_key("s1"));
        assert!(!r.is_secret_key("s2"));
        // Another salt, other fingerprints: nothing carries over between deployments.
        assert_ne!(fingerprint("a1", "old"), fingerprint("b2", "old"));
    }
}
