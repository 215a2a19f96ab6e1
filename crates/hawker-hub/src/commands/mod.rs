//! Socket commands. A client's text frame `{"id", "type", "data"}` is read
//! once into a [`Command`] (the `type` picks the variant, `data` fills its
//! typed fields), then applied. Refusals are [`CommandError`]s, each with the
//! stable code `docs/protocol.md` lists.
//!
//! One file per concern: [`chat`] (`chat.send`, `like`), [`host`] (host
//! messages and pins), [`moderation`] (mutes, bans, slow mode, blocked words,
//! moderators) and [`commerce`] (`deal.buy`, `coupon.claim`: parsed here,
//! carried out by the commerce crate through [`CommerceCommands`]).
//!
//! The path of one frame, top-down:
//! 1. [`read_frame`]: the size limit and the envelope (`frame_too_large`,
//!    `bad_json`);
//! 2. [`Command::parse`]: the `type` (`unknown_command`), then the sender's
//!    right to send it (`forbidden`, before any field is looked at), then the
//!    fields (`bad_command`, `too_long`, `bad_quantity`);
//! 3. `Command::apply`: the room's rules (mutes, slow mode...) and the
//!    publish, or the commerce call; the [`Ack`] becomes the reply's `data`.

pub mod chat;
pub mod commerce;
mod error;
mod fields;
pub mod host;
pub mod moderation;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};

pub use fields::Data;
pub(crate) use fields::{Field, Fields};

pub use commerce::{
    Bid, BidReply, Buy, BuyReply, Claim, ClaimReply, CommandContext, CommentOrder, CommerceCommands,
    CommerceFuture, Enter, EnterReply, GroupJoin, GroupJoinReply,
};
pub use error::CommandError;

use crate::config::HubConfig;
use crate::event::{now_ms, Publication};
use crate::hub::{Hub, Member};
use crate::rights::SessionRights;
use crate::room::RoomHandle;
use crate::store::ModChange;

/// A command frame from a client, `{"id": "r1", "type": "chat.send", "data": {...}}`,
/// before its `type` and `data` are read into a [`Command`].
/// Read in one pass without copying: strings borrow the frame's text
/// unless they have escapes ([`Data`]).
#[derive(Debug, Deserialize)]
pub struct ClientCommand<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub data: Data<'a>,
}

/// Every command `type` a client may send, in the order of
/// `docs/protocol.md`. [`Command::parse`] refuses any other `type` as
/// `unknown_command`, so a command missing here cannot be sent at all; the
/// server's authorization matrix (`tests/it/authz_matrix.rs`) needs a row for
/// each, and the unit test `every_command_variant_is_in_command_types` fails
/// when a [`Command`] variant has no entry.
pub const COMMAND_TYPES: &[&str] = &[
    "ping",
    "chat.send",
    "like",
    "host.announce",
    "host.message",
    "host.pin",
    "host.unpin",
    "mod.mute",
    "mod.ban",
    "mod.unmute",
    "mod.unban",
    "mod.slow_mode",
    "mod.blocked_words",
    "mod.grant",
    "mod.revoke",
    "deal.buy",
    "coupon.claim",
    "auction.bid",
    "giveaway.enter",
    "group_buy.join",
];

/// One client command, with its fields checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `ping`: answered at once with the server's time.
    Ping,
    /// `chat.send`
    Chat(chat::Chat),
    /// `like`
    Like(chat::Like),
    /// `host.announce`: a host message that also sets the snapshot's `announcement`.
    Announce(host::HostText),
    /// `host.message`
    HostMessage(host::HostText),
    /// `host.pin`
    Pin(host::Pin),
    /// `host.unpin`
    Unpin,
    /// `mod.mute`
    Mute(moderation::Restrict),
    /// `mod.ban`
    Ban(moderation::Restrict),
    /// `mod.unmute`
    Unmute(moderation::Target),
    /// `mod.unban`
    Unban(moderation::Target),
    /// `mod.slow_mode`
    SlowMode(moderation::SlowMode),
    /// `mod.blocked_words`
    BlockedWords(moderation::BlockedWords),
    /// `mod.grant`: the host appoints a moderator.
    Grant(moderation::Target),
    /// `mod.revoke`: the host dismisses a moderator.
    Revoke(moderation::Target),
    /// `deal.buy` (carried out by the commerce crate).
    Buy(commerce::Buy),
    /// `coupon.claim` (carried out by the commerce crate).
    Claim(commerce::Claim),
    /// `auction.bid` (carried out by the live-formats crate).
    Bid(commerce::Bid),
    /// `giveaway.enter` (carried out by the live-formats crate).
    Enter(commerce::Enter),
    /// `group_buy.join` (carried out by the live-formats crate).
    GroupJoin(commerce::GroupJoin),
}

