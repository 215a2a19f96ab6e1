//! A room's moderation state on one node: bans, mutes, moderators, slow
//! mode, blocked words, and this node's copy of the per-user rate limits
//! ([`crate::ratelimit`]). Redis holds the
//! truth (`:mod` hash); nodes load it when a room opens and apply each
//! moderation event as it passes, so every node enforces a change within
//! one event delivery.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use crate::event::{now_ms, Publication};
use crate::ratelimit::Buckets;
use crate::store::ModChange;

#[derive(Debug, Default)]
pub struct Moderation {
    bans: HashMap<String, i64>,
    mutes: HashMap<String, i64>,
    moderators: HashMap<String, ()>,
    pub slow_mode_secs: u64,
    blocked_words: Vec<String>,
    /// This node's copies of the room's rate-limit buckets.
    pub buckets: Buckets,
}

/// Why a chat message was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatRefusal {
    Muted { until_ms: i64 },
    SlowMode { wait_ms: u64 },
    RateLimited { wait_ms: u64 },
    BlockedWord,
}

impl ChatRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            ChatRefusal::Muted { .. } => "muted",
            ChatRefusal::SlowMode { .. } => "slow_mode",
            ChatRefusal::RateLimited { .. } => "rate_limited",
            ChatRefusal::BlockedWord => "blocked_word",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ChatRefusal::Muted { until_ms } => format!("you are muted until {until_ms} (ms since epoch)"),
            ChatRefusal::SlowMode { wait_ms } => format!("slow mode: wait {wait_ms} ms"),
            ChatRefusal::RateLimited { wait_ms } => format!("too many messages: wait {wait_ms} ms"),
            ChatRefusal::BlockedWord => "the message contains a blocked word".to_string(),
        }
    }
}

impl Moderation {
    /// Builds the state from the room's `:mod` hash.
    pub fn from_hash(hash: HashMap<String, String>) -> Self {
        let mut m = Moderation::default();
        for (field, value) in hash {
            if let Some(user) = field.strip_prefix("ban:") {
                m.bans.insert(user.to_string(), value.parse().unwrap_or(0));
            } else if let Some(user) = field.strip_prefix("mute:") {
                m.mutes.insert(user.to_string(), value.parse().unwrap_or(0));
            } else if let Some(user) = field.strip_prefix("moderator:") {
                m.moderators.insert(user.to_string(), ());
            } else if field == "blocked_words" {
                m.set_blocked_words(&serde_json::from_str(&value).unwrap_or(Value::Null));
            } else if field == "slow_mode" {
                m.slow_mode_secs = value.parse().unwrap_or(0);
            }
        }
        m
    }

    pub fn is_banned(&self, user: &str) -> bool {
        self.bans.get(user).is_some_and(|until| *until > now_ms())
    }

    pub fn is_moderator(&self, user: &str) -> bool {
        self.moderators.contains_key(user)
    }

    fn set_blocked_words(&mut self, words: &Value) {
        self.blocked_words = words
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str())
                    .map(str::to_lowercase)
                    .filter(|w| !w.is_empty())
                    .collect()
            })
            .unwrap_or_default();
    }

    /// Applies a moderation event seen in the room stream. Returns the user
    /// to disconnect when the event is a ban.
    pub fn apply(&mut self, event_type: &str, data: &Value) -> Option<String> {
        let user = data.get("user").and_then(Value::as_str).map(str::to_string);
        let until = data.get("until").and_then(Value::as_i64).unwrap_or(0);
        match (event_type, user) {
            ("moderation.banned", Some(user)) => {
                self.bans.insert(user.clone(), until);
                return Some(user);
            }
            ("moderation.unbanned", Some(user)) => {
                self.bans.remove(&user);
            }
            ("moderation.muted", Some(user)) => {
                self.mutes.insert(user, until);
            }
            ("moderation.unmuted", Some(user)) => {
                self.mutes.remove(&user);
            }
            ("internal.moderator_granted", Some(user)) => {
                self.moderators.insert(user, ());
            }
            ("internal.moderator_revoked", Some(user)) => {
                self.moderators.remove(&user);
            }
            ("moderation.slow_mode", _) => {
                self.slow_mode_secs = data.get("seconds").and_then(Value::as_u64).unwrap_or(0);
            }
            ("internal.blocked_words", _) => {
                self.set_blocked_words(data.get("words").unwrap_or(&Value::Null));
            }
            _ => {}
        }
        None
    }

    /// The room's rules for a chat message that do not depend on time: a
    /// mute (not for `exempt` senders: hosts are never muted in their own
    /// room), then blocked words (for everyone). Slow mode and the rate
    /// limit are the user's bucket ([`crate::ratelimit`]).
    pub fn check_chat(&self, user: &str, text: &str, exempt: bool) -> Result<(), ChatRefusal> {
        if !exempt {
            if let Some(until) = self.mutes.get(user) {
                if *until > now_ms() {
                    return Err(ChatRefusal::Muted { until_ms: *until });
                }
            }
        }
        if !self.blocked_words.is_empty() {
            let lower = text.to_lowercase();
            if self.blocked_words.iter().any(|w| lower.contains(w.as_str())) {
                return Err(ChatRefusal::BlockedWord);
            }
        }
        Ok(())
    }

    /// Forgets the rate-limit buckets that no longer constrain anyone:
    /// untouched for `idle` (longer than slow mode and a full refill). A
    /// user who leaves keeps theirs until then; Redis keeps the shared copy
    /// as long, so reconnecting, here or on another node, resets nothing.
    pub fn forget_idle(&mut self, now: Instant, idle: std::time::Duration) {
        let slow = std::time::Duration::from_secs(self.slow_mode_secs);
        self.buckets.forget_idle(now, idle.max(slow));
    }
}

/// The event lifting `user`'s mute or ban (`kind`, `moderation.unmuted` or
/// `moderation.unbanned`), `by` someone, and the change to the moderation
/// hash (`field`, `mute` or `ban`) published with it.
pub(crate) fn lift(user: &str, by: &str, kind: &str, field: &str) -> (Publication, ModChange) {
    let publication = Publication::new(kind, serde_json::json!({ "user": user, "by": by }));
    (publication, ModChange::Remove(format!("{field}:{user}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bans_mutes_and_blocked_words_apply_from_events() {
        let mut m = Moderation::default();
        let until = now_ms() + 60_000;
        assert_eq!(
            m.apply("moderation.banned", &json!({"user": "troll", "until": until})),
            Some("troll".into())
        );
        assert!(m.is_banned("troll"));
        m.apply("moderation.muted", &json!({"user": "loud", "until": until}));
        assert!(matches!(
            m.check_chat("loud", "x", false),
            Err(ChatRefusal::Muted { .. })
        ));
        // A host is never muted in their own room.
        assert_eq!(m.check_chat("loud", "x", true), Ok(()));
        m.apply("internal.blocked_words", &json!({"words": ["Spam"]}));
        assert_eq!(
            m.check_chat("ok", "buy SPAM now", false),
            Err(ChatRefusal::BlockedWord)
        );
        assert_eq!(
            m.check_chat("ok", "buy SPAM now", true),
            Err(ChatRefusal::BlockedWord)
        );
        m.apply("moderation.slow_mode", &json!({"seconds": 30}));
        assert_eq!(m.slow_mode_secs, 30);
    }
}
