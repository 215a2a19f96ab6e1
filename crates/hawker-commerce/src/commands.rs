//! Commerce commands on the room socket: `deal.buy` and `coupon.claim`.
//!
//! The hub parses them (fields and their `bad_command` / `bad_quantity`
//! errors) and calls `CommerceCommands` on the handler the server gave
//! the socket, which calls these. They run the same code as their HTTP
//! twins, so the rules and error codes are the same.

use hawker_core::error::{Error, Result};
use hawker_hub::{Buy, BuyReply, Claim, ClaimReply, CommandContext};
use serde::Serialize;
use serde_json::Value;

use crate::purchase::{place_order, PlaceOrder};
use crate::Commerce;

impl Commerce {
    /// `deal.buy` from a socket.
    pub async fn socket_buy(&self, ctx: &CommandContext, buy: Buy) -> Result<BuyReply> {
        let request = PlaceOrder {
            quantity: buy.quantity,
            coupon_claim_id: buy.coupon_claim_id,
        };
        let placed = place_order(self, &ctx.member.user, buy.deal_id, &buy.idempotency_key, request).await?;
        Ok(BuyReply {
            order: to_json(&placed.order)?,
            replayed: placed.replayed,
        })
    }

    /// `coupon.claim` from a socket.
    pub async fn socket_claim(&self, ctx: &CommandContext, claim: Claim) -> Result<ClaimReply> {
        let claimed = crate::coupons::claim(self, &ctx.member.user, claim.coupon_drop_id).await?;
        Ok(ClaimReply {
            claim: to_json(&claimed)?,
        })
    }
}

fn to_json(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(e.into()))
}