/// What the sender may do in this room, as of this command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// `can_host`: decided when the socket opened.
    pub host: bool,
    /// `can_moderate`, or appointed by `mod.grant` since.
    pub moderate: bool,
}

const HOST_ONLY: &str = "only the host may do this";

impl Rights {
    /// Auctions and giveaways are for viewers: whoever may host the session
    /// (its host, agency, admins) may not bid or enter.
    fn not_host(self, refusal: &'static str) -> Result<(), CommandError> {
        if self.host {
            Err(CommandError::Forbidden(refusal))
        } else {
            Ok(())
        }
    }

    fn host(self, refusal: &'static str) -> Result<(), CommandError> {
        if self.host {
            Ok(())
        } else {
            Err(CommandError::Forbidden(refusal))
        }
    }

    fn moderate(self) -> Result<(), CommandError> {
        if self.moderate {
            Ok(())
        } else {
            Err(CommandError::Forbidden(
                "only the host or a moderator may do this",
            ))
        }
    }
}

/// Reads a text frame's envelope, `{"id"?, "type", "data"?}`.
pub fn read_frame(text: &str, max_frame_bytes: usize) -> Result<ClientCommand<'_>, CommandError> {
    if text.len() > max_frame_bytes {
        return Err(CommandError::FrameTooLarge {
            max_bytes: max_frame_bytes,
        });
    }
    serde_json::from_str(text).map_err(|e| CommandError::BadJson(e.to_string()))
}

impl Command {
    /// Reads the command named `kind` from its `data`. A role check comes
    /// before the checks of `data` (documented), so a viewer sending a host
    /// command hears `forbidden` whatever its fields.
    pub fn parse(
        kind: &str,
        data: &Data<'_>,
        rights: Rights,
        config: &HubConfig,
    ) -> Result<Command, CommandError> {
        use moderation::{BlockedWords, Restrict, SlowMode, Target};
        if !COMMAND_TYPES.contains(&kind) {
            return Err(CommandError::UnknownCommand(kind.to_string()));
        }
        let data = data.fields();
        Ok(match kind {
            "ping" => Command::Ping,
            "chat.send" => Command::Chat(chat::Chat::parse(data, config.chat_max_chars)?),
            "like" => Command::Like(chat::Like::parse(data)?),
            "host.announce" => {
                rights.host(HOST_ONLY)?;
                Command::Announce(host::HostText::parse(data)?)
            }
            "host.message" => {
                rights.host(HOST_ONLY)?;
                Command::HostMessage(host::HostText::parse(data)?)
            }
            "host.pin" => {
                rights.host("only the host may pin")?;
                Command::Pin(host::Pin::parse(data)?)
            }
            "host.unpin" => {
                rights.host("only the host may unpin")?;
                Command::Unpin
            }
            "mod.mute" => {
                rights.moderate()?;
                Command::Mute(Restrict::parse(data)?)
            }
            "mod.ban" => {
                rights.moderate()?;
                Command::Ban(Restrict::parse(data)?)
            }
            "mod.unmute" => {
                rights.moderate()?;
                Command::Unmute(Target::parse(data)?)
            }
            "mod.unban" => {
                rights.moderate()?;
                Command::Unban(Target::parse(data)?)
            }
            "mod.slow_mode" => {
                rights.moderate()?;
                Command::SlowMode(SlowMode::parse(data)?)
            }
            "mod.blocked_words" => {
                rights.moderate()?;
                Command::BlockedWords(BlockedWords::parse(data)?)
            }
            "mod.grant" => {
                rights.host("only the host may appoint moderators")?;
                Command::Grant(Target::parse(data)?)
            }
            "mod.revoke" => {
                rights.host("only the host may appoint moderators")?;
                Command::Revoke(Target::parse(data)?)
            }
            "deal.buy" => Command::Buy(commerce::Buy::parse(data)?),
            "coupon.claim" => Command::Claim(commerce::Claim::parse(data)?),
            "auction.bid" => {
                rights.not_host("the host's side may not bid")?;
                Command::Bid(commerce::Bid::parse(data)?)
            }
            "giveaway.enter" => {
                rights.not_host("the host's side may not enter")?;
                Command::Enter(commerce::Enter::parse(data)?)
            }
            "group_buy.join" => {
                rights.not_host("the host's side may not join")?;
                Command::GroupJoin(commerce::GroupJoin::parse(data)?)
            }
            other => return Err(CommandError::UnknownCommand(other.to_string())),
        })
    }

