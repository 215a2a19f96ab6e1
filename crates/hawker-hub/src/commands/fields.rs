//! A command's `data`, read field by field with the documented rules:
//! `data` is an object (or absent); a field that is absent or `null` takes
//! its documented default (or is refused as missing); a field of the wrong
//! JSON type is refused (`bad_command`), never coerced or defaulted.
//!
//! The frame is read in one pass without copying: `data`'s top-level fields
//! are kept in the order sent, a string borrowed from the frame unless it
//! has escapes, a number as a [`Number`]; only a nested object or list (a
//! pin's item, the blocked words) becomes a [`Value`]. Through a whole
//! `Value` (a map node, a `String` per key and per value, and their drop)
//! reading the frame was a fifth of a refused `deal.buy`'s instructions.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Number, Value};
use uuid::Uuid;

use super::CommandError;

/// A command's `data`: its top-level fields, or the mark that it is not an
/// object (an error only once a field is asked for: a command without
/// fields never looks). Absent and `null` are an object without fields.
#[derive(Debug)]
pub struct Data<'a>(Option<Vec<(Cow<'a, str>, Val<'a>)>>);

impl Default for Data<'_> {
    /// `data` absent: no fields.
    fn default() -> Self {
        Data(Some(Vec::new()))
    }
}

impl Data<'_> {
    /// The fields, read with the documented rules.
    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields(self)
    }
}

/// One top-level value of `data`, as sent.
#[derive(Debug)]
pub(crate) enum Val<'a> {
    Null,
    /// `true` or `false` (no command reads one).
    Bool,
    Number(Number),
    Str(Cow<'a, str>),
    /// An object or a list.
    Nested(Value),
}

/// How commands read their `data` (see the module's rules).
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a>(&'a Data<'a>);

impl<'a> Fields<'a> {
    /// The field's value; `None` when absent or `null`. A key sent twice
    /// counts as its last value, as a JSON object read into a map would.
    pub(crate) fn get(self, field: &str) -> Result<Option<Field<'a>>, CommandError> {
        let Data(entries) = self.0;
        let entries = entries
            .as_ref()
            .ok_or_else(|| CommandError::bad("`data` must be an object"))?;
        Ok(entries
            .iter()
            .rev()
            .find(|(key, _)| key == field)
            .map(|(_, value)| Field(value))
            .filter(|value| !matches!(value.0, Val::Null)))
    }

    /// A field that must be present.
    pub(crate) fn required(self, field: &str) -> Result<Field<'a>, CommandError> {
        self.get(field)?
            .ok_or_else(|| CommandError::bad(format!("`{field}` is required")))
    }

    /// A string field, required.
    pub(crate) fn string(self, field: &str) -> Result<&'a str, CommandError> {
        self.required(field)?
            .as_str()
            .ok_or_else(|| CommandError::bad(format!("`{field}` must be a string")))
    }

    /// A text, trimmed: 1 to `max_chars` characters (Unicode scalar values).
    pub(crate) fn text(self, field: &'static str, max_chars: usize) -> Result<String, CommandError> {
        let text = match self.get(field)? {
            None => "",
            Some(value) => value
                .as_str()
                .ok_or_else(|| CommandError::bad(format!("`{field}` must be a non-empty string")))?
                .trim(),
        };
        if text.is_empty() {
            return Err(CommandError::bad(format!("`{field}` must be a non-empty string")));
        }
        if text.chars().count() > max_chars {
            return Err(CommandError::TooLong { field, max_chars });
        }
        // What others read must read as what it is: no control characters
        // (line breaks included), bidi overrides or zero-width characters.
        if let Some(c) = hawker_core::text::hidden_char(text, false) {
            return Err(CommandError::bad(format!(
                "`{field}` may not contain control, bidi or zero-width characters (found U+{:04X})",
                c as u32
            )));
        }
        Ok(text.to_string())
    }

    /// An integer field (a JSON number without a fractional part: `2` or
    /// `2.0`, never `"2"`, `2.5` or `true`); `None` when absent or `null`.
    pub(crate) fn integer(self, field: &str) -> Result<Option<i128>, CommandError> {
        let Some(value) = self.get(field)? else {
            return Ok(None);
        };
        value
            .integer()
            .map(Some)
            .ok_or_else(|| CommandError::bad(format!("`{field}` must be an integer")))
    }

    /// An integer in `range`, or `default` when absent or `null`.
    pub(crate) fn integer_in(
        self,
        field: &str,
        range: std::ops::RangeInclusive<u64>,
        default: Option<u64>,
    ) -> Result<u64, CommandError> {
        let out_of_range = || {
            CommandError::bad(format!(
                "`{field}` must be an integer from {} to {}",
                range.start(),
                range.end()
            ))
        };
        match self.integer(field)? {
            None => default.ok_or_else(|| CommandError::bad(format!("`{field}` is required"))),
            Some(n) => u64::try_from(n)
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(out_of_range),
        }
    }

    /// The target of a moderation command: a user id of 1 to 64 bytes.
    pub(crate) fn user(self) -> Result<String, CommandError> {
        match self.get("user")?.and_then(Field::as_str) {
            Some(user) if !user.is_empty() && user.len() <= 64 => Ok(user.to_string()),
            _ => Err(CommandError::bad("`user` must be a user id")),
        }
    }

    pub(crate) fn uuid(self, field: &'static str) -> Result<Uuid, CommandError> {
        self.get(field)?
            .and_then(Field::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| CommandError::bad(format!("`{field}` must be a UUID")))
    }

    /// A UUID, or `None` when absent or `null`.
    pub(crate) fn optional_uuid(self, field: &'static str) -> Result<Option<Uuid>, CommandError> {
        match self.get(field)? {
            None => Ok(None),
            Some(_) => self.uuid(field).map(Some),
        }
    }
}

