//! Redis Cluster hash slots, and the rule that a script's keys share one.
//!
//! A key's slot is CRC16 (XMODEM) of the key modulo 16384, or of its hash
//! tag when it has one: the part between the first `{` and the next `}`,
//! if that part is not empty. hawker names every key that a script touches
//! together with the same tag (`<prefix>:room:{<id>}:…`,
//! `<prefix>:deal:{<id>}:…`), so a room's or a deal's keys live on one
//! shard and its scripts stay atomic there.

use redis::{Arg, Cmd, ErrorKind, RedisError, ServerErrorKind};

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses it.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where `key`'s hash tag is, if it has a non-empty one: the bytes between
/// the first `{` and the next `}`.
fn tag_range(key: &[u8]) -> Option<std::ops::Range<usize>> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then_some(open + 1..open + 1 + len)
}

/// The part of `key` that decides its slot: the hash tag if it has a
/// non-empty one, otherwise the whole key.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    match tag_range(key) {
        Some(tag) => &key[tag],
        None => key,
    }
}

/// The cluster slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// Commands that take no key in their first argument (or none at all).
/// `PUBLISH` is among them: on a cluster a plain publish reaches every
/// shard, whichever node receives it.
const KEYLESS: &[&str] = &[
    "PING",
    "ECHO",
    "INFO",
    "TIME",
    "SCRIPT",
    "CLUSTER",
    "PUBLISH",
    "CLIENT",
    "CONFIG",
    "DBSIZE",
    "FLUSHALL",
    "FLUSHDB",
    "HELLO",
    "SELECT",
    "READONLY",
    "READWRITE",
    "WAIT",
    "MULTI",
    "EXEC",
    "DISCARD",
    "AUTH",
    "COMMAND",
    "FUNCTION",
    "KEYS",
    "SCAN",
    "RANDOMKEY",
    "LASTSAVE",
    "ROLE",
];

/// Commands whose keys follow a key count in the second argument.
const SCRIPTED: &[&str] = &["EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"];

fn simple_args(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    })
}

fn cross_slot(name: &str, first: &[u8], other: &[u8]) -> RedisError {
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::CrossSlot),
        "a script's keys must share one cluster slot",
        format!(
            "{name}: `{}` and `{}` hash to different slots",
            String::from_utf8_lossy(first),
            String::from_utf8_lossy(other)
        ),
    ))
}

fn is_script(name: &[u8]) -> bool {
    SCRIPTED.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(name))
}

fn is_keyless(name: &[u8]) -> bool {
    KEYLESS.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(name))
}

/// A script's keys, if `cmd` is a script call (`EVAL`, `EVALSHA`, `FCALL`).
fn script_keys(cmd: &Cmd) -> Option<impl Iterator<Item = &[u8]>> {
    let mut args = simple_args(cmd);
    if !is_script(args.next()?) {
        return None;
    }
    let _body_or_sha = args.next();
    let count = args
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    Some(args.take(count))
}

/// The slot of a script's keys: every key must hash to the same slot,
/// otherwise a `CROSSSLOT` error. `None` for a script without keys.
fn script_slot(
    cmd: &Cmd,
    mut keys: impl Iterator<Item = impl AsRef<[u8]>>,
) -> Result<Option<u16>, RedisError> {
    let Some(first) = keys.next() else { return Ok(None) };
    let first = first.as_ref();
    let tag = hashed_part(first);
    let slot = crc16(tag) % SLOTS;
    // `first` up to the end of its tag: a key that starts with these bytes
    // has its first `{` and the next `}` at the same places, so the same
    // tag. One comparison per key on the usual path (a room's keys), instead
    // of two scans and a hash (~3,000 instructions per call, callgrind).
    let through_tag = tag_range(first).map(|tag| tag.end + 1);
    for key in keys {
        let key = key.as_ref();
        if through_tag.is_some_and(|end| key.get(..end) == first.get(..end)) {
            continue;
        }
        let other = hashed_part(key);
        // The same tag is the same slot: no hashing on the usual path.
        if other != tag && crc16(other) % SLOTS != slot {
            let name = simple_args(cmd).next().unwrap_or_default();
            return Err(cross_slot(&String::from_utf8_lossy(name), first, key));
        }
    }
    Ok(Some(slot))
}

/// Refuses a script whose keys hash to two slots (`CROSSSLOT`), whichever
/// shape Redis has: a single server would run it, a cluster would refuse
/// it; hawker refuses it on both, so the test suites catch it against one
/// server too. Other commands pass unread.
pub fn check_script(cmd: &Cmd) -> Result<(), RedisError> {
    match script_keys(cmd) {
        Some(keys) => script_slot(cmd, keys).map(|_| ()),
        None => Ok(()),
    }
}

/// The slot `cmd` must be sent to on a cluster, if it has one; a script
/// whose keys span two slots is an error (see [`check_script`]).
pub fn command_slot(cmd: &Cmd) -> Result<Option<u16>, RedisError> {
    if let Some(keys) = script_keys(cmd) {
        return script_slot(cmd, keys);
    }
    let mut args = simple_args(cmd);
    let Some(name) = args.next() else { return Ok(None) };
    if is_keyless(name) {
        return Ok(None);
    }
    Ok(args.next().map(key_slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_ones_redis_cluster_computes() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn a_script_whose_keys_share_a_tag_goes_to_that_tags_slot() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("abc")
            .arg(2)
            .arg("p:deal:{d1}:stock")
            .arg("p:deal:{d1}:buyers")
            .arg("argv");
        assert_eq!(command_slot(&cmd).ok().flatten(), Some(key_slot(b"d1")));
        // The same tag reached another way (a longer key, a tag at another
        // place) is the same slot; so are untagged keys that are equal.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg("return 1")
            .arg(4)
            .arg("p:room:{r}:meta")
            .arg("p:room:{r}")
            .arg("other:{r}:x")
            .arg("r");
        assert_eq!(command_slot(&cmd).ok().flatten(), Some(key_slot(b"r")));
        let mut cmd = redis::cmd("EVAL");
        cmd.arg("return 1").arg(2).arg("plain").arg("plain");
        assert_eq!(command_slot(&cmd).ok().flatten(), Some(key_slot(b"plain")));
    }

    #[test]
    fn a_script_called_with_keys_from_two_slots_is_refused() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("abc")
            .arg(2)
            .arg("p:deal:{d1}:stock")
            .arg("p:deal:{d2}:stock");
        let err = command_slot(&cmd).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot)),
            "{err:?}"
        );
        // Arguments after the keys do not count.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg("return 1")
            .arg(1)
            .arg("p:room:{r}:meta")
            .arg("p:room:{other}:meta");
        assert!(command_slot(&cmd).is_ok());
    }

    #[test]
    fn keyless_commands_have_no_slot_and_others_route_by_their_first_key() {
        assert_eq!(command_slot(&redis::cmd("PING")).ok().flatten(), None);
        let mut publish = redis::cmd("PUBLISH");
        publish.arg("p:notices").arg("x");
        assert_eq!(command_slot(&publish).ok().flatten(), None);
        let mut spublish = redis::cmd("SPUBLISH");
        spublish.arg("p:room:{r1}").arg("x");
        assert_eq!(command_slot(&spublish).ok().flatten(), Some(key_slot(b"r1")));
        let mut get = redis::cmd("GET");
        get.arg("plain");
        assert_eq!(command_slot(&get).ok().flatten(), Some(key_slot(b"plain")));
    }
}
