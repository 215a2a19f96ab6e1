//! A room's moderation state on one node: bans, mutes, moderators, slow
//! mode, blocked words, and per-user chat rate limits. Redis holds the
//! truth (`:mod` hash); nodes load it when a room opens and apply each
//! moderation event as it passes, so every node enforces a change within
//! one event delivery.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use crate::event::now_ms;

#[derive(Debug, Default)]
pub struct Moderation {
    bans: HashMap<String, i64>,
    mutes: HashMap<String, i64>,
    moderators: HashMap<String, ()>,
    pub slow_mode_secs: u64,
    blocked_words: Vec<String>,
    last_chat: HashMap<String, Instant>,
    buckets: HashMap<String, (f64, Instant)>,
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

    /// Checks a chat message and, if it passes, records it against the
    /// user's slow-mode clock and token bucket.
    pub fn admit_chat(
        &mut self,
        user: &str,
        text: &str,
        exempt: bool,
        burst: u32,
        per_sec: f64,
        now: Instant,
    ) -> Result<(), ChatRefusal> {
        if let Some(until) = self.mutes.get(user) {
            if *until > now_ms() {
                return Err(ChatRefusal::Muted { until_ms: *until });
            }
        }
        if !self.blocked_words.is_empty() {
            let lower = text.to_lowercase();
            if self.blocked_words.iter().any(|w| lower.contains(w.as_str())) {
                return Err(ChatRefusal::BlockedWord);
            }
        }
        if exempt {
            return Ok(());
        }
        if self.slow_mode_secs > 0 {
            if let Some(last) = self.last_chat.get(user) {
                let elapsed = now.saturating_duration_since(*last);
                let wait = std::time::Duration::from_secs(self.slow_mode_secs).saturating_sub(elapsed);
                if !wait.is_zero() {
                    return Err(ChatRefusal::SlowMode {
                        wait_ms: wait.as_millis() as u64,
                    });
                }
            }
        }
        let (tokens, at) = self.buckets.get(user).copied().unwrap_or((f64::from(burst), now));
        let tokens =
            (tokens + now.saturating_duration_since(at).as_secs_f64() * per_sec).min(f64::from(burst));
        if tokens < 1.0 {
            let wait_ms = ((1.0 - tokens) / per_sec * 1000.0).ceil() as u64;
            self.buckets.insert(user.to_string(), (tokens, now));
            return Err(ChatRefusal::RateLimited { wait_ms });
        }
        self.buckets.insert(user.to_string(), (tokens - 1.0, now));
        self.last_chat.insert(user.to_string(), now);
        Ok(())
    }

    /// Forgets the chat clocks that no longer constrain anyone: untouched
    /// for `idle` (longer than slow mode and a full bucket refill). A user
    /// who leaves keeps theirs until then, so reconnecting does not reset
    /// their rate limit or slow-mode wait; memory stays bounded by the users
    /// who chatted recently.
    pub fn forget_idle(&mut self, now: Instant, idle: std::time::Duration) {
        let slow = std::time::Duration::from_secs(self.slow_mode_secs);
        let keep = idle.max(slow);
        self.last_chat
            .retain(|_, at| now.saturating_duration_since(*at) < keep);
        self.buckets
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaving_and_rejoining_does_not_reset_the_rate_limit_or_slow_mode() {
        let mut m = Moderation {
            slow_mode_secs: 30,
            ..Moderation::default()
        };
        let now = Instant::now();
        assert!(m.admit_chat("u", "hi", false, 5, 0.5, now).is_ok());
        // The user leaves; the room prunes idle clocks; the user rejoins at once.
        m.forget_idle(now, std::time::Duration::from_secs(120));
        assert!(matches!(
            m.admit_chat("u", "hi", false, 5, 0.5, now),
            Err(ChatRefusal::SlowMode { .. })
        ));
        // Long after, the clock is gone and memory with it.
        let later = now + std::time::Duration::from_secs(200);
        m.forget_idle(later, std::time::Duration::from_secs(120));
        assert!(m.last_chat.is_empty() && m.buckets.is_empty());
    }

    #[test]
    fn a_flood_is_cut_off_after_the_burst() {
        let mut m = Moderation::default();
        let now = Instant::now();
        let admitted = (0..20)
            .filter(|_| m.admit_chat("u", "hi", false, 5, 0.5, now).is_ok())
            .count();
        assert_eq!(admitted, 5);
        assert!(matches!(
            m.admit_chat("u", "hi", false, 5, 0.5, now),
            Err(ChatRefusal::RateLimited { .. })
        ));
        // Another user is not affected.
        assert!(m.admit_chat("v", "hi", false, 5, 0.5, now).is_ok());
    }

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
        let now = Instant::now();
        assert!(matches!(
            m.admit_chat("loud", "x", false, 5, 1.0, now),
            Err(ChatRefusal::Muted { .. })
        ));
        m.apply("internal.blocked_words", &json!({"words": ["Spam"]}));
        assert_eq!(
            m.admit_chat("ok", "buy SPAM now", false, 5, 1.0, now),
            Err(ChatRefusal::BlockedWord)
        );
        m.apply("moderation.slow_mode", &json!({"seconds": 30}));
        assert!(m.admit_chat("ok", "first", false, 5, 1.0, now).is_ok());
        assert!(matches!(
            m.admit_chat("ok", "second", false, 5, 1.0, now),
            Err(ChatRefusal::SlowMode { .. })
        ));
    }
}
