//! Hygiene for text that users write and others read (chat, host messages,
//! names, titles): no control characters, and none of the invisible
//! formatting characters that make a text read differently from what it is
//! (bidi overrides and isolates, zero-width characters).

use crate::auth::is_invisible;

/// The first character of `text` that may not appear in user-visible text:
/// a control character (a line break only when `allow_newline` is false) or an
/// invisible formatting character. `None` if the text is clean.
pub fn hidden_char(text: &str, allow_newline: bool) -> Option<char> {
    // Printable ASCII hides nothing: a byte loop settles the usual chat line
    // without decoding a character (~300 instructions per line, callgrind).
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    text.chars()
        .find(|&c| (c.is_control() && !(allow_newline && c == '\n')) || is_invisible(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bidi_and_zero_width_characters_are_found() {
        assert_eq!(hidden_char("hello, world", false), None);
        assert_eq!(hidden_char("héllo 你好 👋", false), None);
        assert_eq!(hidden_char("a\0b", false), Some('\0'));
        assert_eq!(hidden_char("line\nbreak", false), Some('\n'));
        assert_eq!(hidden_char("line\nbreak", true), None);
        assert_eq!(hidden_char("tab\there", true), Some('\t'));
        assert_eq!(hidden_char("evil\u{202E}txt.exe", false), Some('\u{202E}'));
        assert_eq!(hidden_char("zero\u{200B}width", false), Some('\u{200B}'));
        assert_eq!(hidden_char("isolate\u{2067}x", false), Some('\u{2067}'));
        assert_eq!(hidden_char("bom\u{FEFF}", false), Some('\u{FEFF}'));
        assert_eq!(hidden_char("delete\u{7F}", false), Some('\u{7F}'));
        assert_eq!(hidden_char(" ~ printable ascii ~ ", false), None);
    }
}
