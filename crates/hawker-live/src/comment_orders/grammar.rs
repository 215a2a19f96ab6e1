//! The comment-to-buy grammar, a pure function of the chat line and the
//! session's keywords (docs/protocol.md, "Comment-to-buy"):
//!
//! ```text
//! line     = keyword SP item [SP part [SP part]] [trailing]
//! keyword  = one of the session's keywords, any letter case
//! item     = ["#"] digits                      ; the lineup's link number
//! part     = quantity | variant                ; each at most once, any order
//! quantity = ["x" | "X"] digits | ("x" | "X") SP digits
//! variant  = any other word                    ; the item's SKU code, any case
//! trailing = any run of "!" and "."            ; ignored
//! ```
//!
//! Words are separated by whitespace. A line that does not follow the
//! grammar is plain chat, never an error: "sold7", "SOLD ##7", "SOLD 7 of
//! them please", "I sold 7 yesterday". Range checks (quantity 1 to 100, a
//! link number in the lineup, the variant) come later, when the order is
//! placed, and the buyer hears a refusal privately.

/// What a matching line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The lineup link number, as typed (saturated at `u32::MAX`).
    pub link_number: u32,
    /// Units, as typed (1 when absent; saturated at `u32::MAX`).
    pub quantity: u32,
    /// A variant word, as typed (compared with the item's SKU code).
    pub variant: Option<String>,
}

/// The order a chat line asks for, or `None` for plain chat. `keywords` are
/// compared ignoring ASCII letter case.
pub fn parse(text: &str, keywords: &[String]) -> Option<Intent> {
    let line = text.trim().trim_end_matches(['!', '.']);
    let mut words = line.split_whitespace();
    let keyword = words.next()?;
    if !keywords.iter().any(|k| k.eq_ignore_ascii_case(keyword)) {
        return None;
    }
    let item = words.next()?;
    let link_number = number(item.strip_prefix('#').unwrap_or(item))?;
    let mut quantity = None;
    let mut variant = None;
    let rest: Vec<&str> = words.collect();
    let mut i = 0;
    while i < rest.len() {
        let word = rest[i];
        let times = word.strip_prefix(['x', 'X']);
        let (found, used) = match (times, rest.get(i + 1)) {
            // "x 2"
            (Some(""), Some(next)) if number(next).is_some() => (number(next), 2),
            // "x2"
            (Some(digits), _) if number(digits).is_some() => (number(digits), 1),
            // "2"
            _ if number(word).is_some() => (number(word), 1),
            _ => (None, 1),
        };
        match found {
            Some(q) if quantity.is_none() => quantity = Some(q),
            Some(_) => return None,
            None if variant.is_none() => variant = Some(word.to_string()),
            None => return None,
        }
        i += used;
    }
    Some(Intent {
        link_number,
        quantity: quantity.unwrap_or(1),
        variant,
    })
}

/// ASCII digits (at least one) as a number, saturated at `u32::MAX`.
fn number(word: &str) -> Option<u32> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(word.parse().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a line reads as: (link number, quantity, variant).
    type Read = (u32, u32, Option<&'static str>);

    fn keywords(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    /// Every form and near miss docs/protocol.md lists has a row here.
    #[test]
    fn the_grammar_table() {
        let default = keywords(&["SOLD", "BUY"]);
        // (line, Some((link, quantity, variant)) or None for plain chat)
        let table: &[(&str, Option<Read>)] = &[
            ("SOLD 7", Some((7, 1, None))),
            ("sold 7", Some((7, 1, None))),
            ("Sold 7", Some((7, 1, None))),
            ("BUY 7", Some((7, 1, None))),
            ("  SOLD   7  ", Some((7, 1, None))),
            ("SOLD #7", Some((7, 1, None))),
            ("SOLD 07", Some((7, 1, None))),
            ("SOLD 7 2", Some((7, 2, None))),
            ("sold 7 x2", Some((7, 2, None))),
            ("SOLD 7 X2", Some((7, 2, None))),
            ("SOLD 7 x 2", Some((7, 2, None))),
            ("SOLD 7 red", Some((7, 1, Some("red")))),
            ("SOLD 7 red x2", Some((7, 2, Some("red")))),
            ("SOLD 7 x2 red", Some((7, 2, Some("red")))),
            ("SOLD 7 2 RED", Some((7, 2, Some("RED")))),
            ("SOLD 7!", Some((7, 1, None))),
            ("SOLD 7!!", Some((7, 1, None))),
            ("SOLD 7.", Some((7, 1, None))),
            ("SOLD 7 x2!!", Some((7, 2, None))),
            // Matches; refused when placed (bad_quantity, no_such_item, bad_variant).
            ("SOLD 7 0", Some((7, 0, None))),
            ("SOLD 7 x101", Some((7, 101, None))),
            ("SOLD 7 99999999999", Some((7, u32::MAX, None))),
            ("SOLD 0", Some((0, 1, None))),
            ("SOLD 99999", Some((99999, 1, None))),
            ("SOLD 7 yesterday", Some((7, 1, Some("yesterday")))),
            ("SOLD 7 xl", Some((7, 1, Some("xl")))),
            ("SOLD 7 x", Some((7, 1, Some("x")))),
            // Near misses: plain chat.
            ("sold7", None),
            ("SOLD#7", None),
            ("SOLD ##7", None),
            ("SOLD # 7", None),
            ("SOLD seven", None),
            ("SOLD", None),
            ("SOLD !", None),
            ("SOLD 7?", None),
            ("SOLD -7", None),
            ("SOLD +7", None),
            ("SOLD 7.5", None),
            ("SOLD 7,2", None),
            ("SOLD: 7", None),
            ("SOLDOUT 7", None),
            ("I sold 7 yesterday", None),
            ("wow SOLD 7", None),
            ("SOLD 7 red blue", None),
            ("SOLD 7 2 3", None),
            ("SOLD 7 x2 x3", None),
            ("SOLD 7 of them please", None),
            ("A1+1", None),
            ("SOLD ７", None),
            ("", None),
        ];
        for (line, expected) in table {
            let got = parse(line, &default);
            let expected = expected.map(|(link_number, quantity, variant)| Intent {
                link_number,
                quantity,
                variant: variant.map(str::to_string),
            });
            assert_eq!(got, expected, "{line:?}");
        }
    }

    #[test]
    fn the_keywords_are_the_sessions() {
        let custom = keywords(&["MINE", "WANT"]);
        assert_eq!(parse("mine 3", &custom).map(|i| i.link_number), Some(3));
        assert_eq!(parse("want #4 x2", &custom).map(|i| i.quantity), Some(2));
        assert_eq!(parse("SOLD 7", &custom), None);
        assert_eq!(parse("SOLD 7", &[]), None);
    }
}