/// One field's value, as sent.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a>(&'a Val<'a>);

impl<'a> Field<'a> {
    /// The string, if the value is one.
    pub(crate) fn as_str(self) -> Option<&'a str> {
        match self.0 {
            Val::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The integer a JSON number stands for, if it has no fractional part.
    pub(crate) fn integer(self) -> Option<i128> {
        let Val::Number(number) = self.0 else {
            return None;
        };
        if let Some(n) = number.as_i64() {
            return Some(n.into());
        }
        if let Some(n) = number.as_u64() {
            return Some(n.into());
        }
        let f = number.as_f64()?;
        // Beyond 2^63 an integral float is out of every range anyway.
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i128)
    }

    /// The object, if the value is one.
    pub(crate) fn object(self) -> Option<&'a Value> {
        match self.0 {
            Val::Nested(value) if value.is_object() => Some(value),
            _ => None,
        }
    }

    /// The list, if the value is one.
    pub(crate) fn list(self) -> Option<&'a Vec<Value>> {
        match self.0 {
            Val::Nested(value) => value.as_array(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Walk<'a>(std::marker::PhantomData<Data<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Walk<'a> {
            type Value = Data<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Data<'a>, M::Error> {
                let mut entries = Vec::with_capacity(4);
                while let Some(Key(key)) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Data(Some(entries)))
            }

            fn visit_unit<E>(self) -> Result<Data<'a>, E> {
                Ok(Data::default())
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Data<'a>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Data(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Data<'a>, E> {
                Ok(Data(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Data<'a>, E> {
                Ok(Data(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Data<'a>, E> {
                Ok(Data(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Data<'a>, E> {
                Ok(Data(None))
            }

            fn visit_str<E>(self, _: &str) -> Result<Data<'a>, E> {
                Ok(Data(None))
            }
        }
        deserializer.deserialize_any(Walk(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Val<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Walk<'a>(std::marker::PhantomData<Val<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Walk<'a> {
            type Value = Val<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_unit<E>(self) -> Result<Val<'a>, E> {
                Ok(Val::Null)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Val<'a>, E> {
                Ok(Val::Bool)
            }

            fn visit_i64<E>(self, n: i64) -> Result<Val<'a>, E> {
                Ok(Val::Number(n.into()))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Val<'a>, E> {
                Ok(Val::Number(n.into()))
            }

            fn visit_f64<E>(self, f: f64) -> Result<Val<'a>, E> {
                // JSON has no NaN or infinity: a parsed float is finite.
                Ok(Number::from_f64(f).map_or(Val::Null, Val::Number))
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Val<'a>, E> {
                Ok(Val::Str(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Val<'a>, E> {
                Ok(Val::Str(Cow::Owned(text.to_string())))
            }

            fn visit_string<E>(self, text: String) -> Result<Val<'a>, E> {
                Ok(Val::Str(Cow::Owned(text)))
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Val<'a>, M::Error> {
                Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Val::Nested)
            }

            fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Val<'a>, S::Error> {
                Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Val::Nested)
            }
        }
        deserializer.deserialize_any(Walk(std::marker::PhantomData))
    }
}

