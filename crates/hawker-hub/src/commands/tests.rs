//! The parser against `docs/protocol.md`: every command parses, and each
//! malformed input gets its documented code.

use serde_json::{json, Value};
use uuid::Uuid;

use super::chat::{Chat, Like};
use super::host::{HostText, Pin};
use super::moderation::{BlockedWords, Restrict, SlowMode, Target};
use super::*;

const HOST: Rights = Rights {
    host: true,
    moderate: true,
};
const MODERATOR: Rights = Rights {
    host: false,
    moderate: true,
};
const VIEWER: Rights = Rights {
    host: false,
    moderate: false,
};

fn parse_as(rights: Rights, kind: &str, data: Value) -> Result<Command, CommandError> {
    let text = data.to_string();
    let data: Data<'_> = serde_json::from_str(&text).unwrap();
    Command::parse(kind, &data, rights, &HubConfig::default())
}

fn parse(kind: &str, data: Value) -> Result<Command, CommandError> {
    parse_as(HOST, kind, data)
}

/// The code a malformed command is refused with (panics if it parses).
fn code(kind: &str, data: Value) -> &'static str {
    match parse(kind, data.clone()) {
        Ok(command) => panic!("{kind} {data} parsed as {command:?}"),
        Err(e) => e.code(),
    }
}

fn text(t: &str) -> String {
    t.to_string()
}

#[test]
fn every_documented_command_parses() {
    let deal = Uuid::new_v4();
    let claim = Uuid::new_v4();
    let drop = Uuid::new_v4();
    let cases = [
        ("ping", json!({}), Command::Ping),
        (
            "chat.send",
            json!({"text": "  hi  "}),
            Command::Chat(Chat {
                text: text("hi"),
                client_msg_id: None,
            }),
        ),
        (
            "chat.send",
            json!({"text": "SOLD 7", "client_msg_id": "c-5f1e-0001"}),
            Command::Chat(Chat {
                text: text("SOLD 7"),
                client_msg_id: Some(text("c-5f1e-0001")),
            }),
        ),
        ("like", json!({"count": 3}), Command::Like(Like { count: 3 })),
        (
            "host.announce",
            json!({"text": "try #7"}),
            Command::Announce(HostText { text: text("try #7") }),
        ),
        (
            "host.message",
            json!({"text": "hello chat"}),
            Command::HostMessage(HostText {
                text: text("hello chat"),
            }),
        ),
        (
            "host.pin",
            json!({"item": {"link": 7}}),
            Command::Pin(Pin {
                item: json!({"link": 7}),
            }),
        ),
        ("host.unpin", json!({}), Command::Unpin),
        (
            "mod.mute",
            json!({"user": "v1", "seconds": 60}),
            Command::Mute(Restrict {
                user: text("v1"),
                seconds: 60,
            }),
        ),
        (
            "mod.ban",
            json!({"user": "v1", "seconds": 2_592_000}),
            Command::Ban(Restrict {
                user: text("v1"),
                seconds: 2_592_000,
            }),
        ),
        (
            "mod.unmute",
            json!({"user": "v1"}),
            Command::Unmute(Target { user: text("v1") }),
        ),
        (
            "mod.unban",
            json!({"user": "v1"}),
            Command::Unban(Target { user: text("v1") }),
        ),
        (
            "mod.slow_mode",
            json!({"seconds": 0}),
            Command::SlowMode(SlowMode { seconds: 0 }),
        ),
        (
            "mod.blocked_words",
            json!({"words": ["spam", "scam"]}),
            Command::BlockedWords(BlockedWords {
                words: vec![text("spam"), text("scam")],
            }),
        ),
        (
            "mod.blocked_words",
            json!({"words": []}),
            Command::BlockedWords(BlockedWords { words: vec![] }),
        ),
        (
            "mod.grant",
            json!({"user": "m1"}),
            Command::Grant(Target { user: text("m1") }),
        ),
        (
            "mod.revoke",
            json!({"user": "m1"}),
            Command::Revoke(Target { user: text("m1") }),
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "quantity": 2, "idempotency_key": "k1", "coupon_claim_id": claim}),
            Command::Buy(Buy {
                deal_id: deal,
                quantity: 2,
                idempotency_key: text("k1"),
                coupon_claim_id: Some(claim),
            }),
        ),
        (
            "coupon.claim",
            json!({"coupon_drop_id": drop}),
            Command::Claim(Claim { coupon_drop_id: drop }),
        ),
    ];
    for (kind, data, expected) in cases {
        let parsed = parse(kind, data).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        assert_eq!(parsed, expected, "{kind}");
        assert_eq!(parsed.name(), kind);
    }
}

