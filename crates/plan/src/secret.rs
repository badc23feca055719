//! Secret values: the rules a secret must pass, refusal of publicly known sample keys, and
//! generation from random bytes the caller supplies.
//!
//! A [`SecretValue`] never shows its content in `Debug` or `Display` and is wiped from
//! memory when dropped. Error messages here name the problem, never the value.

use std::fmt;

use zeroize::Zeroizing;

/// Largest secret file accepted.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret value, redacted in every formatting and zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// The value, for the one place that needs it: the app's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

/// Why a secret value is refused. The messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("is empty")]
    Empty,
    #[error("is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("contains a NUL byte")]
    ContainsNul,
    #[error("is a publicly known sample value ({0})")]
    KnownSample(&'static str),
    #[error("is not a Fernet key (32 bytes in url-safe base64, 44 characters)")]
    NotFernet,
    #[error(
        "is not a key as the launcher generates it ({DJANGO_KEY_LEN} characters of Django's secret-key alphabet): it was truncated or replaced"
    )]
    NotDjangoKey,
}

/// Check the bytes read from a secret file or credential and turn them into a value:
/// non-empty, at most [`MAX_SECRET_BYTES`], UTF-8, no NUL; one trailing newline (as left
/// by `echo` or an editor) is stripped.
pub fn from_bytes(bytes: Vec<u8>) -> Result<SecretValue, SecretProblem> {
    let bytes = Zeroizing::new(bytes);
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretProblem::TooLarge);
    }
    if bytes.contains(&0) {
        return Err(SecretProblem::ContainsNul);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretProblem::NotUtf8)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Err(SecretProblem::Empty);
    }
    let value = SecretValue(Zeroizing::new(text.to_string()));
    if let Some(what) = known_sample(value.expose()) {
        return Err(SecretProblem::KnownSample(what));
    }
    Ok(value)
}

/// Values that ship publicly (in upstream sample settings, in Django's startproject
/// template, in tutorials) and so protect nothing.
const KNOWN_SAMPLES: &[(&str, &str)] = &[
    (
        "this+is+an+example+key+please+generate+one+=",
        "upstream Bitpoll's sample FIELD_ENCRYPTION_KEY",
    ),
    (
        "BnEAJ5eEXb4HfYbaCPuW5RKQSoO02Uhz1RH93eQz0GM=",
        "the FIELD_ENCRYPTION_KEY of upstream Bitpoll's Docker configuration",
    ),
    (
        "0qv9^l2ujm*2g(iyp!h4h0neq@34-9q^y90!#rp!lwo7yz+&0u",
        "a SECRET_KEY once committed to upstream Bitpoll",
    ),
    (
        "bitpoll-development-only-secret-key",
        "upstream Bitpoll's development SECRET_KEY",
    ),
    ("generate a new one", "upstream Bitpoll's placeholder"),
    ("...", "upstream Bitpoll's placeholder"),
    ("changeme", "placeholder"),
    ("change-me", "placeholder"),
    ("changethis", "placeholder"),
    ("secret", "placeholder"),
    ("password", "placeholder"),
    ("CHANGEME", "placeholder"),
    ("xxx", "placeholder"),
];

/// If `value` is a known public sample, what it is.
pub fn known_sample(value: &str) -> Option<&'static str> {
    if value.starts_with("django-insecure-") {
        return Some("a key from Django's startproject template, marked insecure");
    }
    KNOWN_SAMPLES
        .iter()
        .find(|(sample, _)| *sample == value)
        .map(|(_, what)| *what)
}

/// Django's `get_random_secret_key` alphabet.
const DJANGO_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)";
const DJANGO_KEY_LEN: usize = 50;

/// Generate a value of `kind`. `fill` must fill its buffer with cryptographically secure
/// random bytes (the caller reads the kernel's CSPRNG).
pub fn generate(
    kind: launcher_config::GenerateKind,
    mut fill: impl FnMut(&mut [u8]),
) -> SecretValue {
    use launcher_config::GenerateKind::*;
    match kind {
        DjangoSecretKey => {
            let mut out = Zeroizing::new(String::with_capacity(DJANGO_KEY_LEN));
            let mut buf = Zeroizing::new([0u8; 64]);
            while out.len() < DJANGO_KEY_LEN {
                fill(&mut buf[..]);
                // Rejection sampling: 250 = 5 * 50, so accepted bytes are uniform mod 50.
                for &b in buf.iter().filter(|&&b| b < 250) {
                    if out.len() == DJANGO_KEY_LEN {
                        break;
                    }
                    out.push(DJANGO_ALPHABET[(b % 50) as usize] as char);
                }
            }
            SecretValue(out)
        }
        FernetKey => {
            let mut key = Zeroizing::new([0u8; 32]);
            fill(&mut key[..]);
            SecretValue(Zeroizing::new(base64_urlsafe(&key[..])))
        }
    }
}

/// Check that a value is usable as the given kind (a loaded generated secret is checked
/// against the kind it was generated as).
pub fn check_kind(
    kind: launcher_config::GenerateKind,
    value: &SecretValue,
) -> Result<(), SecretProblem> {
    match kind {
        launcher_config::GenerateKind::DjangoSecretKey => {
            let v = value.expose().as_bytes();
            if v.len() == DJANGO_KEY_LEN && v.iter().all(|c| DJANGO_ALPHABET.contains(c)) {
                Ok(())
            } else {
                Err(SecretProblem::NotDjangoKey)
            }
        }
        launcher_config::GenerateKind::FernetKey => {
            if is_fernet_key(value.expose()) {
                Ok(())
            } else {
                Err(SecretProblem::NotFernet)
            }
        }
    }
}

