//! Commerce commands on the room socket: `deal.buy` and `coupon.claim`.

use hawker_hub::hub::{CommandContext, CommandError, CommandFuture, CommandHandler};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::orders::{place_order, PlaceOrder};
use crate::Commerce;
use hawker_core::error::Error;

fn to_command_error(e: Error) -> CommandError {
    if let Error::Internal(ref inner) = e {
        tracing::error!(error = ?inner, "socket command failed");
        return CommandError::new("internal", "an internal error occurred; it has been logged");
    }
    CommandError::new(e.code(), e.to_string())
}

fn uuid_field(data: &Value, field: &str) -> Result<Uuid, CommandError> {
    data.get(field)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| CommandError::new("bad_command", format!("`{field}` must be a UUID")))
}

impl CommandHandler for Commerce {
    fn handle<'a>(&'a self, ctx: CommandContext, kind: &'a str, data: Value) -> Option<CommandFuture<'a>> {
        match kind {
            "deal.buy" => Some(Box::pin(async move {
                let deal_id = uuid_field(&data, "deal_id")?;
                let key = data
                    .get("idempotency_key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CommandError::new("bad_command", "`idempotency_key` is required"))?;
                let quantity = match data.get("quantity") {
                    None | Some(Value::Null) => 1,
                    Some(q) => q
                        .as_i64()
                        .and_then(|q| i32::try_from(q).ok())
                        .ok_or_else(|| CommandError::new("bad_quantity", "quantity must be an integer"))?,
                };
                let coupon_claim_id = match data.get("coupon_claim_id") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(uuid_field(&data, "coupon_claim_id")?),
                };
                let placed = place_order(
                    self,
                    &ctx.member.user,
                    deal_id,
                    key,
                    PlaceOrder {
                        quantity,
                        coupon_claim_id,
                    },
                )
                .await
                .map_err(to_command_error)?;
                Ok(json!({ "order": placed.order, "replayed": placed.replayed }))
            })),
            "coupon.claim" => Some(Box::pin(async move {
                let drop_id = uuid_field(&data, "coupon_drop_id")?;
                let claim = crate::coupons::claim(self, &ctx.member.user, drop_id)
                    .await
                    .map_err(to_command_error)?;
                Ok(json!({ "claim": claim }))
            })),
            _ => None,
        }
    }
}
