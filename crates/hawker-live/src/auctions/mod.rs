//! Live auctions (being built: see issue 16).

use hawker_hub::{Bid, BidReply, CommandContext};

use crate::{Error, Live, Result};

/// `auction.bid` from a socket.
pub(crate) async fn socket_bid(_live: &Live, _ctx: &CommandContext, _bid: Bid) -> Result<BidReply> {
    Err(Error::NotFound("auction"))
}
