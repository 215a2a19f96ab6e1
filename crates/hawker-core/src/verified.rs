//! Tokens this process has verified lately, so that a client sending the
//! same bearer token on every request (a buyer pressing "buy", a keep-alive
//! connection) pays for its signature, base64 and JSON once, not per
//! request.
//!
//! Only tokens that passed verification are kept, with their claims. A hit
//! needs the whole token string to be equal (the token is the credential),
//! and the claims' `exp` still in the future: an expiring token goes back to
//! full verification, which refuses it exactly as it would have. Refused
//! tokens are never kept, so a forged token costs a full verification every
//! time, as before. The keys cannot change while the process runs, so a kept
//! verdict cannot go stale otherwise.
//!
//! Bounded: [`SHARDS`] maps of at most [`PER_SHARD`] tokens each; a full
//! shard forgets an eighth of its tokens, whichever come first in it, before
//! the next insert (a miss costs one verification, never a wrong answer).

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::quality::RandomState;

/// Independent maps, so that two worker threads rarely wait on one lock.
const SHARDS: usize = 16;
/// Tokens per shard: with [`SHARDS`], 131,072 tokens (a stampede's buyers),
/// about 50 MB when full of 200-byte tokens.
pub(crate) const PER_SHARD: usize = 8192;

/// One shard: token → (claims, expiry in seconds since the Unix epoch).
/// Hashed with foldhash, randomly seeded per map: SipHash over a 200-byte
/// token was 2.5 % of a new buyer's purchase (only verified tokens are ever
/// inserted, so nobody can fill a shard with keys of their choosing).
type Shard<C> = Mutex<HashMap<Box<str>, (C, i64), RandomState>>;

/// Verified tokens and their claims (`C`), with their expiry.
pub(crate) struct Verified<C> {
    shards: [Shard<C>; SHARDS],
}

impl<C> Default for Verified<C> {
    fn default() -> Self {
        Verified {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::with_hasher(RandomState::default()))),
        }
    }
}

/// A copy of the keys starts with nothing verified: it may be given other
/// rules (`TokenKeys::with_issuer_and_audience`).
impl<C> Clone for Verified<C> {
    fn clone(&self) -> Self {
        Verified::default()
    }
}

impl<C: Clone> Verified<C> {
    /// The claims of `token` if it was verified before and has not expired
    /// as of `now` (seconds since the Unix epoch).
    pub(crate) fn get(&self, token: &str, now: i64) -> Option<C> {
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        let (claims, exp) = shard.get(token)?;
        if *exp > now {
            return Some(claims.clone());
        }
        shard.remove(token);
        None
    }

    /// Remembers that `token` verified to `claims`, valid before `exp`
    /// (seconds since the Unix epoch).
    pub(crate) fn insert(&self, token: &str, claims: &C, exp: i64) {
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PER_SHARD {
            let mut seen = 0;
            shard.retain(|_, _| {
                seen += 1;
                seen > PER_SHARD / 8
            });
        }
        shard.insert(token.into(), (claims.clone(), exp));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// The shard of `token`, from its last bytes (the signature's, which
    /// differ between tokens). A client choosing its shard gains nothing:
    /// the map inside hashes with a random key.
    fn shard(&self, token: &str) -> &Shard<C> {
        let bytes = token.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(4)..];
        let mixed = tail
            .iter()
            .fold(0usize, |acc, b| acc.wrapping_mul(31).wrapping_add(*b as usize));
        &self.shards[mixed % SHARDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_token_is_found_until_its_expiry_and_not_after() {
        let verified = Verified::default();
        verified.insert("a.b.c", &"viewer-1", 100);
        assert_eq!(verified.get("a.b.c", 99), Some("viewer-1"));
        assert!(verified.get("a.b.c", 100).is_none(), "expired at its exp");
        assert!(verified.get("a.b.c", 99).is_none(), "dropped once expired");
    }

    #[test]
    fn only_the_same_token_string_hits() {
        let verified = Verified::default();
        verified.insert("a.b.c", &"viewer-1", i64::MAX);
        assert!(verified.get("a.b.d", 0).is_none());
        assert!(verified.get("a.b.", 0).is_none());
        assert!(verified.get("", 0).is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let verified = Verified::default();
        for i in 0..(SHARDS * PER_SHARD * 3) {
            verified.insert(&format!("token-{i}"), &i, i64::MAX);
        }
        assert!(verified.len() <= SHARDS * PER_SHARD, "{}", verified.len());
    }
}
