//! Per-user rate limits of a room (chat messages, likes), held in Redis so
//! they span nodes and survive reconnects, with a copy on each node.
//!
//! The truth is one small hash per (room, kind, user) in Redis, changed by
//! one Lua function (`take_tokens` in [`crate::store`]): a token bucket
//! (refilled by Redis' own clock) and, for chat, the time of the last
//! admitted message (slow mode). A user with sockets on two nodes shares one
//! bucket. A like's take is a script call of its own
//! ([`crate::store::RoomStore::take_tokens`]); a chat message's is made by
//! the script that publishes it, in the same step, so a message costs one
//! call to Redis and a refused one publishes nothing.
//!
//! Each node keeps the last answer Redis gave it for a user (its *mirror*,
//! [`Buckets`]). Other nodes can only take tokens, never add them, so when
//! the mirror refilled to now is already short, Redis would refuse too: the
//! node refuses at once without a round trip (a flooding client costs
//! Redis nothing). When Redis cannot be reached, the mirror decides alone
//! (limits then hold per node, as a fallback; a chat message is not
//! published then anyway).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Chat,
    Like,
}

impl Kind {
    /// The part of the Redis key naming the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Like => "like",
        }
    }
}

/// A token bucket's shape: `burst` tokens at most, refilled at `per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub burst: f64,
    pub per_sec: f64,
}

impl Limit {
    /// How long an untouched bucket takes to fill up again.
    pub fn refill_time(self) -> Duration {
        Duration::from_secs_f64((self.burst / self.per_sec).clamp(0.0, 86_400.0))
    }
}

/// One take: how many tokens to take, whether fewer may be taken (likes:
/// as many as are left), and the slow-mode interval (chat; zero when off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Take {
    pub cost: u64,
    pub partial: bool,
    pub slow: Duration,
}

/// What a take did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many tokens were taken (for a partial take, maybe fewer than asked, never 0).
    Taken(u64),
    /// Slow mode: the last admitted message was too recent.
    SlowMode { wait_ms: u64 },
    /// The bucket is empty: refused, nothing taken.
    Empty { wait_ms: u64 },
}

/// A bucket as one node last knew it.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// When a take last succeeded (the slow-mode clock).
    last: Option<Instant>,
}

impl Bucket {
    fn tokens_at(&self, limit: Limit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * limit.per_sec).min(limit.burst)
    }

    /// What a take would do now, without doing it.
    fn decide(&self, limit: Limit, take: Take, now: Instant) -> Outcome {
        if !take.slow.is_zero() {
            if let Some(last) = self.last {
                let wait = take.slow.saturating_sub(now.saturating_duration_since(last));
                if !wait.is_zero() {
                    return Outcome::SlowMode {
                        wait_ms: wait.as_millis() as u64,
                    };
                }
            }
        }
        let tokens = self.tokens_at(limit, now);
        let cost = take.cost as f64;
        if tokens >= cost {
            Outcome::Taken(take.cost)
        } else if take.partial && tokens >= 1.0 {
            Outcome::Taken(tokens.floor() as u64)
        } else {
            let short = if take.partial { 1.0 - tokens } else { cost - tokens };
            Outcome::Empty {
                wait_ms: (short / limit.per_sec * 1000.0).ceil() as u64,
            }
        }
    }
}

/// This node's mirrors of a room's buckets, by kind and user.
#[derive(Debug, Default)]
pub struct Buckets {
    by_user: HashMap<(Kind, String), Bucket>,
}

impl Buckets {
    fn bucket(&self, kind: Kind, user: &str, limit: Limit, now: Instant) -> Bucket {
        self.by_user
            .get(&(kind, user.to_string()))
            .copied()
            .unwrap_or(Bucket {
                tokens: limit.burst,
                at: now,
                last: None,
            })
    }

    /// The fast path: `Some` refusal when this node's mirror already shows
    /// that Redis would refuse (it can only hold fewer tokens, and a later
    /// last message, than the mirror).
    pub fn refusal(&self, kind: Kind, user: &str, limit: Limit, take: Take, now: Instant) -> Option<Outcome> {
        match self.bucket(kind, user, limit, now).decide(limit, take, now) {
            Outcome::Taken(_) => None,
            refused => Some(refused),
        }
    }

    /// Records Redis' answer: `tokens` left now, and whether the take succeeded.
    pub fn mirror(&mut self, kind: Kind, user: &str, tokens: f64, taken: bool, now: Instant) {
        let key = (kind, user.to_string());
        let last = self.by_user.get(&key).and_then(|b| b.last);
        self.by_user.insert(
            key,
            Bucket {
                tokens,
                at: now,
                last: if taken { Some(now) } else { last },
            },
        );
    }

