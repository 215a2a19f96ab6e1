//! A buyer's profile: the shipping address they keep, copied onto each order
//! they place from then on (the settlement copies it in the insert).

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};

use crate::Commerce;
use hawker_core::error::{Error, Result};

/// Where to send a buyer's orders. Every text field: not all white space,
/// without control, bidi or zero-width characters, at most its length in
/// characters (Unicode scalar values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingAddress {
    /// Who receives the parcel, 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "Mia Chen",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub name: String,
    /// 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "12 Harbour Street",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub line1: String,
    /// 1 to 200 characters, or absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "Flat 4",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub line2: Option<String>,
    /// 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "Singapore",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub city: String,
    /// State, province or county, 1 to 100 characters, or absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub region: Option<String>,
    /// 1 to 20 characters: letters, digits, spaces and hyphens.
    #[schema(
        min_length = 1,
        max_length = 20,
        example = "049318",
        pattern = "^[A-Za-z0-9][A-Za-z0-9 -]{0,19}$"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(example = "SG", pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// A phone number for the carrier: `+` and 6 to 20 digits, or absent.
    #[serde(default)]
    #[schema(example = "+6561234567", pattern = "^\\+[0-9]{6,20}$")]
    pub phone: Option<String>,
}

fn text(field: &'static str, value: &str, max: usize) -> Result<()> {
    crate::free_text::clean(field, "bad_address", value, max, false, false)
}

impl ShippingAddress {
    /// Checks every field (400 `bad_address`, naming the field).
    pub fn validate(&self) -> Result<()> {
        text("name", &self.name, 100)?;
        text("line1", &self.line1, 200)?;
        if let Some(line2) = &self.line2 {
            text("line2", line2, 200)?;
        }
        text("city", &self.city, 100)?;
        if let Some(region) = &self.region {
            text("region", region, 100)?;
        }
        let postal = self.postal_code.as_bytes();
        if postal.is_empty()
            || postal.len() > 20
            || !postal[0].is_ascii_alphanumeric()
            || !postal
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b' ' || *b == b'-')
        {
            return Err(Error::invalid(
                "bad_address",
                "postal_code must be 1 to 20 letters, digits, spaces or hyphens, starting with a letter or digit",
            ));
        }
        if self.country.len() != 2 || !self.country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::invalid(
                "bad_address",
                "country must be an ISO 3166-1 alpha-2 code in upper case",
            ));
        }
        if let Some(phone) = &self.phone {
            let digits = phone.strip_prefix('+').unwrap_or("");
            if !(6..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::invalid(
                    "bad_address",
                    "phone must be + and 6 to 20 digits",
                ));
            }
        }
        Ok(())
    }
}

/// The caller's shipping address as kept on their profile.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Profile {
    /// Null until the caller gives one.
    pub shipping_address: Option<ShippingAddress>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The caller's profile (an empty one if they never gave an address).
pub async fn profile(c: &Commerce, claims: &Claims) -> Result<Profile> {
    let row: Option<(Option<sqlx::types::Json<ShippingAddress>>, DateTime<Utc>)> =
        sqlx::query_as("select shipping_address, updated_at from viewer_profile where viewer_id = $1")
            .bind(&claims.sub)
            .fetch_optional(c.db())
            .await?;
    Ok(match row {
        Some((address, updated_at)) => Profile {
            shipping_address: address.map(|a| a.0),
            updated_at: Some(updated_at),
        },
        None => Profile {
            shipping_address: None,
            updated_at: None,
        },
    })
}

/// Keeps `address` on the caller's profile; orders placed from now on carry a copy.
#[tracing::instrument(skip_all, fields(caller = %claims.sub))]
pub async fn set_shipping_address(
    c: &Commerce,
    claims: &Claims,
    address: ShippingAddress,
) -> Result<Profile> {
    address.validate()?;
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "insert into viewer_profile (viewer_id, shipping_address) values ($1, $2)
         on conflict (viewer_id) do update set shipping_address = excluded.shipping_address, updated_at = now()
         returning updated_at",
    )
    .bind(&claims.sub)
    .bind(sqlx::types::Json(&address))
    .fetch_one(c.db())
    .await?;
    Ok(Profile {
        shipping_address: Some(address),
        updated_at: Some(updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> ShippingAddress {
        ShippingAddress {
            name: "Mia Chen".into(),
            line1: "12 Harbour Street".into(),
            line2: None,
            city: "Singapore".into(),
            region: None,
            postal_code: "049318".into(),
            country: "SG".into(),
            phone: Some("+6561234567".into()),
        }
    }

    #[test]
    fn a_plain_address_is_valid() {
        address().validate().unwrap();
    }

    #[test]
    fn hidden_characters_blank_fields_and_bad_codes_are_refused() {
        type Break = Box<dyn Fn(&mut ShippingAddress)>;
        let cases: Vec<Break> = vec![
            Box::new(|a| a.name = "Mia\u{202E}nehC".into()),
            Box::new(|a| a.line1 = "   ".into()),
            Box::new(|a| a.line2 = Some("a\nb".into())),
            Box::new(|a| a.city = "x".repeat(101)),
            Box::new(|a| a.postal_code = "-123".into()),
            Box::new(|a| a.country = "sg".into()),
            Box::new(|a| a.country = "SGP".into()),
            Box::new(|a| a.phone = Some("12345678".into())),
            Box::new(|a| a.phone = Some("+12".into())),
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut a = address();
            change(&mut a);
            assert_eq!(a.validate().unwrap_err().code(), "bad_address", "case {i}");
        }
    }
}
