//! The entry of a purchase: `place_order` checks the request, asks the gate,
//! hands an admitted request to the settlement and answers after the commit;
//! a repeated idempotency key is replayed.

use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::gate::{Admission, Reservation, ReservationKey};
use super::settle::{SettleOutcome, SettleRequest};
use crate::order::{self, Order};
use crate::Commerce;
use hawker_core::error::{Error, Result};

/// Most units in one order.
pub const MAX_QUANTITY: i32 = 100;

/// The body of a purchase.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1 to 100 units.
    pub quantity: i32,
    /// A coupon the buyer claimed, applied by the server.
    #[serde(default)]
    pub coupon_claim_id: Option<Uuid>,
}

/// A purchase's answer: the order, and whether it is a replay of an earlier request.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
}

/// Hash of what the request asks for, to tell a retry from a reused key.
pub fn request_hash(deal_id: Uuid, request: &PlaceOrder) -> String {
    let mut hasher = Sha256::new();
    hasher.update(deal_id.as_bytes());
    hasher.update(request.quantity.to_be_bytes());
    if let Some(coupon) = request.coupon_claim_id {
        hasher.update(coupon.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

/// Longest idempotency key, in bytes (= characters: keys are ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// 1 to 200 printable ASCII characters (`' '` to `'~'`), not starting or
/// ending with a space: what an HTTP header can carry (the OpenAPI pattern
/// `^[!-~]([ -~]{0,198}[!-~])?$`), and nothing Postgres or the gate's
/// `buyer\nkey` fields could choke on (NUL, newlines, other control or
/// non-ASCII characters). Checked before a request reaches the gate or a
/// batch, so a poisoned key is refused alone and never fails a batch.
pub fn validate_idempotency_key(key: &str) -> Result<()> {
    let bytes = key.as_bytes();
    let printable = bytes.iter().all(|b| (b' '..=b'~').contains(b));
    let trimmed = bytes.first() != Some(&b' ') && bytes.last() != Some(&b' ');
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN || !printable || !trimmed {
        return Err(bad_idempotency_key());
    }
    Ok(())
}

/// The refusal of a key that breaks [`validate_idempotency_key`]'s rule.
pub fn bad_idempotency_key() -> Error {
    Error::invalid(
        "bad_idempotency_key",
        "Idempotency-Key must be 1 to 200 printable ASCII characters, not starting or ending with a space",
    )
}

/// One purchase attempt, as the entry passes it around.
struct Attempt<'a> {
    deal_id: Uuid,
    key: ReservationKey,
    request: &'a PlaceOrder,
    hash: String,
}

/// Buys `request.quantity` units of a deal for `buyer`.
#[tracing::instrument(skip(c, request), fields(quantity = request.quantity))]
pub async fn place_order(
    c: &Commerce,
    buyer: &str,
    deal_id: Uuid,
    idempotency_key: &str,
    request: PlaceOrder,
) -> Result<Placed> {
    validate_idempotency_key(idempotency_key)?;
    if !(1..=MAX_QUANTITY).contains(&request.quantity) {
        return Err(Error::invalid(
            "bad_quantity",
            format!("quantity must be 1 to {MAX_QUANTITY}"),
        ));
    }
    if c.inner.settler.database_down() {
        return Err(Error::Unavailable { what: "the database" });
    }
    // A deal that sold out: this node's copy of its gate answers most of the
    // crowd, before anything is hashed or copied for the gate.
    if let Some(refused) = c.inner.gate.answer_from_copy(deal_id, buyer, idempotency_key) {
        return Err(refusal(refused));
    }
    let attempt = Attempt {
        deal_id,
        key: ReservationKey::new(buyer, idempotency_key),
        hash: request_hash(deal_id, &request),
        request: &request,
    };
    let mut admission = admit(c, &attempt).await?;
    for _ in 0..20 {
        if admission != Admission::Missing {
            break;
        }
        c.inner.gate.rebuild(deal_id).await?;
        admission = admit(c, &attempt).await?;
    }
    match admission {
        Admission::Admitted => settle(c, &attempt, true).await,
        Admission::Repeat(previous) => replay(c, &attempt, previous).await,
        refused => Err(refusal(refused)),
    }
}

/// The answer to an attempt the gate did not admit and that is no repeat.
fn refusal(admission: Admission) -> Error {
    match admission {
        Admission::NotStarted => Error::conflict("deal_not_started", "the deal has not started yet"),
        Admission::Ended => Error::conflict("deal_ended", "the deal has ended"),
        Admission::SoldOut => Error::conflict("sold_out", "the deal is sold out"),
        Admission::CapExceeded { held } => Error::conflict(
            "cap_exceeded",
            format!("the per-buyer cap would be exceeded (you hold {held})"),
        ),
        // `Missing` once the rebuilds were spent; `Admitted` and `Repeat`
        // never come here.
        Admission::Missing | Admission::Admitted | Admission::Repeat(_) => Error::Unavailable {
            what: "the admission gate",
        },
    }
}

async fn admit(c: &Commerce, attempt: &Attempt<'_>) -> Result<Admission> {
    c.inner
        .gate
        .admit(
            attempt.deal_id,
            &attempt.key,
            attempt.request.quantity,
            &attempt.hash,
        )
        .await
}

/// Hands the admitted request to the settlement and waits for its commit.
/// `reserved_now`: the gate reserved units for this attempt just now.
async fn settle(c: &Commerce, attempt: &Attempt<'_>, reserved_now: bool) -> Result<Placed> {
    let outcome = c
        .inner
        .settler
        .submit(SettleRequest {
            deal_id: attempt.deal_id,
            buyer: attempt.key.buyer.clone(),
            quantity: attempt.request.quantity,
            idempotency_key: attempt.key.idempotency_key.clone(),
            request_hash: attempt.hash.clone(),
            coupon_claim_id: attempt.request.coupon_claim_id,
            reserved_now,
        })
        .await?;
    match outcome {
        SettleOutcome::Created(order) => Ok(Placed {
            order,
            replayed: false,
        }),
        SettleOutcome::Existing(order) => Ok(Placed {
            order,
            replayed: true,
        }),
        SettleOutcome::Rejected(error) => Err(error),
    }
}

/// A repeated (buyer, key): the first answer if the body is the same.
async fn replay(c: &Commerce, attempt: &Attempt<'_>, previous: Reservation) -> Result<Placed> {
    let Reservation::Pending { request_hash, .. } = &previous else {
        // Settled: the order store has it.
        return match order::find_by_key(c, &attempt.key.buyer, &attempt.key.idempotency_key).await? {
            Some(order) => same_request(c, order, &attempt.hash).await,
            None => Err(Error::Unavailable {
                what: "the order store",
            }),
        };
    };
    // Reserved but not settled: in flight, or its node died before the
    // commit. The reservation belongs to this key, so settle it now (the
    // settlement returns the existing order if there is one).
    if *request_hash != attempt.hash {
        return Err(reused());
    }
    for _ in 0..50 {
        if let Some(order) = order::find_by_key(c, &attempt.key.buyer, &attempt.key.idempotency_key).await? {
            return same_request(c, order, &attempt.hash).await;
        }
        // Give an in-flight settlement a moment before taking over.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if admit(c, attempt).await? != Admission::Repeat(previous.clone()) {
            break;
        }
    }
    settle(c, attempt, false).await
}

fn reused() -> Error {
    Error::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

/// The order, as a replay, if it was made by the same request.
async fn same_request(c: &Commerce, order: Order, hash: &str) -> Result<Placed> {
    if order::request_hash_of(c, order.order_id).await?.as_deref() == Some(hash) {
        Ok(Placed {
            order,
            replayed: true,
        })
    } else {
        Err(reused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_is_bounded_printable_ascii() {
        for good in ["k", "6f1c2a4e-buy-1", "a b", "~!", &"x".repeat(200)] {
            assert!(validate_idempotency_key(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            &"x".repeat(201),
            "a\0b",
            "\0",
            "a\nb",
            "a\rb",
            "a\tb",
            "\u{7f}",
            "caf\u{e9}",
            "\u{1F600}",
            " lead",
            "trail ",
            " ",
        ] {
            let refused = validate_idempotency_key(bad).expect_err(bad);
            assert_eq!(refused.code(), "bad_idempotency_key", "{bad:?}");
        }
    }
}
