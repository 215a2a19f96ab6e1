//! The OpenAPI schemas of catalog fields whose rules a derived schema cannot
//! state: the items of `image_urls`, the names and values of `attributes`,
//! free text, and the one-of rules of a stock change and a campaign entry.
//! Each states exactly what [`crate::validate`] and the handlers accept, so a
//! request that keeps to the document is never refused for its shape (the
//! unit tests below hold the patterns to the server's checks).

use hawker_core::text_schema::{self, Lines};
use serde_json::json;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;

use crate::validate::{MAX_ATTRIBUTES, MAX_IMAGES, MAX_PRICE_MINOR, MAX_STOCK_DELTA, MAX_URL_LEN};

/// `http(s)://`, a host name (letters, digits, `.`, `-`, starting with a
/// letter or digit), an optional port, then optionally a path, query or
/// fragment of printable ASCII without `" < > \ ^ ` { | }`: the rule of
/// `validate::image_urls`.
pub const IMAGE_URL_PATTERN: &str =
    r"^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?([/?#][!#-;=?-\[\]_a-z~]*)?$";

fn image_url() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_URL_LEN))
        .pattern(Some(IMAGE_URL_PATTERN))
        .build()
}

fn image_url_list(nullable: bool) -> Schema {
    let kind = if nullable {
        SchemaType::from_iter([Type::Array, Type::Null])
    } else {
        SchemaType::Type(Type::Array)
    };
    ArrayBuilder::new()
        .schema_type(kind)
        .items(image_url())
        .max_items(Some(MAX_IMAGES))
        .description(Some(format!(
            "At most {MAX_IMAGES} http(s) URLs, each at most {MAX_URL_LEN} characters: a host name of letters, digits, `.` and `-`, an optional port, then an optional path, query or fragment of printable ASCII without `\"<>\\^`{{|}}`."
        )))
        .build()
        .into()
}

/// `image_urls` of a new product or SKU.
pub fn image_urls() -> Schema {
    image_url_list(false)
}

/// `image_urls` of a change: absent or null keeps them.
pub fn image_urls_or_null() -> Schema {
    image_url_list(true)
}

fn attribute_map(nullable: bool) -> Object {
    let kind = if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::Type(Type::Object)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .max_properties(Some(MAX_ATTRIBUTES))
        .property_names(Some(text_schema::string(1, 40, Lines::One, false, false)))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            text_schema::string(1, 100, Lines::One, false, false).into(),
        ))))
        .description(Some(format!(
            "At most {MAX_ATTRIBUTES}; names 1 to 40 and values 1 to 100 characters, not all white space, without control, bidi or zero-width characters."
        )))
        .examples([json!({"size": "M", "colour": "red"})])
        .build()
}

/// `attributes` of a new SKU.
pub fn attributes() -> Object {
    attribute_map(false)
}

/// `attributes` of a SKU change: absent or null keeps them.
pub fn attributes_or_null() -> Object {
    attribute_map(true)
}

/// A product's or SKU's name: 1 to 200 characters, not all white space.
pub fn name() -> Object {
    text_schema::string(1, 200, Lines::One, false, false)
}

/// A name in a change: absent or null keeps it.
pub fn name_or_null() -> Object {
    text_schema::string(1, 200, Lines::One, false, true)
}

/// A product description: 0 to 2,000 characters, line breaks allowed.
pub fn description() -> Object {
    text_schema::string(0, 2000, Lines::Many, true, false)
}

/// A description in a change: absent or null keeps it.
pub fn description_or_null() -> Object {
    text_schema::string(0, 2000, Lines::Many, true, true)
}

fn integer(min: i64, max: i64) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int32,
        )))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .build()
}

fn constant(value: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([value]))
        .build()
}