/// True if `s` is url-safe base64 (with padding) of exactly 32 bytes, as Fernet requires.
pub fn is_fernet_key(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 44
        && b[43] == b'='
        && b[..43]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

const URLSAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64_urlsafe(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = [18, 12, 6, 0].map(|shift| URLSAFE[((n >> shift) & 63) as usize] as char);
        let keep = chunk.len() + 1;
        for (i, c) in chars.iter().enumerate() {
            out.push(if i < keep { *c } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use launcher_config::GenerateKind;

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                *b = n;
                n = n.wrapping_add(37);
            }
        }
    }

    #[test]
    fn strips_exactly_one_trailing_newline() {
        assert_eq!(from_bytes(b"abc\n".to_vec()).unwrap().expose(), "abc");
        assert_eq!(from_bytes(b"abc\n\n".to_vec()).unwrap().expose(), "abc\n");
        assert_eq!(from_bytes(b"abc".to_vec()).unwrap().expose(), "abc");
    }

    #[test]
    fn rejects_bad_values_with_messages_that_omit_them() {
        let cases: &[(&[u8], SecretProblem)] = &[
            (b"", SecretProblem::Empty),
            (b"\n", SecretProblem::Empty),
            (b"ab\0cd", SecretProblem::ContainsNul),
            (b"\xff\xfe", SecretProblem::NotUtf8),
            (
                b"django-insecure-abc",
                SecretProblem::KnownSample(
                    "a key from Django's startproject template, marked insecure",
                ),
            ),
            (
                b"this+is+an+example+key+please+generate+one+=\n",
                SecretProblem::KnownSample("upstream Bitpoll's sample FIELD_ENCRYPTION_KEY"),
            ),
            (
                b"BnEAJ5eEXb4HfYbaCPuW5RKQSoO02Uhz1RH93eQz0GM=",
                SecretProblem::KnownSample(
                    "the FIELD_ENCRYPTION_KEY of upstream Bitpoll's Docker configuration",
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                from_bytes(input.to_vec()).unwrap_err(),
                *want,
                "input {input:?}"
            );
        }
        let big = vec![b'a'; MAX_SECRET_BYTES as usize + 1];
        assert_eq!(from_bytes(big).unwrap_err(), SecretProblem::TooLarge);
        assert!(
            !SecretProblem::KnownSample("x")
                .to_string()
                .contains("example")
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let v = from_bytes(b"very-secret-value".to_vec()).unwrap();
        let shown = format!("{v:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("17 bytes"));
    }

    #[test]
    fn generated_django_key_has_djangos_shape() {
        let key = generate(GenerateKind::DjangoSecretKey, counter());
        assert_eq!(key.len(), 50);
        assert!(key.expose().bytes().all(|b| DJANGO_ALPHABET.contains(&b)));
        assert!(known_sample(key.expose()).is_none());
        assert_eq!(check_kind(GenerateKind::DjangoSecretKey, &key), Ok(()));
    }

    #[test]
    fn a_truncated_or_replaced_generated_django_key_is_refused() {
        let key = generate(GenerateKind::DjangoSecretKey, counter());
        for bad in [
            &key.expose()[..8],
            "x".repeat(50).as_str(),
            &format!("{} ", &key.expose()[..49]),
        ] {
            let v = from_bytes(bad.as_bytes().to_vec()).unwrap();
            if bad.len() == 50 && bad.bytes().all(|b| DJANGO_ALPHABET.contains(&b)) {
                continue;
            }
            assert_eq!(
                check_kind(GenerateKind::DjangoSecretKey, &v),
                Err(SecretProblem::NotDjangoKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_fernet_key_is_valid_base64_of_32_bytes() {
        let key = generate(GenerateKind::FernetKey, |b| b.fill(0xff));
        assert_eq!(key.expose(), "__________________________________________8=");
        assert!(is_fernet_key(key.expose()));
        let key = generate(GenerateKind::FernetKey, counter());
        assert!(is_fernet_key(key.expose()), "{}", key.expose());
        assert_eq!(check_kind(GenerateKind::FernetKey, &key), Ok(()));
    }

    #[test]
    fn base64_matches_the_reference_encoding() {
        assert_eq!(base64_urlsafe(b""), "");
        assert_eq!(base64_urlsafe(b"f"), "Zg==");
        assert_eq!(base64_urlsafe(b"fo"), "Zm8=");
        assert_eq!(base64_urlsafe(b"foo"), "Zm9v");
        assert_eq!(base64_urlsafe(&[0xfb, 0xff]), "-_8=");
    }

    #[test]
    fn fernet_check_rejects_wrong_lengths_and_alphabets() {
        assert!(!is_fernet_key("short="));
        assert!(!is_fernet_key(
            &"+".repeat(43).replace('+', "a").replace("aaa", "a+a")
        ));
        assert!(!is_fernet_key(&format!("{}==", "A".repeat(42))));
        assert!(is_fernet_key(&format!("{}E=", "A".repeat(42))));
        let v = from_bytes(b"not a key".to_vec()).unwrap();
        assert_eq!(
            check_kind(GenerateKind::FernetKey, &v),
            Err(SecretProblem::NotFernet)
        );
    }
}