    /// The command's `type` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Chat(_) => "chat.send",
            Command::Like(_) => "like",
            Command::Announce(_) => "host.announce",
            Command::HostMessage(_) => "host.message",
            Command::Pin(_) => "host.pin",
            Command::Unpin => "host.unpin",
            Command::Mute(_) => "mod.mute",
            Command::Ban(_) => "mod.ban",
            Command::Unmute(_) => "mod.unmute",
            Command::Unban(_) => "mod.unban",
            Command::SlowMode(_) => "mod.slow_mode",
            Command::BlockedWords(_) => "mod.blocked_words",
            Command::Grant(_) => "mod.grant",
            Command::Revoke(_) => "mod.revoke",
            Command::Buy(_) => "deal.buy",
            Command::Claim(_) => "coupon.claim",
            Command::Bid(_) => "auction.bid",
            Command::Enter(_) => "giveaway.enter",
            Command::GroupJoin(_) => "group_buy.join",
        }
    }

    /// Carries the command out in the sender's room.
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        // Commands that publish nothing from here (commerce answers from
        // its own services; likes are summed by the room) let the next go.
        if matches!(
            self,
            Command::Ping
                | Command::Like(_)
                | Command::Buy(_)
                | Command::Claim(_)
                | Command::Bid(_)
                | Command::Enter(_)
                | Command::GroupJoin(_)
        ) {
            ctx.pass_turn();
        }
        match self {
            Command::Ping => Ok(Ack::Pong(now_ms())),
            Command::Chat(chat) => chat.apply(ctx).await,
            Command::Like(like) => Ok(like.apply(ctx).await),
            Command::Announce(text) => text.announce(ctx).await,
            Command::HostMessage(text) => text.message(ctx).await,
            Command::Pin(pin) => pin.apply(ctx).await,
            Command::Unpin => host::unpin(ctx).await,
            Command::Mute(restrict) => restrict.mute(ctx).await,
            Command::Ban(restrict) => restrict.ban(ctx).await,
            Command::Unmute(target) => target.unmute(ctx).await,
            Command::Unban(target) => target.unban(ctx).await,
            Command::SlowMode(slow) => slow.apply(ctx).await,
            Command::BlockedWords(words) => words.apply(ctx).await,
            Command::Grant(target) => target.grant(ctx).await,
            Command::Revoke(target) => target.revoke(ctx).await,
            Command::Buy(buy) => commerce::buy(ctx, buy).await,
            Command::Claim(claim) => commerce::claim(ctx, claim).await,
            Command::Bid(bid) => commerce::bid(ctx, bid).await,
            Command::Enter(enter) => commerce::enter_giveaway(ctx, enter).await,
            Command::GroupJoin(join) => commerce::join_group_buy(ctx, join).await,
        }
    }
}

/// What an `ack` says: its `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// `{"counted"}`: the taps of a `like` that counted (the rest were over the limit).
    Likes(u64),
    /// `{"pong": <server time, ms>}` (`ping`).
    Pong(i64),
    /// `{"offset"}`: the offset of the event the command published.
    Offset(u64),
    /// `{"order", "replayed"}` (`deal.buy`).
    Bought(BuyReply),
    /// `{"claim"}` (`coupon.claim`).
    Claimed(ClaimReply),
    /// `{"bid"}` (`auction.bid`).
    Bid(BidReply),
    /// `{"entry"}` (`giveaway.enter`).
    Entered(EnterReply),
    /// `{"joined"}` (`group_buy.join`).
    GroupJoined(GroupJoinReply),
}

