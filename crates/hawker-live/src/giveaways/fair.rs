//! The draw, as a pure function of the committed seed and the frozen entry
//! list (and, for "must be present", the set of entries found absent). Both
//! the server and `hawker verify-draw` call [`draw`]; docs/protocol.md
//! ("Giveaway draws") states the same algorithm for reimplementation:
//!
//! 1. `seed_hash = sha256(seed)` (the 32 seed bytes), lower-case hex.
//! 2. The entry list is the entry ids (32 lower-case hex digits each) sorted
//!    ascending; `list_hash = sha256(id_0 "\n" id_1 "\n" … id_{n-1} "\n")`
//!    (each id followed by one line feed; the empty list hashes "").
//! 3. For `i = 0, 1, 2, …`: `h = sha256(seed ‖ list_hash ‖ u32be(i))` (32 +
//!    32 + 4 bytes; `list_hash` as its 32 raw bytes); `x` = the first 8
//!    bytes of `h` as a big-endian u64. If `x ≥ 2^64 − (2^64 mod n)`, the
//!    counter is skipped (rejection sampling, so every index is equally
//!    likely); otherwise the candidate is the entry at index `x mod n`.
//! 4. A candidate already taken (a winner or skipped as absent) is passed
//!    over. A candidate in the absent set is recorded as absent; any other
//!    becomes the next winner.
//! 5. Stop when `winners` winners are found or every entry has been taken.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// Names the algorithm in stored draws, so a later change would be visible.
pub const ALGORITHM: &str = "hawker-draw-v1: sha256(seed||list_hash||u32be(i)), u64be rejection sampling";

/// What happened to one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Winner,
    Absent,
}

/// One candidate of the sequence: the counter `i` that produced it, its
/// index in the sorted list and what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub i: u32,
    pub index: usize,
    pub outcome: Outcome,
}

/// A draw's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    /// Indexes into the sorted list, in the order they won.
    pub winners: Vec<usize>,
    /// Every candidate, winners and absentees, in order.
    pub trace: Vec<Candidate>,
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The commitment shown when a giveaway starts: hex sha256 of the seed.
pub fn seed_hash(seed: &[u8; 32]) -> String {
    hex::encode(sha256(seed))
}

/// The frozen list's hash over ids sorted ascending (see the module docs).
pub fn list_hash<S: AsRef<str>>(sorted_ids: &[S]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for id in sorted_ids {
        hasher.update(id.as_ref().as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().into()
}

/// A new random seed.
pub fn new_seed() -> [u8; 32] {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    // v4 UUIDs have 122 random bits each (from the OS generator); hashing
    // the two gives 32 uniformly mixed bytes.
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(a.as_bytes());
    bytes[16..].copy_from_slice(b.as_bytes());
    sha256(&bytes)
}

/// Names the entry-id derivation (docs/protocol.md, "Giveaway draws").
pub const ENTRY_ID_DOMAIN: &[u8] = b"hawker-entry-v1";

/// An entrant's pseudonymous entry id: the first 16 bytes of
/// `sha256("hawker-entry-v1" ‖ seed ‖ giveaway_id ‖ user)` as 32 lower-case
/// hex digits (the 32 seed bytes, the giveaway id's 16 bytes, the user's
/// subject in UTF-8).
///
/// Derived, not drawn at random: the server knows the seed while entries
/// come in, so an id it could choose freely would let it grind the list's
/// hash until a favoured entrant wins. Fixed by the committed seed, every id
/// is checkable by its entrant once the seed is revealed. Before that, the
/// id says nothing about who entered (the seed is secret).
pub fn entry_id(seed: &[u8; 32], giveaway_id: uuid::Uuid, user: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ENTRY_ID_DOMAIN);
    hasher.update(seed);
    hasher.update(giveaway_id.as_bytes());
    hasher.update(user.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    hex::encode(&digest[..16])
}

/// True for a well-formed entry id.
pub fn is_entry_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The draw over `n` sorted entries: see the module docs. `absent` holds
/// indexes found absent (must be present to win); pass an empty set
/// otherwise.
pub fn draw(
    seed: &[u8; 32],
    list_hash: &[u8; 32],
    n: usize,
    winners: usize,
    absent: &HashSet<usize>,
) -> Draw {
    let mut out = Draw {
        winners: Vec::new(),
        trace: Vec::new(),
    };
    if n == 0 || winners == 0 {
        return out;
    }
    let n64 = n as u64;
    // 2^64 mod n, computed without overflow.
    let zone = u64::MAX - (u64::MAX % n64 + 1) % n64;
    let mut taken: HashSet<usize> = HashSet::new();
    let mut input = [0u8; 68];
    input[..32].copy_from_slice(seed);
    input[32..64].copy_from_slice(list_hash);
    let mut i: u32 = 0;
    while out.winners.len() < winners && taken.len() < n {
        input[64..].copy_from_slice(&i.to_be_bytes());
        let h = sha256(&input);
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        let x = u64::from_be_bytes(first);
        let counter = i;
        i = match i.checked_add(1) {
            Some(next) => next,
            None => break,
        };
        // Accept x in [0, zone]: zone + 1 is the largest multiple of n ≤ 2^64.
        if x > zone {
            continue;
        }
        let index = (x % n64) as usize;
        if !taken.insert(index) {
            continue;
        }
        let outcome = if absent.contains(&index) {
            Outcome::Absent
        } else {
            out.winners.push(index);
            Outcome::Winner
        };
        out.trace.push(Candidate {
            i: counter,
            index,
            outcome,
        });
    }
    out
}

/// The entry ids of a published list: the JSON body of the entries route
/// (its `entries`), a JSON array, or one id per line. Sorted, as the draw
/// reads them.
pub fn parse_entries(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim_start();
    let mut ids: Vec<String> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| format!("bad JSON: {e}"))?;
        let list = value.get("entries").unwrap_or(&value);
        list.as_array()
            .ok_or("no `entries` array")?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or("an entry is not a string"))
            .collect::<Result<_, _>>()?
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(bad) = ids.iter().find(|id| !is_entry_id(id)) {
        return Err(format!("`{bad}` is not an entry id (32 lower-case hex digits)"));
    }
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err("an entry id appears twice".into());
    }
    Ok(ids)
}

