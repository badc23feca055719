//! Key continuity: the keys of this start against the fingerprints recorded at the last
//! successful one (crate::keys). A different FIELD_ENCRYPTION_KEY over existing data is
//! refused before anything runs: django-encrypted-model-fields would swallow every
//! decryption error and show ciphertext. A different SECRET_KEY is a warning: it logs
//! every user out and invalidates password-reset links.

use launcher_config::Config;

use crate::facts::{Facts, SecretState};
use crate::finding::Finding;
use crate::keys::{FIELD_KEY, Record, SECRET_KEY};
use crate::rule::Rule;
use crate::stamp::utc;

fn value<'f>(facts: &'f Facts, name: &str) -> Option<&'f str> {
    facts.secrets.iter().find_map(|s| match &s.state {
        SecretState::Read { value, .. } if s.name == name => Some(value.expose()),
        _ => None,
    })
}

pub fn judge(cfg: &Config, facts: &Facts) -> Vec<Finding> {
    let Some(record) = facts.key_record.as_deref().and_then(Record::parse) else {
        return Vec::new();
    };
    let when = utc(record.recorded);
    let mut out = Vec::new();
    if let Some(v) = value(facts, FIELD_KEY) {
        if record.field.is_empty() || record.knows_field_key(v) {
            out.push(Finding::ok(
                Rule::FieldKey,
                FIELD_KEY,
                format!("a key that encrypted the data (recorded {when})"),
            ));
        } else {
            let generated = matches!(
                cfg.secrets.get(FIELD_KEY),
                Some(launcher_config::SecretSource::Generate(_))
            );
            let fix = format!(
                "restore the key the data was encrypted with; to change keys, rotate: {}configure \"NEW,OLD\" (the new key first, comma-separated), start, re-save the encrypted rows, then drop OLD",
                if generated {
                    "copy the generated key to a root-owned file, make it the source (`{ file = ... }`), "
                } else {
                    ""
                }
            );
            match super::existing_data(cfg, facts) {
                Some(evidence) => out.push(Finding::error(
                    Rule::FieldKeyChanged,
                    FIELD_KEY,
                    format!(
                        "none of its keys is the one that encrypted the existing data (recorded {when}; {evidence}): the app would show ciphertext and a later save could store garbage"
                    ),
                    &fix,
                )),
                None => out.push(Finding::info(
                    Rule::FieldKey,
                    FIELD_KEY,
                    format!("differs from the key recorded {when}; there is no data it could have encrypted"),
                )),
            }
        }
    }
    if let Some(v) = value(facts, SECRET_KEY) {
        if record.secret.is_some() && !record.is_secret_key(v) {
            out.push(Finding::warning(
                Rule::SecretKeyChanged,
                SECRET_KEY,
                format!("differs from the SECRET_KEY of the start recorded {when}: every session and password-reset link made before is invalid"),
                "if unintended, restore the old key; to rotate without logging everyone out, keep the old one in BITPOLL_SECRET_KEY_FALLBACKS (Django's SECRET_KEY_FALLBACKS) for a while",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Origin;
    use crate::judge::fixture;

    fn with(facts: &mut Facts, name: &str, value: &str) {
        for s in &mut facts.secrets {
            if s.name == name {
                s.state = SecretState::Read {
                    value: crate::secret::from_bytes(value.as_bytes().to_vec()).unwrap(),
                    origin: Origin::File("/k".into()),
                };
            }
        }
    }

    #[test]
    fn a_changed_field_key_over_data_is_refused_and_a_rotation_list_accepted() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.key_record = Some(Record::of("5a1f".into(), Some("OLDKEY"), Some("s1"), 9).render());
        with(&mut facts, FIELD_KEY, "OLDKEY");
        with(&mut facts, SECRET_KEY, "s1");
        let f = judge(&cfg, &facts);
        assert!(f.iter().all(|f| !f.is_error()), "{f:?}");
        with(&mut facts, FIELD_KEY, "NEWKEY");
        let f = judge(&cfg, &facts);
        assert!(f.iter().any(Finding::is_error), "{f:?}");
        with(&mut facts, FIELD_KEY, "NEWKEY,OLDKEY");
        assert!(judge(&cfg, &facts).iter().all(|f| !f.is_error()));
        // No data: a different key is only noted.
        facts.database.sqlite = None;
        with(&mut facts, FIELD_KEY, "NEWKEY");
        assert!(judge(&cfg, &facts).iter().all(|f| !f.is_error()));
    }

    #[test]
    fn a_changed_secret_key_is_a_warning() {
        let cfg = fixture::config("");
        let mut facts = fixture::facts();
        facts.key_record = Some(Record::of("5a1f".into(), None, Some("s1"), 9).render());
        with(&mut facts, SECRET_KEY, "s2");
        let f = judge(&cfg, &facts);
        let w: Vec<&Finding> = f
            .iter()
            .filter(|f| f.severity == crate::finding::Severity::Warning)
            .collect();
        assert_eq!(w.len(), 1, "{f:?}");
        assert_eq!(w[0].subject, SECRET_KEY);
        assert!(
            w[0].fix
                .as_deref()
                .unwrap()
                .contains("SECRET_KEY_FALLBACKS")
        );
    }
}