impl Ack {
    /// The `data` of the `ack` frame (`null`: none).
    pub fn into_data(self) -> Value {
        match self {
            Ack::Likes(counted) => json!({ "counted": counted }),
            Ack::Pong(ms) => json!({ "pong": ms }),
            Ack::Offset(offset) => json!({ "offset": offset }),
            Ack::Bought(reply) => json!({ "order": reply.order, "replayed": reply.replayed }),
            Ack::Claimed(reply) => json!({ "claim": reply.claim }),
            Ack::Bid(reply) => json!({ "bid": reply.bid }),
            Ack::Entered(reply) => json!({ "entry": reply.entry }),
            Ack::GroupJoined(reply) => json!({ "joined": reply.joined }),
        }
    }
}

/// What a command is applied with: the sender's room and the handler for
/// commerce commands (handed to the socket by the server, never stored in
/// the hub).
pub(crate) struct Context<'a> {
    pub hub: &'a Hub,
    pub room: &'a RoomHandle,
    pub member: &'a Member,
    /// What the sender may do, as of this command.
    pub rights: Rights,
    pub request_id: Option<&'a str>,
    pub commerce: &'a dyn CommerceCommands,
    /// Who may host the session (the moderation hierarchy asks about targets).
    pub session_rights: &'a dyn SessionRights,
    /// This command's place in its socket's publish order.
    pub turn: std::sync::Mutex<Turn>,
}

impl Context<'_> {
    /// Publishes into the room (with moderation changes, applied in the
    /// same step); the ack carries the event's offset. The publication is
    /// queued after those of the socket's earlier commands.
    async fn publish(&self, publication: Publication, mods: &[ModChange]) -> Result<Ack, CommandError> {
        let mut turn = self.take_turn();
        turn.wait().await;
        let queued = self.hub.queue_publish(self.room.id, &publication, mods);
        drop(turn);
        let offset = queued?.await?;
        Ok(Ack::Offset(offset))
    }

    /// [`Context::publish`] behind a take from the sender's token bucket,
    /// made by the same step in Redis: a refused take publishes nothing.
    /// The offset is 0 when refused.
    async fn publish_taking(
        &self,
        publication: Publication,
        bucket: crate::store::Bucket<'_>,
    ) -> Result<crate::store::TakenPublish, CommandError> {
        let mut turn = self.take_turn();
        turn.wait().await;
        let queued = self
            .hub
            .inner
            .store
            .queue_publish_taking(self.room.id, &publication, bucket);
        drop(turn);
        let published = queued
            .map_err(crate::PublishError::from)?
            .await
            .map_err(crate::PublishError::from)?;
        Ok(published)
    }

    /// Lets the socket's next command publish without waiting for this one
    /// (a command that publishes nothing, or not before a slow step).
    fn pass_turn(&self) {
        drop(self.take_turn());
    }

    fn take_turn(&self) -> Turn {
        std::mem::take(&mut *self.turn.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A command's place in its socket's publish order. A socket runs several
/// commands at once (`hub.commands_in_flight`), and its publications still
/// reach Redis in the order the commands arrived: each command queues its
/// publication only once the command before it has queued its own, passed,
/// or finished (the node's publisher keeps queue order,
/// [`crate::publisher`]).
#[derive(Default)]
pub(crate) struct Turn {
    /// Resolves when the previous command has queued, passed or finished.
    before: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Dropped when this command has done the same (its drop is the signal).
    _after: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Turn {
    /// The turn after `last`, which then becomes this one's.
    pub(crate) fn after(last: &mut Option<tokio::sync::oneshot::Receiver<()>>) -> Turn {
        let (after, next) = tokio::sync::oneshot::channel();
        Turn {
            before: last.replace(next),
            _after: Some(after),
        }
    }

    /// Waits for the previous command (a dropped sender counts as done).
    async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await;
        }
    }
}

impl Drop for Turn {
    /// A command that ends (or passes) before its predecessor has queued
    /// must not let its successor overtake that predecessor: the signal is
    /// passed on when the predecessor's comes.
    fn drop(&mut self) {
        let (Some(mut before), Some(after)) = (self.before.take(), self._after.take()) else {
            return;
        };
        if let Err(tokio::sync::oneshot::error::TryRecvError::Empty) = before.try_recv() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = before.await;
                    drop(after);
                });
            }
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
