//! What every viewer may send: `chat.send` and `like`.

use std::time::Instant;

use serde_json::json;

use super::{Ack, CommandError, Context, Fields};
use crate::event::Publication;

/// `chat.send`: a message to the room's chat, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub text: String,
}

impl Chat {
    pub(crate) fn parse(data: Fields<'_>, max_chars: usize) -> Result<Chat, CommandError> {
        Ok(Chat {
            text: data.text("text", max_chars)?,
        })
    }

    /// Checks the room's rules (mute, blocked words, then for all but hosts
    /// slow mode and the rate limit), then publishes a `chat` event. A
    /// refused message is not published and does not use the slow-mode clock.
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let config = ctx.hub.config();
        let admitted = ctx.room.shared.moderation().admit_chat(
            &ctx.member.user,
            &self.text,
            ctx.member.can_host,
            config.chat_burst,
            config.chat_per_sec,
            Instant::now(),
        );
        if let Err(refusal) = admitted {
            crate::metrics::chat_dropped(refusal.code(), 1);
            return Err(refusal.into());
        }
        let publication = Publication::new("chat", json!({ "text": self.text })).from_user(&ctx.member.user);
        ctx.publish(publication, &[]).await
    }
}

/// `like`: taps, counted into the room's next `likes` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Like {
    /// 1 to 100.
    pub count: u64,
}

impl Like {
    /// `count`: an integer from 1 to 100; absent or `null`: 1.
    pub(crate) fn parse(data: Fields<'_>) -> Result<Like, CommandError> {
        Ok(Like {
            count: data.integer_in("count", 1..=100, Some(1))?,
        })
    }

    /// Adds the taps to this node's pending likes; acknowledged at once.
    pub(crate) fn apply(self, ctx: &Context<'_>) -> Ack {
        ctx.hub.add_likes(ctx.room, self.count);
        Ack::Empty
    }
}