/// `hawker verify-draw`: recomputes a draw and reports it as text. With
/// `me` (the giveaway and an entrant's subject), it also derives that
/// entrant's entry id and says whether the list holds it.
pub fn verify(
    seed_hex: &str,
    entries: &str,
    winners: usize,
    absent: &[String],
    me: Option<(uuid::Uuid, &str)>,
) -> Result<String, String> {
    use std::fmt::Write;
    let bytes = hex::decode(seed_hex.trim()).map_err(|_| "the seed must be 64 hex digits")?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the seed must be 32 bytes (64 hex digits)")?;
    let ids = parse_entries(entries)?;
    let mut absent_set = HashSet::new();
    for id in absent.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let index = ids
            .binary_search_by(|probe| probe.as_str().cmp(id))
            .map_err(|_| format!("absent entry `{id}` is not in the list"))?;
        absent_set.insert(index);
    }
    let lh = list_hash(&ids);
    let result = draw(&seed, &lh, ids.len(), winners, &absent_set);
    let mut out = String::new();
    let _ = writeln!(out, "algorithm     {ALGORITHM}");
    let _ = writeln!(out, "seed_hash     {}", seed_hash(&seed));
    let _ = writeln!(out, "entries_hash  {}", hex::encode(lh));
    let _ = writeln!(out, "entry_count   {}", ids.len());
    for c in &result.trace {
        let what = match c.outcome {
            Outcome::Winner => "winner",
            Outcome::Absent => "absent",
        };
        let _ = writeln!(out, "candidate i={:<6} {} {what}", c.i, ids[c.index]);
    }
    for (rank, &index) in result.winners.iter().enumerate() {
        let _ = writeln!(out, "winner {} {}", rank + 1, ids[index]);
    }
    if let Some((giveaway_id, user)) = me {
        let mine = entry_id(&seed, giveaway_id, user);
        let state = match ids.binary_search(&mine) {
            Ok(index) if result.winners.contains(&index) => "in the list, a winner",
            Ok(_) => "in the list",
            Err(_) => "NOT in the list",
        };
        let _ = writeln!(out, "your entry    {mine} ({state})");
    }
    if result
        .trace
        .iter()
        .filter(|c| c.outcome == Outcome::Absent)
        .count()
        != absent_set.len()
    {
        let _ = writeln!(out, "note: some absent entries were never drawn as candidates");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n)
            .map(|k| format!("{:032x}", (k as u128) * 7919 + 1))
            .collect();
        v.sort();
        v
    }

    fn seed() -> [u8; 32] {
        let mut s = [0u8; 32];
        for (k, b) in s.iter_mut().enumerate() {
            *b = k as u8;
        }
        s
    }

    /// Fixed vectors: the seed 00 01 02 … 1f and ten entry ids. Changing
    /// the algorithm breaks this test (and every published draw).
    #[test]
    fn fixed_vectors() {
        let seed = seed();
        assert_eq!(
            seed_hash(&seed),
            "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
        );
        let list = ids(10);
        assert_eq!(list[0], "00000000000000000000000000000001");
        let lh = list_hash(&list);
        assert_eq!(hex::encode(list_hash::<&str>(&[])), hex::encode(sha256(b"")));
        let d = draw(&seed, &lh, list.len(), 3, &HashSet::new());
        assert_eq!(d.winners.len(), 3);
        let expected = vectors::EXPECTED;
        assert_eq!(hex::encode(lh), expected.0);
        assert_eq!(d.winners, expected.1.to_vec());
        // The first winner absent: skipped, and the rest of the sequence is the same.
        let absent: HashSet<usize> = [d.winners[0]].into_iter().collect();
        let redraw = draw(&seed, &lh, list.len(), 3, &absent);
        assert_eq!(redraw.trace[0].outcome, Outcome::Absent);
        assert_eq!(&redraw.winners[..2], &d.winners[1..]);
        assert_eq!(redraw.winners, expected.2.to_vec());
    }

    mod vectors {
        /// (list hash, winners, winners with the first absent).
        pub const EXPECTED: (&str, [usize; 3], [usize; 3]) = (
            "2d0920c1ddee73a97a6e4346bb85390f9e1948be38bfef28f3cba765d1794ebd",
            [7, 6, 8],
            [6, 8, 5],
        );
    }

    #[test]
    fn every_entry_can_be_taken_and_none_twice() {
        let seed = seed();
        let list = ids(50);
        let lh = list_hash(&list);
        let all = draw(&seed, &lh, 50, 50, &HashSet::new());
        let mut w = all.winners.clone();
        w.sort();
        w.dedup();
        assert_eq!(w.len(), 50);
        // Everyone absent: no winners, every entry tried once.
        let absent: HashSet<usize> = (0..50).collect();
        let none = draw(&seed, &lh, 50, 3, &absent);
        assert!(none.winners.is_empty());
        assert_eq!(none.trace.len(), 50);
        assert!(draw(&seed, &lh, 0, 3, &HashSet::new()).winners.is_empty());
        assert_eq!(draw(&seed, &lh, 1, 3, &HashSet::new()).winners, vec![0]);
    }

    #[test]
    fn verify_reads_the_published_list_and_prints_the_winners() {
        let list = ids(10);
        let body = serde_json::json!({ "entries": list.clone() }).to_string();
        let seed = hex::encode(seed());
        let report = verify(&seed, &body, 3, &[], None).unwrap();
        assert!(report.contains(&format!("winner 1 {}", list[7])), "{report}");
        assert!(report.contains(&format!("winner 3 {}", list[8])), "{report}");
        let lines = list.join("\n");
        let report = verify(&seed, &lines, 3, &[list[7].clone()], None).unwrap();
        assert!(report.contains(&format!("{} absent", list[7])), "{report}");
        assert!(report.contains(&format!("winner 3 {}", list[5])), "{report}");
        assert!(verify(&seed, "nothex", 3, &[], None).is_err());
        assert!(verify("00", &lines, 3, &[], None).is_err());
    }

    /// Fixed vector for the entry id (docs/protocol.md states it; computed
    /// apart with Python's hashlib).
    #[test]
    fn entry_ids_derive_from_the_seed_the_giveaway_and_the_user() {
        let giveaway = uuid::Uuid::parse_str("01a1fb61-0d2e-7c41-9a55-1c3f0e9d7a10").unwrap();
        assert_eq!(
            entry_id(&seed(), giveaway, "viewer-1"),
            "dc7fa91ccb0cb95e06c10b182e41b7f2"
        );
        assert_ne!(
            entry_id(&seed(), giveaway, "viewer-2"),
            entry_id(&seed(), giveaway, "viewer-1")
        );
        assert_ne!(
            entry_id(&[0; 32], giveaway, "viewer-1"),
            entry_id(&seed(), giveaway, "viewer-1")
        );
        // The entrant finds their own entry in the verifier's report.
        let mine = entry_id(&seed(), giveaway, "viewer-1");
        let mut list = ids(10);
        list.push(mine.clone());
        list.sort();
        let report = verify(
            &hex::encode(seed()),
            &list.join("\n"),
            3,
            &[],
            Some((giveaway, "viewer-1")),
        )
        .unwrap();
        assert!(
            report.contains(&format!("your entry    {mine} (in the list")),
            "{report}"
        );
        let report = verify(
            &hex::encode(seed()),
            &list.join("\n"),
            3,
            &[],
            Some((giveaway, "viewer-9")),
        )
        .unwrap();
        assert!(report.contains("NOT in the list"), "{report}");
    }

    #[test]
    fn entry_ids_are_well_formed() {
        let id = entry_id(&seed(), uuid::Uuid::nil(), "viewer-1");
        assert!(is_entry_id(&id), "{id}");
        assert!(!is_entry_id("ABC"));
        assert_ne!(new_seed(), new_seed());
    }
}
