//! Text from outside shown on a terminal: the app's messages, a PostgreSQL server's
//! errors, file names. A terminal acts on control characters: an escape sequence can erase
//! the lines above it so a report of errors looks clean, retitle the window, or make the
//! terminal answer with bytes the admin's shell then reads as typed input. Shown through
//! [`printable`], such text can only ever be read.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for a character a terminal may act on rather than show: the C0 controls (but
/// for the tab), DEL, the C1 controls, and the Unicode controls that reorder or hide the
/// text around them (bidirectional overrides and isolates).
fn is_active(c: char) -> bool {
    match c {
        '\t' => false,
        c if (c as u32) < 0x20 => true,
        '\u{7f}'..='\u{9f}' => true,
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let escaped = |c: char| is_active(c) && !keep(c);
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !escaped(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// `s` with every character a terminal would act on shown as an escape (`\x1b`,
/// `\u{9b}`); text without them is returned as it is. For one line: a newline is escaped
/// too.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// Like [`printable`], but newlines stay: for a block of lines.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n')
}

/// Like [`printable_lines`], but ESC stays too: for text whose outside parts had their
/// ESC characters escaped already and whose escape sequences are the writer's own (the
/// log formatter's colours).
pub fn printable_styled(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\u{1b}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "Ümlaut, tab\there: ok";
        assert!(matches!(printable(s), Cow::Borrowed(t) if t == s));
    }

    #[test]
    fn escape_sequences_and_answer_back_requests_become_visible() {
        let cases = [
            ("\u{1b}[2K\u{1b}[1Aok", "\\x1b[2K\\x1b[1Aok"),
            ("\u{1b}]0;title\u{7}", "\\x1b]0;title\\x07"),
            ("\u{5}", "\\x05"),
            ("a\rb", "a\\x0db"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("\u{7f}", "\\x7f"),
            ("x\u{202e}gnp.exe", "x\\u{202e}gnp.exe"),
            ("one\ntwo", "one\\x0atwo"),
        ];
        for (input, want) in cases {
            assert_eq!(printable(input), want, "{input:?}");
        }
    }

    #[test]
    fn block_text_keeps_its_lines() {
        assert_eq!(printable_lines("a\n\u{1b}[31mb\n"), "a\n\\x1b[31mb\n");
    }

    #[test]
    fn styled_text_keeps_its_escape_sequences_but_nothing_else() {
        assert_eq!(
            printable_styled("\u{1b}[31mERROR\u{1b}[0m a\rb\u{5}\n"),
            "\u{1b}[31mERROR\u{1b}[0m a\\x0db\\x05\n"
        );
    }
}
