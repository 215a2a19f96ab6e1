//! A node's own copy of a sold-out deal's gate, so that the stampede after a
//! sell-out is refused without a Redis call per attempt.
//!
//! A deal that sold out has ended for good (`meta.status = ended`,
//! `reason = sold_out`): units that come back go to its waitlist, never back
//! on sale. From then on the admission script answers `sold_out` to every
//! attempt except a repeated (buyer, key), which it replays, and a buyer with
//! an open waitlist offer, whom it may admit. So when the gate answers
//! `sold_out` for such a deal, the node reads once the fields of its `keys`
//! hash and the buyers of its `offers` hash, and from then on answers
//! `sold_out` itself to an attempt whose (buyer, key) is not among those
//! fields and whose buyer is not among those buyers: exactly what the script
//! would answer. Everything else still goes to Redis. The copy holds 64-bit
//! hashes (foldhash, seeded per node: SipHash was 4 % of a refusal's
//! instructions), so a collision can only send an attempt to Redis needlessly.
//!
//! The copy is trusted for `commerce.sold_out_mirror_ms` after a check that
//! found the gate still ended sold out and unchanged: its *stamp* (the
//! generation a rebuild writes, and `ver`, which every script that adds a
//! key or an offer increments). A task checks it every quarter of that
//! while attempts use it, and drops it when the stamp changed, the check
//! failed, or no attempt used it for [`IDLE`]. A new offer waits that long before anyone can hear
//! of it ([`super::gate::Gate::grant_offers`]), so no copy still trusted
//! when the buyer tries can have missed it.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::gate::{Admission, Gate, MirrorRead};

/// A copy no attempt used for this long is dropped (and its task ends).
const IDLE: Duration = Duration::from_secs(1);

/// Most fields of `keys` (and most offers) a node copies; a deal with more
/// is always asked in Redis.
pub(super) const MOST_FIELDS: usize = 100_000;

/// The node's copies of sold-out gates, by deal.
pub(super) struct Mirrors {
    /// How long a check is trusted; zero turns copies off.
    life: Duration,
    hasher: RandomState,
    deals: Mutex<HashMap<Uuid, Slot>>,
    /// Attempts this node answered from a copy.
    answered: AtomicU64,
}

enum Slot {
    /// A task is reading the gate.
    Loading,
    /// The gate was not an ended, sold-out one (or could not be read): not
    /// read again before this.
    NotBefore(Instant),
    Held(GateCopy),
}

/// One deal's copy.
struct GateCopy {
    /// Hashes of the `keys` hash's fields, as (buyer, idempotency key).
    keys: HashSet<u64>,
    /// Hashes of the buyers with a waitlist offer.
    offered: HashSet<u64>,
    /// When the last check that found the stamp unchanged was sent.
    checked_at: Instant,
    used_at: Instant,
}

fn answered_metric() -> &'static metrics::Counter {
    static COUNTER: OnceLock<metrics::Counter> = OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("hawker_gate_node_answers_total"))
}

impl Mirrors {
    pub(super) fn new(life: Duration) -> Self {
        Mirrors {
            life,
            hasher: RandomState::default(),
            deals: Mutex::default(),
            answered: AtomicU64::new(0),
        }
    }

    /// How long a check is trusted (zero: copies are off).
    pub(super) fn life(&self) -> Duration {
        self.life
    }

    fn deals(&self) -> MutexGuard<'_, HashMap<Uuid, Slot>> {
        // Nothing is left half-done under the lock, so a poisoned one is usable.
        self.deals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Attempts answered from a copy since the node started.
    pub(super) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// `sold_out` if this node's copy of the deal's gate says so for this
    /// buyer and idempotency key; `None`: ask Redis.
    pub(super) fn answer(&self, deal: Uuid, buyer: &str, idempotency_key: &str) -> Option<Admission> {
        if self.life.is_zero() {
            return None;
        }
        let now = Instant::now();
        let mut deals = self.deals();
        let Some(Slot::Held(copy)) = deals.get_mut(&deal) else {
            return None;
        };
        copy.used_at = now;
        if now.saturating_duration_since(copy.checked_at) >= self.life
            || copy
                .keys
                .contains(&self.hasher.hash_one((buyer, idempotency_key)))
            || copy.offered.contains(&self.hasher.hash_one(buyer))
        {
            return None;
        }
        drop(deals);
        self.answered.fetch_add(1, Ordering::Relaxed);
        answered_metric().increment(1);
        Some(Admission::SoldOut)
    }

    /// The gate answered `sold_out` for `deal`: copy it, unless a copy is
    /// held or being read, or the last read found nothing to copy lately.
    pub(super) fn saw_sold_out(&self, gate: &Gate, deal: Uuid) {
        if self.life.is_zero() {
            return;
        }
        let now = Instant::now();
        {
            let mut deals = self.deals();
            match deals.get(&deal) {
                Some(Slot::Loading | Slot::Held(_)) => return,
                Some(Slot::NotBefore(at)) if now < *at => return,
                _ => {}
            }
            deals.insert(deal, Slot::Loading);
        }
        tokio::spawn(keep(gate.clone(), deal));
    }