    /// The fallback when Redis cannot be reached: this node's bucket decides
    /// alone, and records the take.
    pub fn take_local(&mut self, kind: Kind, user: &str, limit: Limit, take: Take, now: Instant) -> Outcome {
        let mut bucket = self.bucket(kind, user, limit, now);
        let outcome = bucket.decide(limit, take, now);
        bucket.tokens = bucket.tokens_at(limit, now);
        bucket.at = now;
        if let Outcome::Taken(n) = outcome {
            bucket.tokens -= n as f64;
            bucket.last = Some(now);
        }
        self.by_user.insert((kind, user.to_string()), bucket);
        outcome
    }

    /// Forgets buckets untouched for `keep` (longer than any refill and
    /// slow-mode interval): they are full again, and memory stays bounded
    /// by the users active recently. Redis' copies expire by themselves.
    pub fn forget_idle(&mut self, now: Instant, keep: Duration) {
        self.by_user
            .retain(|_, b| now.saturating_duration_since(b.at) < keep);
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: Limit = Limit {
        burst: 5.0,
        per_sec: 0.5,
    };

    fn one(slow_secs: u64) -> Take {
        Take {
            cost: 1,
            partial: false,
            slow: Duration::from_secs(slow_secs),
        }
    }

    #[test]
    fn a_flood_is_cut_off_after_the_burst_and_other_users_are_not_affected() {
        let mut b = Buckets::default();
        let now = Instant::now();
        let admitted = (0..20)
            .filter(|_| {
                matches!(
                    b.take_local(Kind::Chat, "u", CHAT, one(0), now),
                    Outcome::Taken(1)
                )
            })
            .count();
        assert_eq!(admitted, 5);
        assert!(matches!(
            b.refusal(Kind::Chat, "u", CHAT, one(0), now),
            Some(Outcome::Empty { wait_ms: 2000 })
        ));
        assert_eq!(b.refusal(Kind::Chat, "v", CHAT, one(0), now), None);
        // Refilled after two seconds: one more.
        let later = now + Duration::from_secs(2);
        assert_eq!(b.refusal(Kind::Chat, "u", CHAT, one(0), later), None);
    }

    #[test]
    fn the_mirror_refuses_only_what_redis_would_refuse() {
        let mut b = Buckets::default();
        let now = Instant::now();
        // Redis said: taken, 0.4 tokens left.
        b.mirror(Kind::Chat, "u", 0.4, true, now);
        assert!(b.refusal(Kind::Chat, "u", CHAT, one(0), now).is_some());
        // 1.2 s later the mirror holds 1.0: Redis may hold as much, so ask it.
        assert_eq!(
            b.refusal(Kind::Chat, "u", CHAT, one(0), now + Duration::from_millis(1200)),
            None
        );
        // Slow mode from the last admitted message.
        assert!(matches!(
            b.refusal(Kind::Chat, "u", CHAT, one(30), now + Duration::from_secs(29)),
            Some(Outcome::SlowMode { .. })
        ));
        assert_eq!(
            b.refusal(Kind::Chat, "u", CHAT, one(30), now + Duration::from_secs(30)),
            None
        );
    }

    #[test]
    fn a_partial_take_counts_what_is_left_and_nothing_once_empty() {
        let likes = Limit {
            burst: 10.0,
            per_sec: 1.0,
        };
        let taps = |n| Take {
            cost: n,
            partial: true,
            slow: Duration::ZERO,
        };
        let mut b = Buckets::default();
        let now = Instant::now();
        assert_eq!(
            b.take_local(Kind::Like, "u", likes, taps(7), now),
            Outcome::Taken(7)
        );
        assert_eq!(
            b.take_local(Kind::Like, "u", likes, taps(7), now),
            Outcome::Taken(3)
        );
        assert!(matches!(
            b.take_local(Kind::Like, "u", likes, taps(7), now),
            Outcome::Empty { .. }
        ));
        // Chat and likes are separate buckets.
        assert_eq!(b.refusal(Kind::Chat, "u", CHAT, one(0), now), None);
    }

    #[test]
    fn idle_buckets_are_forgotten_but_not_while_they_still_constrain() {
        let mut b = Buckets::default();
        let now = Instant::now();
        b.take_local(Kind::Chat, "u", CHAT, one(0), now);
        b.forget_idle(now, Duration::from_secs(600));
        assert!(!b.is_empty());
        b.forget_idle(now + Duration::from_secs(601), Duration::from_secs(600));
        assert!(b.is_empty());
    }
}
