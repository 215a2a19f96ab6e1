//! What every viewer may send: `chat.send` and `like`.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ack, CommandError, Context, Fields};
use crate::event::Publication;
use crate::moderation::ChatRefusal;
use crate::ratelimit::{Kind, Limit, Outcome, Take};
use crate::store::Bucket;

/// `chat.send`: a message to the room's chat, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub text: String,
    /// The client's own id for this message (1 to 64 printable ASCII
    /// characters, no spaces), the same when it sends the message again
    /// after a reconnect: the room publishes it once, and a comment-to-buy
    /// order it makes is placed once.
    pub client_msg_id: Option<String>,
}

/// Longest `client_msg_id`, in characters (ASCII).
pub const MAX_CLIENT_MSG_ID: usize = 64;

impl Chat {
    pub(crate) fn parse(data: Fields<'_>, max_chars: usize) -> Result<Chat, CommandError> {
        let text = data.text("text", max_chars)?;
        let client_msg_id = match data.get("client_msg_id")? {
            None => None,
            Some(value) => {
                let id = value.as_str().filter(|id| {
                    !id.is_empty()
                        && id.len() <= MAX_CLIENT_MSG_ID
                        && id.bytes().all(|b| (b'!'..=b'~').contains(&b))
                });
                let id = id.ok_or_else(|| {
                    CommandError::bad(
                        "`client_msg_id` must be 1 to 64 printable ASCII characters without spaces",
                    )
                })?;
                Some(id.to_string())
            }
        };
        Ok(Chat { text, client_msg_id })
    }

    /// Checks the room's rules (for all but hosts a mute; blocked words;
    /// then for all but hosts slow mode and the rate limit, shared by the
    /// user's sockets on every node), then publishes a `chat` event. A
    /// refused message is not published and does not use the slow-mode
    /// clock; a message sent again under its `client_msg_id` takes a token
    /// too, as the protocol says.
    /// The rate limit is taken by the publish itself, in one step in Redis
    /// (this node's copy of the bucket refuses at once a sender it already
    /// knows to be short).
    /// A viewer's line the handler reads as a comment-to-buy order is
    /// published (marked if the host wants) and then handed its order's
    /// idempotency key; the ack does not wait for the order.
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let exempt = ctx.member.can_host;
        let checked = ctx
            .room
            .shared
            .moderation()
            .check_chat(&ctx.member.user, &self.text, exempt);
        let bucket = match checked {
            Err(refusal) => return Err(refused(refusal)),
            Ok(()) if exempt => None,
            Ok(()) => {
                let slow = Duration::from_secs(ctx.room.shared.moderation().slow_mode_secs);
                let bucket = Bucket {
                    kind: Kind::Chat,
                    user: &ctx.member.user,
                    limit: ctx.hub.config().chat_limit(),
                    take: Take {
                        cost: 1,
                        partial: false,
                        slow,
                    },
                };
                if let Some(refusal) = mirror_refusal(ctx, &bucket).and_then(chat_refusal) {
                    return Err(refused(refusal));
                }
                Some(bucket)
            }
        };
        // Comment-to-buy: the handler says whether the line is an order
        // (the session's setting and grammar are its business, not the hub's).
        // The host's side never orders by chat. Nothing is placed before
        // the line is published.
        let order = if exempt {
            None
        } else {
            let caller = super::commerce::context(ctx);
            ctx.commerce.comment_order(&caller, &self.text).await
        };
        let mut data = json!({ "text": self.text });
        if order.as_ref().is_some_and(|o| o.mark) {
            data["order"] = json!(true);
        }
        let mut publication = Publication::new("chat", data).from_user(&ctx.member.user);
        if let Some(id) = &self.client_msg_id {
            // A message sent again (same sender, same id) is published once;
            // the ack carries the first offset.
            publication = publication.dedupe(format!("chat:{}:{id}", ctx.member.user));
        }
        let ack = match bucket {
            None => ctx.publish(publication, &[]).await?,
            Some(bucket) => {
                let published = match ctx.publish_taking(publication, bucket).await {
                    Ok(published) => published,
                    Err(e) => {
                        // Redis did not answer: the message was not published
                        // (or its outcome is unknown); this node's copy keeps
                        // the take it would have made.
                        let now = Instant::now();
                        let mut moderation = ctx.room.shared.moderation();
                        moderation.buckets.take_local(
                            bucket.kind,
                            bucket.user,
                            bucket.limit,
                            bucket.take,
                            now,
                        );
                        return Err(e);
                    }
                };
                if let Some((outcome, tokens)) = published.take {
                    let taken = matches!(outcome, Outcome::Taken(_));
                    ctx.room.shared.moderation().buckets.mirror(
                        Kind::Chat,
                        bucket.user,
                        tokens,
                        taken,
                        Instant::now(),
                    );
                    if let Some(refusal) = chat_refusal(outcome) {
                        return Err(refused(refusal));
                    }
                }
                Ack::Offset(published.offset)
            }
        };
        if let (Some(order), Ack::Offset(offset)) = (order, &ack) {
            let key = match &self.client_msg_id {
                Some(id) => format!("chat:{}:m:{id}", ctx.room.id),
                None => format!("chat:{}:o:{offset}", ctx.room.id),
            };
            (order.place)(key);
        }
        Ok(ack)
    }
}