/// A stock change: a restock adds 1 to 1,000,000,000 units with an optional
/// note; an adjustment moves a non-zero number either way and says why.
pub fn stock_change() -> Schema {
    let max = i64::from(MAX_STOCK_DELTA);
    let restock = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("kind", constant("restock"))
        .property("delta", integer(1, max))
        .property("note", text_schema::string(0, 500, Lines::One, true, false))
        .required("kind")
        .required("delta")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "Units received: `delta` is 1 to 1,000,000,000; `note` (0 to 500 characters) is optional.",
        ))
        .build();
    let delta = OneOfBuilder::new()
        .item(integer(-max, -1))
        .item(integer(1, max))
        .build();
    let adjustment = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("kind", constant("adjustment"))
        .property("delta", RefOr::T(Schema::OneOf(delta)))
        .property("note", text_schema::string(1, 500, Lines::One, false, false))
        .required("kind")
        .required("delta")
        .required("note")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some("A correction: `delta` is non-zero, −1,000,000,000 to 1,000,000,000, and `note` (1 to 500 characters) says why."))
        .build();
    OneOfBuilder::new()
        .item(restock)
        .item(adjustment)
        .description(Some("A restock or an adjustment."))
        .examples([json!({"kind": "adjustment", "delta": -3, "note": "damaged in transit"})])
        .build()
        .into()
}

/// One entry of a campaign's SKUs: exactly one of `sku_id` and `product_id`,
/// a floor, and an optional allocation.
pub fn campaign_entry() -> Schema {
    let entry = |id: &str, other: &str, what: &str| {
        let uuid = ObjectBuilder::new().schema_type(Type::String).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid),
        ));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(id, uuid)
            .property(other, ObjectBuilder::new().schema_type(Type::Null))
            .property(
                "floor_price_minor",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(1.0))
                    .maximum(Some(MAX_PRICE_MINOR as f64))
                    .description(Some("Minor units of the SKU's currency.")),
            )
            .property(
                "allocated_units",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int32,
                    )))
                    .minimum(Some(0.0))
                    .maximum(Some(f64::from(MAX_STOCK_DELTA)))
                    .description(Some(
                        "Units the campaign may take in all; none if absent or null.",
                    )),
            )
            .required(id)
            .required("floor_price_minor")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some(what))
            .build()
    };
    OneOfBuilder::new()
        .item(entry("sku_id", "product_id", "A SKU."))
        .item(entry(
            "product_id",
            "sku_id",
            "Every SKU the product has now, each with this floor and allocation.",
        ))
        .description(Some(
            "One entry of a campaign: exactly one of `sku_id` and `product_id`.",
        ))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image_url_re() -> regex::Regex {
        regex::Regex::new(IMAGE_URL_PATTERN).unwrap()
    }

    #[test]
    fn the_image_url_pattern_agrees_with_the_server_on_known_cases() {
        let re = image_url_re();
        for url in [
            "https://cdn.example.com/a.jpg",
            "http://example.com",
            "https://example.com:8443/x?y=1#z",
            "https://user@host/x",
            "https://a@b@c",
            "https://a@:80/x",
            "https://[::1]/x.jpg",
            "https://[/x",
            "https://h:/x",
            "https://h:123456/x",
            "https://-h.example/x",
            "https://h.example/[a]",
            "https://:80/x",
            "https://",
            "https:///path",
            "https://exa mple.com/a.jpg",
            "https://example.com/\"x",
            "https://example.com/a\n",
            "javascript:alert(1)",
            "HTTPS://example.com",
            "https://h?q",
            "https://h#",
        ] {
            assert_eq!(
                re.is_match(url),
                crate::validate::image_urls(&[url.to_string()]).is_ok(),
                "{url:?}"
            );
        }
    }

    proptest! {
        /// Strings built from the characters that matter to the rule.
        #[test]
        fn the_image_url_pattern_agrees_with_the_server(
            scheme in prop::sample::select(vec!["https://", "http://", "ftp://", "https:/", ""]),
            rest in "[-a-z0-9:@/?#.\\[\\] \"<>\\\\^`{|}%~\\n\\u{e9}]{0,12}",
        ) {
            let url = format!("{scheme}{rest}");
            prop_assert_eq!(
                image_url_re().is_match(&url),
                crate::validate::image_urls(std::slice::from_ref(&url)).is_ok(),
                "{:?}", url
            );
        }
    }
}
