//! `auction.bid` and `giveaway.enter` on the room socket. The hub parses
//! them; the server's socket handler calls these, which run the same code
//! as their HTTP twins, so the rules and error codes are the same.

use hawker_hub::{Bid, BidReply, CommandContext, Enter, EnterReply, GroupJoin, GroupJoinReply};

use crate::{Live, Result};

impl Live {
    /// `auction.bid` from a socket.
    pub async fn socket_bid(&self, ctx: &CommandContext, bid: Bid) -> Result<BidReply> {
        crate::auctions::socket_bid(self, ctx, bid).await
    }

    /// `giveaway.enter` from a socket.
    pub async fn socket_enter(&self, ctx: &CommandContext, enter: Enter) -> Result<EnterReply> {
        crate::giveaways::socket_enter(self, ctx, enter).await
    }

    /// `group_buy.join` from a socket.
    pub async fn socket_join_group_buy(
        &self,
        ctx: &CommandContext,
        join: GroupJoin,
    ) -> Result<GroupJoinReply> {
        crate::groupbuys::socket_join(self, ctx, join).await
    }
}
