//! The deals of a run (`--deals N`): each in a session of its own — the
//! first in `--session`, deal k > 0 in a session derived from it and k — and
//! which connection sells which deal.

use uuid::{Builder, Uuid};

/// The most deals one run sells at once.
pub const MAX_DEALS: usize = 200;

/// One deal a phase sells, and the session (room) it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub session: Uuid,
    pub deal: Uuid,
}

/// The deal (an index into the run's deals) that connection `slot` sells:
/// connections take the deals in turn, so with C ≥ N connections every deal
/// has ⌊C/N⌋ or ⌈C/N⌉ of them, and with one deal every connection sells it.
pub fn deal_of_connection(slot: usize, deals: usize) -> usize {
    slot % deals.max(1)
}

/// The session of deal `k`: `base` itself for the first; for the others a
/// version-4-shaped id hashed from `base` and `k`, the same in every run
/// (so a run re-uses the sessions of the runs before it rather than piling
/// up new ones) and distinct from `base` and from one another.
pub fn session_of_deal(base: Uuid, k: usize) -> Uuid {
    if k == 0 {
        return base;
    }
    let (hi, lo) = base.as_u64_pair();
    let k = k as u64;
    let a = mix(hi ^ mix(k));
    let b = mix(lo ^ mix(a ^ k));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    Builder::from_random_bytes(bytes).into_uuid()
}

/// The sessions of deals 0..n.
pub fn sessions(base: Uuid, n: usize) -> Vec<Uuid> {
    (0..n).map(|k| session_of_deal(base, k)).collect()
}

/// SplitMix64's finaliser: a fixed, well-spread 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn base() -> Uuid {
        Uuid::parse_str("00000000-0000-4000-8000-00000005d001").unwrap()
    }

    #[test]
    fn connections_take_the_deals_in_turn() {
        assert!((0..100).all(|c| deal_of_connection(c, 1) == 0));
        let of: Vec<usize> = (0..7).map(|c| deal_of_connection(c, 3)).collect();
        assert_eq!(of, [0, 1, 2, 0, 1, 2, 0]);
        // 50 connections over 50 deals: one each; 64 over 50: one or two each.
        let mut count = vec![0; 50];
        for c in 0..64 {
            count[deal_of_connection(c, 50)] += 1;
        }
        assert!(count.iter().all(|&n| n == 1 || n == 2), "{count:?}");
        assert_eq!(count.iter().sum::<usize>(), 64);
        // Never out of range, even for a nonsensical deal count of 0.
        assert_eq!(deal_of_connection(5, 0), 0);
    }

    #[test]
    fn the_first_deal_keeps_the_given_session() {
        assert_eq!(session_of_deal(base(), 0), base());
        assert_eq!(sessions(base(), 1), vec![base()]);
    }

    #[test]
    fn derived_sessions_are_distinct_and_stable() {
        let all = sessions(base(), MAX_DEALS);
        assert_eq!(all.len(), MAX_DEALS);
        let distinct: HashSet<Uuid> = all.iter().copied().collect();
        assert_eq!(distinct.len(), MAX_DEALS);
        let seeded = Uuid::parse_str(super::super::setup::SEEDED_SESSION).unwrap();
        assert!(!distinct.contains(&seeded));
        // The same in every run (and on every machine): a fixed function of base and k.
        assert_eq!(sessions(base(), MAX_DEALS), all);
        assert_eq!(
            session_of_deal(base(), 1).to_string(),
            "78519cc5-2248-458c-8e48-d5f832ae396c"
        );
        // Shaped like the other ids: version 4, RFC 4122 variant.
        for s in &all[1..] {
            assert_eq!(s.get_version_num(), 4);
            assert_eq!(s.get_variant(), uuid::Variant::RFC4122);
        }
        // Another base derives other sessions.
        let other = Uuid::parse_str("00000000-0000-4000-8000-00000005d002").unwrap();
        assert_ne!(session_of_deal(other, 1), session_of_deal(base(), 1));
    }
}