    /// Replaces the slot of `deal` with a pause before the next read.
    fn pause(&self, deal: Uuid) {
        self.deals()
            .insert(deal, Slot::NotBefore(Instant::now() + self.life));
    }
}

/// Reads the gate of `deal` into a copy, then checks it every quarter of
/// its life while it is used; drops it when it changed or is no longer used.
async fn keep(gate: Gate, deal: Uuid) {
    let mirrors = gate.mirrors();
    // Should the task end early (the runtime stopping), the slot must not
    // stay `Loading` or `Held` without anyone checking it.
    let mut guard = Forget {
        mirrors,
        deal,
        armed: true,
    };
    let sent = Instant::now();
    let read = match gate.mirror_read(deal).await {
        Ok(Some(read)) => read,
        Ok(None) | Err(_) => {
            mirrors.pause(deal);
            guard.armed = false;
            return;
        }
    };
    let MirrorRead { stamp, keys, offered } = read;
    let copy = GateCopy {
        keys: keys
            .iter()
            .map(|k| {
                mirrors
                    .hasher
                    .hash_one((k.buyer.as_str(), k.idempotency_key.as_str()))
            })
            .collect(),
        offered: offered
            .iter()
            .map(|b| mirrors.hasher.hash_one(b.as_str()))
            .collect(),
        checked_at: sent,
        used_at: sent,
    };
    mirrors.deals().insert(deal, Slot::Held(copy));
    let every = (mirrors.life / 4).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let idle = match mirrors.deals().get(&deal) {
            Some(Slot::Held(copy)) => sent.saturating_duration_since(copy.used_at) >= IDLE,
            _ => true,
        };
        if idle {
            break;
        }
        match gate.mirror_stamp(deal).await {
            Ok(Some(now)) if now == stamp => {
                if let Some(Slot::Held(copy)) = mirrors.deals().get_mut(&deal) {
                    copy.checked_at = copy.checked_at.max(sent);
                }
            }
            _ => break,
        }
    }
    // Changed, unreadable or unused: the next `sold_out` from the gate reads it again.
    mirrors.deals().remove(&deal);
    guard.armed = false;
}

/// Removes a deal's slot if [`keep`] ends without doing so.
struct Forget<'a> {
    mirrors: &'a Mirrors,
    deal: Uuid,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.mirrors.deals().remove(&self.deal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(mirrors: &Mirrors, deal: Uuid, keys: &[&str], offered: &[&str], checked_at: Instant) {
        let copy = GateCopy {
            keys: keys
                .iter()
                .map(|k| mirrors.hasher.hash_one(("ann", *k)))
                .collect(),
            offered: offered.iter().map(|b| mirrors.hasher.hash_one(*b)).collect(),
            checked_at,
            used_at: checked_at,
        };
        mirrors.deals().insert(deal, Slot::Held(copy));
    }

    #[test]
    fn a_copy_refuses_only_new_keys_of_buyers_without_an_offer() {
        let mirrors = Mirrors::new(Duration::from_secs(60));
        let deal = Uuid::new_v4();
        held(&mirrors, deal, &["k1"], &["bob"], Instant::now());
        assert_eq!(mirrors.answer(deal, "cat", "k1"), Some(Admission::SoldOut));
        assert_eq!(mirrors.answer(deal, "ann", "k2"), Some(Admission::SoldOut));
        assert_eq!(
            mirrors.answer(deal, "ann", "k1"),
            None,
            "a repeat is replayed by the gate"
        );
        assert_eq!(
            mirrors.answer(deal, "bob", "k9"),
            None,
            "an offered buyer may buy"
        );
        assert_eq!(mirrors.answer(Uuid::new_v4(), "cat", "k1"), None, "another deal");
        assert_eq!(mirrors.answered(), 2);
    }

    #[test]
    fn a_copy_not_checked_within_its_life_is_not_trusted() {
        let mirrors = Mirrors::new(Duration::from_millis(50));
        let deal = Uuid::new_v4();
        let long_ago = Instant::now().checked_sub(Duration::from_millis(60));
        let Some(long_ago) = long_ago else { return };
        held(&mirrors, deal, &[], &[], long_ago);
        assert_eq!(mirrors.answer(deal, "cat", "k1"), None);
        held(&mirrors, deal, &[], &[], Instant::now());
        assert_eq!(mirrors.answer(deal, "cat", "k1"), Some(Admission::SoldOut));
    }

    #[test]
    fn copies_are_off_with_a_zero_life() {
        let mirrors = Mirrors::new(Duration::ZERO);
        let deal = Uuid::new_v4();
        held(&mirrors, deal, &[], &[], Instant::now());
        assert_eq!(mirrors.answer(deal, "cat", "k1"), None);
    }
}
