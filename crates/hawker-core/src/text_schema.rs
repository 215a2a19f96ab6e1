//! The OpenAPI schemas of user-written text, stated exactly as the server
//! checks it ([`crate::text::hidden_char`] and "not all white space"), so that
//! a client, or a fuzzer, that keeps to the schema is never refused.
//!
//! Use them with `#[schema(schema_with = ...)]` through a small function per
//! field; the patterns are the same ECMA-262 and Rust regular expressions.

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// Characters that never appear in user-visible text: C0 and C1 controls and
/// the invisible formatting characters of [`crate::auth::is_invisible`].
const HIDDEN: &str = "\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff";
/// The same, with line feed (`\u000a`) allowed.
const HIDDEN_BUT_LF: &str = "\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff";
/// White space that `str::trim` removes and that is not already hidden.
const SPACE: &str = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// Whether a text may hold line breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

/// The pattern of a text without hidden characters; unless `blank_ok`, with
/// at least one character that is not white space.
pub fn pattern(lines: Lines, blank_ok: bool) -> String {
    let hidden = match lines {
        Lines::One => HIDDEN,
        Lines::Many => HIDDEN_BUT_LF,
    };
    if blank_ok {
        format!("^[^{hidden}]*$")
    } else {
        format!("^[^{hidden}]*[^{HIDDEN}{SPACE}][^{hidden}]*$")
    }
}

/// A string of `min..=max` characters (code points) following [`pattern`];
/// `nullable` adds `null` to its types.
pub fn string(min: usize, max: usize, lines: Lines, blank_ok: bool, nullable: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(pattern(lines, blank_ok)))
        .build()
}

/// `string`, or `[string, null]`.
pub fn string_type(nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::hidden_char;

    /// What the server accepts: no hidden character, and (unless blank_ok)
    /// not all white space.
    fn server_accepts(text: &str, lines: Lines, blank_ok: bool) -> bool {
        hidden_char(text, lines == Lines::Many).is_none() && (blank_ok || !text.trim().is_empty())
    }

    /// Every character up to U+3100 and U+FEFF, alone, after a letter and
    /// between spaces: the pattern (compiled by the same regex syntax the
    /// OpenAPI document states) and the server agree on each.
    #[test]
    fn the_text_patterns_accept_exactly_what_the_server_accepts() {
        for lines in [Lines::One, Lines::Many] {
            for blank_ok in [false, true] {
                let re = regex::Regex::new(&pattern(lines, blank_ok)).unwrap();
                let chars = (0u32..0x3100).chain([0xFEFF, 0x1F600]).filter_map(char::from_u32);
                for c in chars {
                    for text in [c.to_string(), format!("a{c}"), format!(" {c} "), format!("{c}\n")] {
                        assert_eq!(
                            re.is_match(&text),
                            server_accepts(&text, lines, blank_ok),
                            "{text:?} lines={lines:?} blank_ok={blank_ok}"
                        );
                    }
                }
                assert_eq!(re.is_match(""), blank_ok);
            }
        }
    }
}