/// Counts a refused message and turns the refusal into its error.
fn refused(refusal: ChatRefusal) -> CommandError {
    crate::metrics::chat_dropped(refusal.code(), 1);
    refusal.into()
}

/// The fast path: `Some` refusal when this node's copy of the bucket
/// already shows that Redis would refuse (Redis can only hold fewer tokens
/// than the copy).
fn mirror_refusal(ctx: &Context<'_>, bucket: &Bucket<'_>) -> Option<Outcome> {
    ctx.room.shared.moderation().buckets.refusal(
        bucket.kind,
        bucket.user,
        bucket.limit,
        bucket.take,
        Instant::now(),
    )
}

/// A chat take's refusal; `None` when taken.
fn chat_refusal(outcome: Outcome) -> Option<ChatRefusal> {
    match outcome {
        Outcome::Taken(_) => None,
        Outcome::SlowMode { wait_ms } => Some(ChatRefusal::SlowMode { wait_ms }),
        Outcome::Empty { wait_ms } => Some(ChatRefusal::RateLimited { wait_ms }),
    }
}

/// Takes from the sender's `kind` bucket: refused at once when this node's
/// copy already shows it short, else by Redis (shared by every node), else,
/// when Redis cannot be reached, by this node's copy alone.
async fn take_tokens(ctx: &Context<'_>, kind: Kind, limit: Limit, take: Take) -> Outcome {
    let user = ctx.member.user.as_str();
    let shared = &ctx.room.shared;
    let bucket = Bucket {
        kind,
        user,
        limit,
        take,
    };
    if let Some(refused) = mirror_refusal(ctx, &bucket) {
        return refused;
    }
    let answer = ctx
        .hub
        .inner
        .store
        .take_tokens(ctx.room.id, kind, user, limit, take)
        .await;
    let mut moderation = shared.moderation();
    let now = Instant::now();
    match answer {
        Ok((outcome, tokens)) => {
            let taken = matches!(outcome, Outcome::Taken(_));
            moderation.buckets.mirror(kind, user, tokens, taken, now);
            outcome
        }
        Err(e) => {
            tracing::debug!(error = %e, kind = kind.as_str(), "shared rate limit unavailable; this node decides");
            moderation.buckets.take_local(kind, user, limit, take, now)
        }
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

    /// Counts as many of the taps as the sender's likes bucket holds (the
    /// rest are not counted, silently) into this node's pending likes; the
    /// ack says how many counted.
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Ack {
        let take = Take {
            cost: self.count,
            partial: true,
            slow: Duration::ZERO,
        };
        let counted = match take_tokens(ctx, Kind::Like, ctx.hub.config().likes_limit(), take).await {
            Outcome::Taken(n) => n,
            Outcome::SlowMode { .. } | Outcome::Empty { .. } => 0,
        };
        if counted < self.count {
            crate::metrics::likes_not_counted(self.count - counted);
        }
        if counted > 0 {
            ctx.hub.add_likes(ctx.room, counted);
        }
        Ack::Likes(counted)
    }
}
