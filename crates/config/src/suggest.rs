//! "Did you mean" hints for mistyped keys and values.

/// The closest known word to `word`, phrased as a hint, when one is close enough to be a
/// plausible typo.
pub fn did_you_mean(word: &str, known: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    if lower.len() >= 3 {
        if let Some(k) = known.iter().find(|k| k.starts_with(&lower)) {
            return Some(format!("did you mean `{k}`?"));
        }
    }
    known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_key_for_a_typo() {
        let known = ["migrate", "collectstatic", "compilemessages"];
        assert_eq!(
            did_you_mean("migrat", &known).as_deref(),
            Some("did you mean `migrate`?")
        );
        assert_eq!(
            did_you_mean("colectstatic", &known).as_deref(),
            Some("did you mean `collectstatic`?")
        );
    }

    #[test]
    fn suggests_nothing_for_an_unrelated_word() {
        assert_eq!(did_you_mean("frobnicate", &["user", "group"]), None);
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