#[test]
fn commands_without_fields_need_no_data() {
    for (kind, expected) in [
        ("ping", Command::Ping),
        ("host.unpin", Command::Unpin),
        ("like", Command::Like(Like { count: 1 })),
    ] {
        assert_eq!(parse(kind, Value::Null).ok(), Some(expected), "{kind}");
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    // `like` count and mute/ban seconds: absent or `null`.
    for data in [json!({}), json!({"count": null}), Value::Null] {
        assert_eq!(parse("like", data).ok(), Some(Command::Like(Like { count: 1 })));
    }
    for kind in ["mod.mute", "mod.ban"] {
        let parsed = parse(kind, json!({"user": "v1", "seconds": null})).ok();
        let expected = Restrict {
            user: text("v1"),
            seconds: 600,
        };
        assert_eq!(
            parsed,
            Some(if kind == "mod.mute" {
                Command::Mute(expected)
            } else {
                Command::Ban(expected)
            })
        );
    }
    // `deal.buy` quantity absent or null: 1; coupon absent or null: none.
    let deal = Uuid::new_v4();
    for data in [
        json!({"deal_id": deal, "idempotency_key": "k"}),
        json!({"deal_id": deal, "idempotency_key": "k", "quantity": null, "coupon_claim_id": null}),
    ] {
        assert_eq!(
            parse("deal.buy", data).ok(),
            Some(Command::Buy(Buy {
                deal_id: deal,
                quantity: 1,
                idempotency_key: text("k"),
                coupon_claim_id: None,
            }))
        );
    }
}

#[test]
fn an_unknown_type_is_unknown_command() {
    for kind in ["dance", "", "Chat.Send", "deal.sell", "internal.blocked_words"] {
        assert_eq!(code(kind, json!({})), "unknown_command", "{kind}");
    }
}

#[test]
fn malformed_fields_get_their_documented_codes() {
    let deal = Uuid::new_v4().to_string();
    let cases = [
        // chat.send
        ("chat.send", json!({}), "bad_command"),
        ("chat.send", json!({"text": "   "}), "bad_command"),
        ("chat.send", json!({"text": 5}), "bad_command"),
        ("chat.send", json!({"text": "y".repeat(201)}), "too_long"),
        (
            "chat.send",
            json!({"text": "hi", "client_msg_id": ""}),
            "bad_command",
        ),
        (
            "chat.send",
            json!({"text": "hi", "client_msg_id": "a b"}),
            "bad_command",
        ),
        (
            "chat.send",
            json!({"text": "hi", "client_msg_id": "café"}),
            "bad_command",
        ),
        (
            "chat.send",
            json!({"text": "hi", "client_msg_id": 7}),
            "bad_command",
        ),
        (
            "chat.send",
            json!({"text": "hi", "client_msg_id": "x".repeat(65)}),
            "bad_command",
        ),
        // like
        ("like", json!({"count": 0}), "bad_command"),
        ("like", json!({"count": 101}), "bad_command"),
        ("like", json!({"count": -1}), "bad_command"),
        ("like", json!({"count": "3"}), "bad_command"),
        ("like", json!({"count": 1.5}), "bad_command"),
        ("like", json!({"count": true}), "bad_command"),
        ("like", json!({"count": [1]}), "bad_command"),
        ("like", json!("3"), "bad_command"),
        ("like", json!([1]), "bad_command"),
        // host texts and pins
        ("host.announce", json!({}), "bad_command"),
        ("host.announce", json!({"text": "x".repeat(1001)}), "too_long"),
        ("host.message", json!({"text": ""}), "bad_command"),
        ("host.message", json!({"text": "x".repeat(1001)}), "too_long"),
        ("host.pin", json!({}), "bad_command"),
        ("host.pin", json!({"item": "a string"}), "bad_command"),
        ("host.pin", json!({"item": [1, 2]}), "bad_command"),
        (
            "host.pin",
            json!({"item": {"blob": "x".repeat(2048)}}),
            "bad_command",
        ),
        // moderation
        ("mod.mute", json!({}), "bad_command"),
        ("mod.mute", json!({"user": ""}), "bad_command"),
        ("mod.mute", json!({"user": "u".repeat(65)}), "bad_command"),
        ("mod.mute", json!({"user": 7}), "bad_command"),
        ("mod.mute", json!({"user": "v", "seconds": 0}), "bad_command"),
        ("mod.mute", json!({"user": "v", "seconds": -5}), "bad_command"),
        ("mod.mute", json!({"user": "v", "seconds": "60"}), "bad_command"),
        ("mod.ban", json!({"user": "v", "seconds": 60.5}), "bad_command"),
        ("mod.ban", json!({"user": "v", "seconds": false}), "bad_command"),
        ("mod.ban", json!(["v"]), "bad_command"),
        (
            "mod.ban",
            json!({"user": "v", "seconds": 2_592_001}),
            "bad_command",
        ),
        ("mod.unmute", json!({}), "bad_command"),
        ("mod.unban", json!({"user": null}), "bad_command"),
        ("mod.slow_mode", json!({}), "bad_command"),
        ("mod.slow_mode", json!({"seconds": "10"}), "bad_command"),
        ("mod.slow_mode", json!({"seconds": 3601}), "bad_command"),
        ("mod.slow_mode", json!({"seconds": -1}), "bad_command"),
        ("mod.slow_mode", json!({"seconds": 2.5}), "bad_command"),
        ("mod.slow_mode", json!({"seconds": true}), "bad_command"),
        ("mod.blocked_words", json!({}), "bad_command"),
        ("mod.blocked_words", json!({"words": "spam"}), "bad_command"),
        ("mod.blocked_words", json!({"words": [""]}), "bad_command"),
        (
            "mod.blocked_words",
            json!({"words": ["w".repeat(65)]}),
            "bad_command",
        ),
        ("mod.blocked_words", json!({"words": [1]}), "bad_command"),
        (
            "mod.blocked_words",
            json!({"words": vec!["w"; 501]}),
            "bad_command",
        ),
        ("mod.grant", json!({}), "bad_command"),
        ("mod.revoke", json!({"user": "u".repeat(65)}), "bad_command"),
        // deal.buy
        (
            "deal.buy",
            json!({"deal_id": "nope", "idempotency_key": "k"}),
            "bad_command",
        ),
        ("deal.buy", json!({"idempotency_key": "k"}), "bad_command"),
        ("deal.buy", json!({"deal_id": deal}), "bad_command"),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": 5}),
            "bad_command",
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": "k", "quantity": "2"}),
            "bad_command",
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": "k", "quantity": 1.5}),
            "bad_command",
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": "k", "quantity": true}),
            "bad_command",
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": "k", "quantity": 1_u64 << 40}),
            "bad_quantity",
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": "k", "coupon_claim_id": "x"}),
            "bad_command",
        ),
        ("deal.buy", json!("buy"), "bad_command"),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": ["k"]}),
            "bad_command",
        ),
        (
            "deal.buy",
            json!({"deal_id": deal, "idempotency_key": "k", "coupon_claim_id": 5}),
            "bad_command",
        ),
        // host texts of the wrong type
        ("host.announce", json!({"text": ["x"]}), "bad_command"),
        ("host.message", json!(5), "bad_command"),
        ("chat.send", json!("hi"), "bad_command"),
        ("chat.send", json!({"text": true}), "bad_command"),
        // coupon.claim
        ("coupon.claim", json!({}), "bad_command"),
        ("coupon.claim", json!({"coupon_drop_id": 5}), "bad_command"),
        ("coupon.claim", json!({"coupon_drop_id": "nope"}), "bad_command"),
    ];
    for (kind, data, expected) in cases {
        assert_eq!(code(kind, data.clone()), expected, "{kind} {data}");
    }
}

