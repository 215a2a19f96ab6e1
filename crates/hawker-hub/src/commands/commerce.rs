//! `deal.buy`, `coupon.claim`, `auction.bid`, `giveaway.enter` and
//! `group_buy.join`: parsed here like every command, carried out through
//! [`CommerceCommands`] (the server's handler hands deals and coupons to the
//! commerce crate, auctions, giveaways and group buys to the live-formats
//! crate).
//!
//! The server hands each socket its handler when it serves it
//! ([`crate::Hub::serve`]); the hub itself keeps none. (Commerce holds the
//! hub, so a hub that held commerce would make a reference cycle.)

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Ack, CommandError, Context, Fields};
use crate::hub::Member;

/// `deal.buy`: buy `quantity` units of a flash deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buy {
    pub deal_id: Uuid,
    /// As sent; the commerce crate checks the range (1 to 100, `bad_quantity`).
    pub quantity: i32,
    /// As sent; the commerce crate checks it (`bad_idempotency_key`).
    pub idempotency_key: String,
    pub coupon_claim_id: Option<Uuid>,
}

impl Buy {
    /// The fields in the order they have always been checked: `deal_id`,
    /// `idempotency_key` (present and a string), `quantity` (absent or
    /// `null`: 1; otherwise an integer, else `bad_command`; an integer
    /// beyond any quantity is `bad_quantity`, as is one outside 1 to 100
    /// when commerce checks it), `coupon_claim_id` (absent or `null`: none).
    pub(crate) fn parse(data: Fields<'_>) -> Result<Buy, CommandError> {
        let deal_id = data.uuid("deal_id")?;
        let idempotency_key = data.string("idempotency_key")?.to_string();
        let quantity = match data.integer("quantity")? {
            None => 1,
            Some(q) => {
                i32::try_from(q).map_err(|_| CommandError::BadQuantity("quantity must be 1 to 100".into()))?
            }
        };
        let coupon_claim_id = data.optional_uuid("coupon_claim_id")?;
        Ok(Buy {
            deal_id,
            quantity,
            idempotency_key,
            coupon_claim_id,
        })
    }
}

/// `coupon.claim`: claim one coupon of a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub coupon_drop_id: Uuid,
}

impl Claim {
    pub(crate) fn parse(data: Fields<'_>) -> Result<Claim, CommandError> {
        Ok(Claim {
            coupon_drop_id: data.uuid("coupon_drop_id")?,
        })
    }
}

/// `auction.bid`: bid on an auction, or raise one's maximum (proxy) bid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bid {
    pub auction_id: Uuid,
    /// A bid of exactly this amount (minor units), as sent; the live crate checks it.
    pub amount_minor: Option<i64>,
    /// A maximum bid: the server bids for the sender by the increment up to it.
    pub max_minor: Option<i64>,
}

impl Bid {
    /// `auction_id`, then `amount_minor` and `max_minor` (integers, absent
    /// or `null`: none). At least one of the two is required (`bad_command`).
    pub(crate) fn parse(data: Fields<'_>) -> Result<Bid, CommandError> {
        let auction_id = data.uuid("auction_id")?;
        let amount_minor = minor_units(data.integer("amount_minor")?)?;
        let max_minor = minor_units(data.integer("max_minor")?)?;
        if amount_minor.is_none() && max_minor.is_none() {
            return Err(CommandError::BadCommand(
                "`amount_minor` or `max_minor` is required".into(),
            ));
        }
        Ok(Bid {
            auction_id,
            amount_minor,
            max_minor,
        })
    }
}

/// An amount as sent: any integer that fits in minor units (the live crate
/// checks the range that makes sense).
fn minor_units(value: Option<i128>) -> Result<Option<i64>, CommandError> {
    value
        .map(|v| i64::try_from(v).map_err(|_| CommandError::BadCommand("amount out of range".into())))
        .transpose()
}

/// `giveaway.enter`: enter a giveaway (once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enter {
    pub giveaway_id: Uuid,
}

impl Enter {
    pub(crate) fn parse(data: Fields<'_>) -> Result<Enter, CommandError> {
        Ok(Enter {
            giveaway_id: data.uuid("giveaway_id")?,
        })
    }
}

/// `group_buy.join`: join a group buy with a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupJoin {
    pub group_buy_id: Uuid,
    /// As sent (absent or `null`: 1); the live crate checks the range.
    pub quantity: i32,
    /// As sent; the live crate checks it (`bad_idempotency_key`).
    pub idempotency_key: String,
    /// Another participant's invite code, as sent (absent or `null`: none).
    pub invite: Option<String>,
}

impl GroupJoin {
    /// `group_buy_id`, `idempotency_key` (a string), `quantity` (an
    /// integer; absent or `null`: 1), `invite` (a string; absent or `null`: none).
    pub(crate) fn parse(data: Fields<'_>) -> Result<GroupJoin, CommandError> {
        let group_buy_id = data.uuid("group_buy_id")?;
        let idempotency_key = data.string("idempotency_key")?.to_string();
        let quantity = match data.integer("quantity")? {
            None => 1,
            Some(q) => {
                i32::try_from(q).map_err(|_| CommandError::BadQuantity("quantity must be 1 to 100".into()))?
            }
        };
        let invite = match data.get("invite")? {
            None => None,
            Some(value) => Some(
                value
                    .as_str()
                    .ok_or_else(|| CommandError::bad("`invite` must be a string"))?
                    .to_string(),
            ),
        };
        Ok(GroupJoin {
            group_buy_id,
            quantity,
            idempotency_key,
            invite,
        })
    }
}

