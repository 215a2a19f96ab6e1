//! The rules of catalog fields, as pure functions: the routes, the bulk
//! import and the unit tests below share them. Each refusal carries the
//! stable code the client sees.

use std::collections::BTreeMap;

use hawker_core::error::{Error, Result};

/// The most image URLs a product or SKU may have.
pub const MAX_IMAGES: usize = 10;
/// The longest image URL.
pub const MAX_URL_LEN: usize = 2048;
/// The most attributes of a SKU.
pub const MAX_ATTRIBUTES: usize = 20;
/// The highest price a catalog SKU may have, in minor units.
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;
/// The most units one stock movement or opening stock may move.
pub const MAX_STOCK_DELTA: i32 = 1_000_000_000;

/// A name: 1 to `max` characters, not all white space, no hidden characters.
pub fn text(code: &'static str, field: &str, value: &str, max: usize) -> Result<String> {
    let trimmed = value.trim();
    if trimmed.is_empty()
        || value.chars().count() > max
        || hawker_core::text::hidden_char(value, false).is_some()
    {
        return Err(Error::invalid(
            code,
            format!("{field} must be 1 to {max} characters, without control, bidi or zero-width characters"),
        ));
    }
    Ok(trimmed.to_string())
}

/// A description: 0 to 2,000 characters; line breaks allowed.
pub fn description(value: &str) -> Result<String> {
    if value.chars().count() > 2000 || hawker_core::text::hidden_char(value, true).is_some() {
        return Err(Error::invalid(
            "bad_description",
            "description must be at most 2000 characters, without control, bidi or zero-width characters",
        ));
    }
    Ok(value.to_string())
}

/// A brand's SKU code: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn sku_code(code: &str) -> Result<String> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::invalid(
            "bad_sku_code",
            "code must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.'",
        ));
    }
    Ok(code.to_string())
}

/// A price: 1 to [`MAX_PRICE_MINOR`] minor units.
pub fn price(price_minor: i64) -> Result<i64> {
    if !(1..=MAX_PRICE_MINOR).contains(&price_minor) {
        return Err(Error::invalid(
            "bad_price",
            format!("price_minor must be 1 to {MAX_PRICE_MINOR}"),
        ));
    }
    Ok(price_minor)
}

/// ISO 4217: three capital letters.
pub fn currency(currency: &str) -> Result<String> {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "bad_currency",
            "currency must be three capital letters (ISO 4217)",
        ));
    }
    Ok(currency.to_string())
}

/// Opening stock: 0 to [`MAX_STOCK_DELTA`].
pub fn opening_stock(stock: i32) -> Result<i32> {
    if !(0..=MAX_STOCK_DELTA).contains(&stock) {
        return Err(Error::invalid(
            "bad_stock",
            format!("stock must be 0 to {MAX_STOCK_DELTA}"),
        ));
    }
    Ok(stock)
}

/// Image URLs: at most [`MAX_IMAGES`], each at most [`MAX_URL_LEN`]
/// characters: `http://` or `https://`, a host name of letters, digits, `.`
/// and `-` starting with a letter or digit, an optional port of 1 to 5
/// digits, then optionally a path, query or fragment of printable ASCII
/// without quotes, angle brackets, `\\`, `^`, backquotes, braces and `|`. No user
/// name or password, no IP-literal brackets (the OpenAPI document states the
/// same rule as `schema::IMAGE_URL_PATTERN`).
pub fn image_urls(urls: &[String]) -> Result<Vec<String>> {
    if urls.len() > MAX_IMAGES {
        return Err(Error::invalid(
            "bad_image_url",
            format!("at most {MAX_IMAGES} image URLs"),
        ));
    }
    for url in urls {
        if !is_image_url(url) {
            return Err(Error::invalid(
                "bad_image_url",
                "each image URL must be an http:// or https:// URL with a host name (letters, digits, '.', '-'), an optional port, and at most 2048 printable characters",
            ));
        }
    }
    Ok(urls.to_vec())
}

fn is_image_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = host.starts_with(|c: char| c.is_ascii_alphanumeric())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok = port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    url.len() <= MAX_URL_LEN
        && host_ok
        && port_ok
        && tail.chars().all(|c| {
            c.is_ascii_graphic() && !matches!(c, '"' | '<' | '>' | '\\' | '`' | '{' | '}' | '|' | '^')
        })
}

/// Attributes: at most [`MAX_ATTRIBUTES`] pairs; names 1 to 40 and values 1
/// to 100 characters, without hidden characters.
pub fn attributes(attributes: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    let bad = || {
        Error::invalid(
            "bad_attributes",
            format!(
                "attributes: at most {MAX_ATTRIBUTES}; names 1 to 40 and values 1 to 100 characters, without control, bidi or zero-width characters"
            ),
        )
    };
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(bad());
    }
    let mut clean = BTreeMap::new();
    for (name, value) in attributes {
        let name = text("bad_attributes", "name", name, 40).map_err(|_| bad())?;
        let value = text("bad_attributes", "value", value, 100).map_err(|_| bad())?;
        clean.insert(name, value);
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_must_be_absolute_http_or_https_with_a_host() {
        for good in [
            "https://cdn.example.com/a.jpg",
            "http://example.com",
            "https://example.com:8443/x?y=1#z",
        ] {
            assert!(is_image_url(good), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "ftp://example.com/a.jpg",
            "https://",
            "https:///path",
            "//example.com/a.jpg",
            "https://exa mple.com/a.jpg",
            "https://example.com/\"onerror=\"x",
            "data:image/png;base64,AAAA",
            "https://:80/x",
        ] {
            assert!(!is_image_url(bad), "{bad}");
        }
        assert!(!is_image_url(&format!(
            "https://example.com/{}",
            "a".repeat(2048)
        )));
        let eleven = vec!["https://example.com/a.jpg".to_string(); 11];
        assert_eq!(image_urls(&eleven).unwrap_err().code(), "bad_image_url");
    }

    #[test]
    fn sku_codes_are_short_and_plain() {
        assert!(sku_code("LIP-RUBY_01.v2").is_ok());
        for bad in ["", "with space", "ünï", &"A".repeat(65), "a/b"] {
            assert_eq!(sku_code(bad).unwrap_err().code(), "bad_sku_code", "{bad}");
        }
    }

    #[test]
    fn prices_currencies_and_stock_are_bounded() {
        assert_eq!(price(0).unwrap_err().code(), "bad_price");
        assert_eq!(price(MAX_PRICE_MINOR + 1).unwrap_err().code(), "bad_price");
        assert_eq!(price(1999).unwrap(), 1999);
        assert_eq!(currency("usd").unwrap_err().code(), "bad_currency");
        assert_eq!(currency("USDX").unwrap_err().code(), "bad_currency");
        assert_eq!(opening_stock(-1).unwrap_err().code(), "bad_stock");
        assert_eq!(opening_stock(0).unwrap(), 0);
    }

    #[test]
    fn names_and_attributes_refuse_hidden_characters() {
        assert_eq!(
            text("bad_name", "name", "  ", 200).unwrap_err().code(),
            "bad_name"
        );
        assert_eq!(
            text("bad_name", "name", "a\u{202E}b", 200).unwrap_err().code(),
            "bad_name"
        );
        assert_eq!(text("bad_name", "name", " Ruby ", 200).unwrap(), "Ruby");
        let mut a = BTreeMap::new();
        a.insert("size".to_string(), "M".to_string());
        assert!(attributes(&a).is_ok());
        a.insert("colour".to_string(), "red\u{200B}".to_string());
        assert_eq!(attributes(&a).unwrap_err().code(), "bad_attributes");
    }
}
