//! Commerce commands on the room socket: `deal.buy` and `coupon.claim`.
//!
//! The hub parses them (fields and their `bad_command` / `bad_quantity`
//! errors) and calls [`CommerceCommands`] on the handler the server gave
//! the socket. Here they run the same code as their HTTP twins, so the
//! rules and error codes are the same.

use hawker_core::error::{Error, Result};
use hawker_hub::{Buy, BuyReply, Claim, ClaimReply, CommandContext, CommerceCommands, CommerceFuture};
use serde::Serialize;
use serde_json::Value;

use crate::purchase::{place_order, PlaceOrder};
use crate::Commerce;

impl CommerceCommands for Commerce {
    fn buy<'a>(&'a self, ctx: &'a CommandContext, buy: Buy) -> CommerceFuture<'a, BuyReply> {
        Box::pin(async move {
            let request = PlaceOrder {
                quantity: buy.quantity,
                coupon_claim_id: buy.coupon_claim_id,
            };
            let placed =
                place_order(self, &ctx.member.user, buy.deal_id, &buy.idempotency_key, request).await?;
            Ok(BuyReply {
                order: to_json(&placed.order)?,
                replayed: placed.replayed,
            })
        })
    }

    fn claim<'a>(&'a self, ctx: &'a CommandContext, claim: Claim) -> CommerceFuture<'a, ClaimReply> {
        Box::pin(async move {
            let claimed = crate::coupons::claim(self, &ctx.member.user, claim.coupon_drop_id).await?;
            Ok(ClaimReply {
                claim: to_json(&claimed)?,
            })
        })
    }
}

fn to_json(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(e.into()))
}