/// `group_buy.join`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupJoinReply {
    /// The join as the HTTP route returns it.
    pub joined: Value,
}

/// `auction.bid`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BidReply {
    /// The bid as the HTTP route returns it.
    pub bid: Value,
}

/// `giveaway.enter`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnterReply {
    /// The entry as the HTTP route returns it.
    pub entry: Value,
}

/// `deal.buy`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuyReply {
    /// The order as the HTTP route returns it.
    pub order: Value,
    /// The key was used before and this is that order again.
    pub replayed: bool,
}

/// `coupon.claim`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimReply {
    /// The claim as the HTTP route returns it.
    pub claim: Value,
}

/// A chat line that is a comment-to-buy order (the handler's answer to
/// [`CommerceCommands::comment_order`]).
pub struct CommentOrder {
    /// Mark the chat line as an order (`data.order: true`).
    pub mark: bool,
    /// Places the order in the background under this idempotency key (the
    /// hub calls it once the line is published; the buyer hears the outcome
    /// as a private notice, never in the `chat.send` ack).
    pub place: Box<dyn FnOnce(String) + Send>,
}

impl std::fmt::Debug for CommentOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommentOrder")
            .field("mark", &self.mark)
            .finish_non_exhaustive()
    }
}

/// Who sent a commerce command, and from which room.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub room: Uuid,
    pub member: Member,
    /// The command's `id`, if the client sent one.
    pub request_id: Option<String>,
}

/// What a commerce command answers: its reply, or the domain error whose
/// code becomes the `error` frame's.
pub type CommerceFuture<'a, T> = BoxFuture<'a, Result<T, hawker_core::Error>>;

/// The commerce commands, implemented by the server (which hands them to
/// the commerce and live-formats crates) and handed to each socket.
pub trait CommerceCommands: Send + Sync + 'static {
    /// Places an order (or replays the one placed with this key).
    fn buy<'a>(&'a self, ctx: &'a CommandContext, buy: Buy) -> CommerceFuture<'a, BuyReply>;

    /// Claims a coupon for the sender.
    fn claim<'a>(&'a self, ctx: &'a CommandContext, claim: Claim) -> CommerceFuture<'a, ClaimReply>;

    /// Bids on an auction.
    fn bid<'a>(&'a self, ctx: &'a CommandContext, bid: Bid) -> CommerceFuture<'a, BidReply>;

    /// Enters a giveaway.
    fn enter_giveaway<'a>(&'a self, ctx: &'a CommandContext, enter: Enter) -> CommerceFuture<'a, EnterReply>;

    /// Joins a group buy.
    fn join_group_buy<'a>(
        &'a self,
        ctx: &'a CommandContext,
        join: GroupJoin,
    ) -> CommerceFuture<'a, GroupJoinReply>;
    /// Whether a chat line (admitted by the room's rules, about to be
    /// published) is a comment-to-buy order. `None`: plain chat. Called for
    /// every viewer's chat line, so it must be cheap (a cached setting).
    fn comment_order<'a>(
        &'a self,
        ctx: &'a CommandContext,
        text: &'a str,
    ) -> BoxFuture<'a, Option<CommentOrder>> {
        let _ = (ctx, text);
        Box::pin(async { None })
    }
}

pub(crate) fn context(ctx: &Context<'_>) -> CommandContext {
    CommandContext {
        room: ctx.room.id,
        member: ctx.member.clone(),
        request_id: ctx.request_id.map(str::to_string),
    }
}

pub(crate) async fn buy(ctx: &Context<'_>, buy: Buy) -> Result<Ack, CommandError> {
    let caller = context(ctx);
    let reply = ctx.commerce.buy(&caller, buy).await?;
    Ok(Ack::Bought(reply))
}

pub(crate) async fn claim(ctx: &Context<'_>, claim: Claim) -> Result<Ack, CommandError> {
    let caller = context(ctx);
    let reply = ctx.commerce.claim(&caller, claim).await?;
    Ok(Ack::Claimed(reply))
}

pub(crate) async fn bid(ctx: &Context<'_>, bid: Bid) -> Result<Ack, CommandError> {
    let caller = context(ctx);
    let reply = ctx.commerce.bid(&caller, bid).await?;
    Ok(Ack::Bid(reply))
}

pub(crate) async fn enter_giveaway(ctx: &Context<'_>, enter: Enter) -> Result<Ack, CommandError> {
    let caller = context(ctx);
    let reply = ctx.commerce.enter_giveaway(&caller, enter).await?;
    Ok(Ack::Entered(reply))
}

pub(crate) async fn join_group_buy(ctx: &Context<'_>, join: GroupJoin) -> Result<Ack, CommandError> {
    let caller = context(ctx);
    let reply = ctx.commerce.join_group_buy(&caller, join).await?;
    Ok(Ack::GroupJoined(reply))
}
