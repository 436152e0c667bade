//! Audit text (commands, paths, names) as a person may be shown it: control
//! characters, which a terminal or a page would act on (`\r` returning to the
//! line start, ESC sequences erasing or recolouring, bidi overrides
//! reordering), are written visibly instead, so nothing typed can hide what
//! ran from an auditor. Machine output (JSON) keeps the exact text.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown escaped: C0 controls, DEL, C1 controls, and the
/// invisible formatting characters that reorder or hide text.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'      // zero-width, LRM/RLM
            | '\u{2028}'..='\u{202e}'    // line/para separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}'    // word joiner, bidi isolates
            | '\u{feff}')
}

/// `text` with every hidden character written visibly: `\r`, `\n`, `\t`,
/// `\xNN` for other C0 controls and DEL, `\u{NNNN}` for the rest.
/// Borrowed when there is nothing to escape.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && hidden(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            visible("ls -la /tmp"),
            Cow::Borrowed("ls -la /tmp")
        ));
        assert_eq!(visible("héllo 世界"), "héllo 世界");
    }

    #[test]
    fn controls_are_written_visibly() {
        assert_eq!(
            visible("rm -rf /\rls\x1b[2K\t\n\x7f"),
            "rm -rf /\\rls\\x1b[2K\\t\\n\\x7f"
        );
        assert_eq!(visible("a\u{9b}b\u{202e}c"), "a\\u{009b}b\\u{202e}c");
        assert_eq!(visible("\0"), "\\x00");
    }

    #[test]
    fn the_result_holds_no_control_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!visible(&all).chars().any(hidden));
    }
}