#[test]
fn integral_numbers_are_integers_whatever_their_spelling() {
    // JSON Schema's `integer`: a number without a fractional part.
    assert_eq!(
        parse("like", json!({"count": 2.0})).ok(),
        Some(Command::Like(Like { count: 2 }))
    );
    assert_eq!(
        parse("mod.slow_mode", json!({"seconds": 10.0})).ok(),
        Some(Command::SlowMode(SlowMode { seconds: 10 }))
    );
    let deal = Uuid::new_v4();
    let parsed = parse(
        "deal.buy",
        json!({"deal_id": deal, "idempotency_key": "k", "quantity": 3.0}),
    );
    assert!(
        matches!(parsed, Ok(Command::Buy(Buy { quantity: 3, .. }))),
        "{parsed:?}"
    );
}

#[test]
fn chat_limits_count_unicode_scalar_values_not_bytes() {
    // 200 scalar values of 4 bytes each (800 bytes) fit; 201 do not.
    assert!(parse("chat.send", json!({"text": "😀".repeat(200)})).is_ok());
    assert_eq!(code("chat.send", json!({"text": "😀".repeat(201)})), "too_long");
    // "é" as e + combining accent is two scalar values.
    assert_eq!(
        code("chat.send", json!({"text": "e\u{301}".repeat(101)})),
        "too_long"
    );
}