/// An object's key, borrowed from the frame unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Val::deserialize(deserializer)? {
            Val::Str(key) => Ok(Key(key)),
            _ => Err(serde::de::Error::custom("a key is a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<T>(data: &str, read: impl FnOnce(Fields<'_>) -> T) -> T {
        let data: Data<'_> = serde_json::from_str(data).unwrap();
        read(data.fields())
    }

    #[test]
    fn fields_are_read_as_a_map_would_read_them() {
        let data = r#"{"a": "x\u00e9\"", "b": 2.0, "c": null, "a2": "plain", "n": "5", "a2": "last", "o": {"k": [1, "z"]}, "l": [2]}"#;
        with(data, |f| {
            assert_eq!(f.string("a").unwrap(), "xé\"");
            assert_eq!(f.string("a2").unwrap(), "last");
            assert_eq!(f.integer("b").unwrap(), Some(2));
            assert_eq!(f.integer("c").unwrap(), None);
            assert!(f.get("c").unwrap().is_none());
            assert!(f.get("missing").unwrap().is_none());
            assert_eq!(f.integer("n").err().map(|e| e.code()), Some("bad_command"));
            assert_eq!(f.string("b").err().map(|e| e.code()), Some("bad_command"));
            let object = f.get("o").unwrap().and_then(Field::object);
            assert_eq!(object, Some(&serde_json::json!({"k": [1, "z"]})));
            assert!(f.get("o").unwrap().and_then(Field::list).is_none());
            assert_eq!(
                f.get("l").unwrap().and_then(Field::list),
                Some(&vec![serde_json::json!(2)])
            );
            assert!(f.get("l").unwrap().and_then(Field::object).is_none());
        });
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_frame() {
        let data: Data<'_> = serde_json::from_str(r#"{"plain": "x", "escaped": "\u0078"}"#).unwrap();
        let entries = data.0.as_ref().unwrap();
        assert!(matches!(
            &entries[0],
            (Cow::Borrowed("plain"), Val::Str(Cow::Borrowed("x")))
        ));
        assert!(matches!(&entries[1].1, Val::Str(Cow::Owned(x)) if x == "x"));
    }

    #[test]
    fn escaped_keys_are_their_text() {
        with(r#"{"te\u0078t": "hi"}"#, |f| {
            assert_eq!(f.string("text").unwrap(), "hi")
        });
    }

    #[test]
    fn data_that_is_not_an_object_is_refused_only_when_a_field_is_asked_for() {
        for data in ["5", "-1", "2.5", "[1, [2]]", "\"s\"", "true"] {
            with(data, |f| {
                assert_eq!(f.get("a").err().map(|e| e.code()), Some("bad_command"), "{data}");
            });
        }
        assert!(Data::default().fields().get("a").unwrap().is_none());
        with("null", |f| assert!(f.get("a").unwrap().is_none()));
    }

    #[test]
    fn integers_follow_the_documented_rules() {
        for (text, expected) in [
            ("2", Some(2)),
            ("-3", Some(-3)),
            ("2.0", Some(2)),
            ("2.5", None),
            ("18446744073709551615", Some(u64::MAX as i128)),
            ("1e3", Some(1000)),
            ("1e300", None),
            ("true", None),
            ("\"2\"", None),
        ] {
            let data = format!(r#"{{"n": {text}}}"#);
            with(&data, |f| {
                assert_eq!(f.get("n").unwrap().and_then(Field::integer), expected, "{text}")
            });
        }
    }
}
