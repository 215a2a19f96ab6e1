//! Fuzz targets of the socket command parser (proptest; `cargo test` runs a
//! bounded number of cases): a text frame goes through [`read_frame`] and
//! [`Command::parse`] exactly as the connection does. Whatever the frame,
//! neither panics, and every refusal is one of the documented codes of its
//! stage: the envelope is `bad_json` or `frame_too_large`; a command is
//! `unknown_command`, `forbidden`, `bad_command`, `too_long` or `bad_quantity`.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{read_frame, Command, Rights};
use crate::config::HubConfig;

/// Near misses of command types (the real ones are `COMMAND_TYPES`).
const NEAR_MISSES: &[&str] = &["", "chat", "CHAT.SEND", "deal.buy\u{0}", "mod.ban "];

/// Every command type the parser knows, plus near misses.
fn types() -> Vec<&'static str> {
    super::COMMAND_TYPES.iter().chain(NEAR_MISSES).copied().collect()
}

/// Field names the commands read, so generated objects hit their checks.
const FIELDS: &[&str] = &[
    "text",
    "count",
    "link_number",
    "user",
    "duration_secs",
    "reason",
    "interval_secs",
    "enabled",
    "words",
    "deal_id",
    "quantity",
    "idempotency_key",
    "coupon_claim_id",
    "coupon_drop_id",
    "id",
];

const ENVELOPE_CODES: &[&str] = &["bad_json", "frame_too_large"];
const COMMAND_CODES: &[&str] = &[
    "unknown_command",
    "forbidden",
    "bad_command",
    "too_long",
    "bad_quantity",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(i64::from(i32::MAX) + 1),
            Just(-1i64),
            Just(0),
            Just(100),
            Just(101)
        ]
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("0192f0c4-7f6e-7a51-9c1e-3f0b8e7d2a10")),
        Just(Value::from("a".repeat(5000))),
        Just(Value::from("evil\u{202E}txt\u{200B}\n\u{0}")),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn rights() -> impl Strategy<Value = Rights> {
    (any::<bool>(), any::<bool>()).prop_map(|(host, moderate)| Rights { host, moderate })
}

/// Runs a frame through both stages as the connection does; asserts the
/// refusal codes. (A panic fails the case by itself.)
fn check_frame(text: &str, rights: Rights, config: &HubConfig) -> Result<(), TestCaseError> {
    match read_frame(text, config.max_frame_bytes) {
        Err(e) => {
            prop_assert!(
                ENVELOPE_CODES.contains(&e.code()),
                "envelope: {} for {text:?}",
                e.code()
            );
            if text.len() > config.max_frame_bytes {
                prop_assert_eq!(e.code(), "frame_too_large");
            }
        }
        Ok(frame) => {
            prop_assert!(text.len() <= config.max_frame_bytes);
            if let Err(e) = Command::parse(&frame.kind, &frame.data, rights, config) {
                prop_assert!(
                    COMMAND_CODES.contains(&e.code()),
                    "command: {} for {text:?}",
                    e.code()
                );
                // The message of an error frame is always printable.
                let _ = e.to_string();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_frame_is_parsed_or_refused_with_an_envelope_code(text in ".{0,300}", rights in rights()) {
        check_frame(&text, rights, &HubConfig::default())?;
    }

    #[test]
    fn any_command_object_is_parsed_or_refused_with_a_command_code(
        kind in prop::sample::select(types()),
        data in json_value(),
        id in prop::option::of(".{0,20}"),
        rights in rights(),
    ) {
        let frame = json!({"id": id, "type": kind, "data": data}).to_string();
        check_frame(&frame, rights, &HubConfig::default())?;
    }

    #[test]
    fn a_valid_frame_cut_or_spliced_anywhere_never_panics(
        cut in 0usize..200,
        splice in ".{0,8}",
        rights in rights(),
    ) {
        let valid = r#"{"id":"r1","type":"deal.buy","data":{"deal_id":"0192f0c4-7f6e-7a51-9c1e-3f0b8e7d2a10","quantity":2,"idempotency_key":"k-1"}}"#;
        let at = valid.char_indices().map(|(i, _)| i).nth(cut % valid.len()).unwrap_or(0);
        let mut mutated = valid[..at].to_string();
        mutated.push_str(&splice);
        mutated.push_str(&valid[at..]);
        check_frame(&mutated, rights, &HubConfig::default())?;
        check_frame(&valid[..at], rights, &HubConfig::default())?;
    }
}