#[test]
fn the_range_checks_of_deal_buy_are_left_to_commerce() {
    // 0 and 101 units, and an empty key, are refused by `place_order` with
    // `bad_quantity` / `bad_idempotency_key`, the same as over HTTP.
    let deal = Uuid::new_v4();
    for (quantity, key) in [(0, "k"), (101, "k"), (1, "")] {
        let parsed = parse(
            "deal.buy",
            json!({"deal_id": deal, "quantity": quantity, "idempotency_key": key}),
        );
        assert!(matches!(parsed, Ok(Command::Buy(_))), "{quantity} {key:?}");
    }
}

#[test]
fn the_role_is_checked_before_the_fields() {
    // Every command but those anyone may send needs a right.
    let anyone = [
        "ping",
        "chat.send",
        "like",
        "deal.buy",
        "coupon.claim",
        "auction.bid",
        "giveaway.enter",
        "group_buy.join",
    ];
    for kind in COMMAND_TYPES.iter().filter(|kind| !anyone.contains(kind)) {
        let refused = parse_as(VIEWER, kind, json!({})).err().map(|e| e.code());
        assert_eq!(refused, Some("forbidden"), "{kind}");
    }
}

#[test]
fn moderators_moderate_but_only_hosts_host_and_appoint() {
    assert!(parse_as(MODERATOR, "mod.ban", json!({"user": "v"})).is_ok());
    assert!(parse_as(MODERATOR, "mod.slow_mode", json!({"seconds": 5})).is_ok());
    for kind in ["mod.grant", "mod.revoke", "host.pin", "host.announce"] {
        let refused = parse_as(MODERATOR, kind, json!({"user": "v", "text": "t", "item": {}}));
        assert_eq!(refused.err().map(|e| e.code()), Some("forbidden"), "{kind}");
    }
}

