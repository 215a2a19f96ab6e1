//! The socket protocol's frames (see `docs/protocol.md`).

use serde::Serialize;
use serde_json::{json, Value};

use crate::store::Snapshot;

/// WebSocket close codes hawker uses.
pub mod close_code {
    /// The node is shutting down: reconnect (to any node) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (an unmasked frame, a control
    /// frame over 125 bytes or fragmented...).
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame above `hub.hard_max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Nothing received for `hub.idle_timeout_secs`.
    pub const IDLE: u16 = 4001;
    /// The session ended: the room closes its sockets after
    /// `hub.session_end_grace_ms`, and refuses new ones. Do not reconnect.
    pub const SESSION_ENDED: u16 = 4009;
    /// Banned from the room.
    pub const BANNED: u16 = 4003;
    /// The token the socket was opened with has expired: reconnect with a
    /// fresh token and resume from the last offset.
    pub const TOKEN_EXPIRED: u16 = 4011;
    /// The viewer did not read fast enough and its queue overflowed:
    /// reconnect and resume from the last offset.
    pub const SLOW: u16 = 4008;
    /// The room could not be joined within `hub.join_timeout_ms` (Redis
    /// slow or unreachable, or the node shutting down): retry later.
    pub const UNAVAILABLE: u16 = 4013;
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Value::is_null")]
    data: Value,
}

/// An `ack` frame; `data` is left out when it is `null`.
pub fn ack(id: Option<&str>, data: Value) -> String {
    serde_json::to_string(&Ack {
        kind: "ack",
        id,
        data,
    })
    .unwrap_or_default()
}

/// An `error` frame: `{"type": "error", "id", "code", "message"}`, its keys
/// sorted, as docs/protocol.md shows them (and as the `json!` object it was
/// built from before wrote them in a release build). Written straight from
/// the fields, the bytes serde_json would write: through a `Value` it was a
/// quarter of a refused `deal.buy`'s instructions, and through a serialized
/// struct still 8 %.
pub fn error(id: Option<&str>, code: &str, message: &str) -> String {
    let mut frame = String::with_capacity(48 + code.len() + message.len() + id.map_or(4, str::len));
    frame.push_str("{\"code\":");
    push_json_string(&mut frame, code);
    frame.push_str(",\"id\":");
    match id {
        Some(id) => push_json_string(&mut frame, id),
        None => frame.push_str("null"),
    }
    frame.push_str(",\"message\":");
    push_json_string(&mut frame, message);
    frame.push_str(",\"type\":\"error\"}");
    frame
}

/// `text` as a JSON string. serde_json escapes only `"`, `\` and control
/// characters; text without them is written as it is.
fn push_json_string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        // A `str` always serializes.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    }
}

/// `welcome` on a fresh join and on an exact resume; `reset` when the
/// client's position is gone (older than the history, or another epoch).
pub fn snapshot_frame(kind: &str, snapshot: &Snapshot, you: Value, resumed_from: Option<u64>) -> String {
    let mut frame = json!({
        "type": kind,
        "epoch": snapshot.epoch,
        "offset": snapshot.offset,
        "state": snapshot.state,
        "you": you,
    });
    if let Some(from) = resumed_from {
        frame["resumed_from"] = json!(from);
    }
    frame.to_string()
}

/// Parses `epoch:offset` (the `resume` query parameter).
pub fn parse_resume(value: &str) -> Option<(String, u64)> {
    let (epoch, offset) = value.split_once(':')?;
    if epoch.is_empty() || epoch.len() > 64 {
        return None;
    }
    Some((epoch.to_string(), offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_positions_parse_or_are_refused() {
        assert_eq!(parse_resume("ab12:40"), Some(("ab12".to_string(), 40)));
        assert_eq!(parse_resume("ab12"), None);
        assert_eq!(parse_resume(":4"), None);
        assert_eq!(parse_resume("e:-1"), None);
    }

    #[test]
    fn acks_and_errors_carry_the_request_id() {
        let a: Value = serde_json::from_str(&ack(Some("r1"), json!({"offset": 3}))).unwrap();
        assert_eq!(
            (a["type"].as_str(), a["id"].as_str(), a["data"]["offset"].as_u64()),
            (Some("ack"), Some("r1"), Some(3))
        );
        let e: Value = serde_json::from_str(&error(None, "bad_json", "nope")).unwrap();
        assert_eq!(e["code"], "bad_json");
        assert!(e["id"].is_null());
    }

    #[test]
    fn error_frames_are_the_bytes_of_a_sorted_json_object() {
        // Sorted by a BTreeMap: serde_json's `preserve_order` (on in test
        // builds of the workspace, through a dev-dependency) would keep a
        // `json!` object's own order instead.
        let cases = [
            (None, "sold_out", "the deal is sold out"),
            (Some("r\"1\n"), "bad_json", "expected `,` at \u{1} \"x\" é ✓"),
            (Some(""), "", ""),
            (Some("a\\b\t"), "x\u{7f}", "tab\there, \u{1f} and \u{20}"),
            (Some("plain"), "sold_out", "no escapes: / ' < > \u{7f} \u{2028}"),
        ];
        for (id, code, message) in cases {
            let sorted: std::collections::BTreeMap<&str, Value> = [
                ("type", json!("error")),
                ("id", json!(id)),
                ("code", json!(code)),
                ("message", json!(message)),
            ]
            .into_iter()
            .collect();
            assert_eq!(error(id, code, message), serde_json::to_string(&sorted).unwrap());
        }
        assert_eq!(
            error(Some("b3"), "cap_exceeded", "held 2"),
            r#"{"code":"cap_exceeded","id":"b3","message":"held 2","type":"error"}"#
        );
    }
}
