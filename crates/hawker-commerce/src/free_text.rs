//! The one check of the free text buyers and brands type: shipping
//! addresses (`profile.rs`), carriers, tracking numbers and return reasons
//! (`fulfilment.rs`).

use hawker_core::error::{Error, Result};

/// The one check of a free-text field: length in characters, not blank unless `empty_ok`, no
/// control, bidi or zero-width character (line breaks only if `newline`).
pub(crate) fn clean(
    field: &'static str,
    code: &'static str,
    value: &str,
    max: usize,
    newline: bool,
    empty_ok: bool,
) -> Result<()> {
    if (!empty_ok && value.trim().is_empty())
        || value.chars().count() > max
        || hawker_core::text::hidden_char(value, newline).is_some()
    {
        let lines = if newline { " (line breaks allowed)" } else { "" };
        let (least, blank) = if empty_ok {
            (0, "")
        } else {
            (1, ", not all white space")
        };
        return Err(Error::invalid(
            code,
            format!("{field} must be {least} to {max} characters{blank}, without control, bidi or zero-width characters{lines}"),
        ));
    }
    Ok(())
}
