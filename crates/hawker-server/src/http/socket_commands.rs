//! The handler a socket's commerce commands go to: `deal.buy` and
//! `coupon.claim` to the commerce crate, `auction.bid` and `giveaway.enter`
//! to the live-formats crate, as are viewers' chat lines that may be
//! comment-to-buy orders. The connection holds it only while it is open
//! (the hub keeps no handler: commerce holds the hub, so a hub that held
//! commerce would make a reference cycle).

use futures_util::future::BoxFuture;
use hawker_hub::{
    Bid, BidReply, Buy, BuyReply, Claim, ClaimReply, CommandContext, CommentOrder, CommerceCommands,
    CommerceFuture, Enter, EnterReply, GroupJoin, GroupJoinReply,
};

/// Commerce and live formats, for one socket.
pub(crate) struct SocketCommands {
    pub commerce: hawker_commerce::Commerce,
    pub live: hawker_live::Live,
}

impl CommerceCommands for SocketCommands {
    fn buy<'a>(&'a self, ctx: &'a CommandContext, buy: Buy) -> CommerceFuture<'a, BuyReply> {
        Box::pin(self.commerce.socket_buy(ctx, buy))
    }

    fn claim<'a>(&'a self, ctx: &'a CommandContext, claim: Claim) -> CommerceFuture<'a, ClaimReply> {
        Box::pin(self.commerce.socket_claim(ctx, claim))
    }

    fn bid<'a>(&'a self, ctx: &'a CommandContext, bid: Bid) -> CommerceFuture<'a, BidReply> {
        Box::pin(self.live.socket_bid(ctx, bid))
    }

    fn enter_giveaway<'a>(&'a self, ctx: &'a CommandContext, enter: Enter) -> CommerceFuture<'a, EnterReply> {
        Box::pin(self.live.socket_enter(ctx, enter))
    }

    fn join_group_buy<'a>(
        &'a self,
        ctx: &'a CommandContext,
        join: GroupJoin,
    ) -> CommerceFuture<'a, GroupJoinReply> {
        Box::pin(self.live.socket_join_group_buy(ctx, join))
    }

    fn comment_order<'a>(
        &'a self,
        ctx: &'a CommandContext,
        text: &'a str,
    ) -> BoxFuture<'a, Option<CommentOrder>> {
        Box::pin(self.live.comment_order(ctx, text))
    }
}