#[test]
fn anyone_may_chat_like_ping_buy_and_claim() {
    let deal = Uuid::new_v4();
    for (kind, data) in [
        ("ping", json!({})),
        ("chat.send", json!({"text": "hi"})),
        ("like", json!({})),
        ("deal.buy", json!({"deal_id": deal, "idempotency_key": "k"})),
        ("coupon.claim", json!({"coupon_drop_id": deal})),
    ] {
        assert!(parse_as(VIEWER, kind, data).is_ok(), "{kind}");
    }
}

#[test]
fn frames_that_are_not_commands_are_bad_json() {
    for text in [
        "{not json",
        r#"{"data": {}}"#,
        r#"{"type": 5}"#,
        r#"{"id": 7, "type": "ping"}"#,
        r#"["ping"]"#,
    ] {
        let code = read_frame(text, 4096).err().map(|e| e.code());
        assert_eq!(code, Some("bad_json"), "{text}");
    }
}

#[test]
fn a_frame_over_the_limit_is_frame_too_large() {
    let big = json!({"type": "chat.send", "data": {"text": "x".repeat(5000)}}).to_string();
    assert_eq!(
        read_frame(&big, 4096).err().map(|e| e.code()),
        Some("frame_too_large")
    );
}

#[test]
fn a_frame_reads_its_id_type_and_data() {
    let frame = read_frame(
        r#"{"id": "r1", "type": "chat.send", "data": {"text": "hi"}}"#,
        4096,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        (
            frame.id.as_deref(),
            &*frame.kind,
            frame.data.fields().string("text").ok()
        ),
        (Some("r1"), "chat.send", Some("hi"))
    );
    let bare = read_frame(r#"{"type": "ping"}"#, 4096).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(bare.id, None);
    assert!(bare.data.fields().get("text").unwrap().is_none());
    let null = read_frame(r#"{"type": "ping", "data": null}"#, 4096).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(null.data.fields().get("text").unwrap().is_none());
    let number = read_frame(r#"{"type": "ping", "data": 5}"#, 4096).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        number.data.fields().get("text").err().map(|e| e.code()),
        Some("bad_command")
    );
}

#[test]
fn acks_carry_the_documented_data() {
    assert_eq!(Ack::Likes(3).into_data(), json!({"counted": 3}));
    assert_eq!(Ack::Offset(4).into_data(), json!({"offset": 4}));
    assert_eq!(Ack::Pong(9).into_data(), json!({"pong": 9}));
    let bought = Ack::Bought(BuyReply {
        order: json!({"order_id": "o"}),
        replayed: true,
    });
    assert_eq!(
        bought.into_data(),
        json!({"order": {"order_id": "o"}, "replayed": true})
    );
    let claimed = Ack::Claimed(ClaimReply {
        claim: json!({"seq": 1}),
    });
    assert_eq!(claimed.into_data(), json!({"claim": {"seq": 1}}));
}

#[test]
fn auction_bid_needs_an_amount_or_a_maximum_and_takes_integers_only() {
    let id = Uuid::new_v4();
    let code = |data: Value| parse_as(VIEWER, "auction.bid", data).err().map(|e| e.code());
    assert_eq!(code(json!({"auction_id": id})), Some("bad_command"));
    assert_eq!(
        code(json!({"auction_id": id, "amount_minor": null, "max_minor": null})),
        Some("bad_command")
    );
    assert_eq!(
        code(json!({"auction_id": id, "amount_minor": "5"})),
        Some("bad_command")
    );
    assert_eq!(
        code(json!({"auction_id": id, "amount_minor": 1e30})),
        Some("bad_command")
    );
    assert_eq!(
        code(json!({"auction_id": "x", "amount_minor": 5})),
        Some("bad_command")
    );
    let Ok(Command::Bid(bid)) = parse_as(
        VIEWER,
        "auction.bid",
        json!({"auction_id": id, "max_minor": 2500}),
    ) else {
        panic!("a maximum bid parses");
    };
    assert_eq!((bid.amount_minor, bid.max_minor), (None, Some(2500)));
}

#[test]
fn the_hosts_side_may_not_bid_or_enter() {
    let id = Uuid::new_v4();
    for (kind, data) in [
        ("auction.bid", json!({"auction_id": id, "amount_minor": 100})),
        ("giveaway.enter", json!({"giveaway_id": id})),
        (
            "group_buy.join",
            json!({"group_buy_id": id, "idempotency_key": "k"}),
        ),
    ] {
        assert_eq!(
            parse_as(HOST, kind, data.clone()).err().map(|e| e.code()),
            Some("forbidden"),
            "{kind}"
        );
        assert!(parse_as(VIEWER, kind, data.clone()).is_ok(), "{kind}");
        assert!(parse_as(MODERATOR, kind, data).is_ok(), "{kind}");
    }
}

/// A number per variant. Adding a [`Command`] variant stops this compiling
/// until it gets the next number here and [`VARIANTS`] counts it; the test
/// below then fails until its `type` is in [`COMMAND_TYPES`].
fn variant_number(command: &Command) -> usize {
    match command {
        Command::Ping => 0,
        Command::Chat(_) => 1,
        Command::Like(_) => 2,
        Command::Announce(_) => 3,
        Command::HostMessage(_) => 4,
        Command::Pin(_) => 5,
        Command::Unpin => 6,
        Command::Mute(_) => 7,
        Command::Ban(_) => 8,
        Command::Unmute(_) => 9,
        Command::Unban(_) => 10,
        Command::SlowMode(_) => 11,
        Command::BlockedWords(_) => 12,
        Command::Grant(_) => 13,
        Command::Revoke(_) => 14,
        Command::Buy(_) => 15,
        Command::Claim(_) => 16,
        Command::Bid(_) => 17,
        Command::Enter(_) => 18,
        Command::GroupJoin(_) => 19,
    }
}

const VARIANTS: usize = 20;

#[test]
fn every_command_variant_is_in_command_types() {
    let id = Uuid::new_v4();
    // Data that every command accepts (each takes the fields it knows).
    let data = json!({"text": "t", "item": {}, "user": "v", "seconds": 5, "words": [],
                      "deal_id": id, "idempotency_key": "k", "coupon_drop_id": id,
                      "auction_id": id, "amount_minor": 100, "giveaway_id": id,
                      "group_buy_id": id});
    let mut seen = [false; VARIANTS];
    for kind in COMMAND_TYPES {
        // As the host, or as a viewer for what only viewers may send.
        let command = parse(kind, data.clone())
            .or_else(|_| parse_as(VIEWER, kind, data.clone()))
            .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        assert_eq!(command.name(), *kind, "`{kind}` parses as another command");
        assert!(!seen[variant_number(&command)], "`{kind}` is listed twice");
        seen[variant_number(&command)] = true;
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&n| !seen[n]).collect();
    assert!(
        missing.is_empty(),
        "variants numbered {missing:?} have no `type` in COMMAND_TYPES"
    );
    // And the parser knows no `type` that is not listed.
    assert_eq!(
        parse_as(HOST, "mod.unknown", json!({})).err().map(|e| e.code()),
        Some("unknown_command")
    );
}

/// Three commands in flight: the second ends (or passes) before the first
/// has queued its publication; the third still waits for the first.
#[tokio::test]
async fn a_command_that_ends_early_does_not_let_the_next_overtake_the_one_before() {
    use std::sync::{Arc, Mutex};
    let mut last = None;
    let mut first = Turn::after(&mut last);
    let second = Turn::after(&mut last);
    let mut third = Turn::after(&mut last);
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let waiting = tokio::spawn(async move {
        third.wait().await;
        seen.lock().unwrap().push("third");
    });
    drop(second);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        order.lock().unwrap().is_empty(),
        "the third went before the first"
    );
    first.wait().await;
    order.lock().unwrap().push("first");
    drop(first);
    waiting.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "third"]);
}
