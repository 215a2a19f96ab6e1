//! Payments and refunds.
//!
//! The payment provider calls `POST /v1/payments/webhook` with a JSON event
//! signed in `X-Hawker-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is
//! HMAC-SHA256 of `"<t>.<raw body>"` under the shared webhook secret
//! ([`sign`]). A missing, malformed, wrong or stale (more than five minutes
//! off) signature is refused with `bad_signature` and changes nothing.
//!
//! An event is applied once: `payment.provider_event_id` is unique and a
//! repeat answers the first outcome. Applying it locks the order row, so a
//! payment racing the expiry sweeper or another payment sees one state:
//! - pending and not expired: the order is `paid` (outcome `applied`);
//! - cancelled, or pending past its expiry: the order is `refund_due` (outcome
//!   `refund_due`): money that arrived too late is never silently kept;
//! - already paid (or refunded): outcome `duplicate_order`, the order is untouched.

use chrono::{DateTime, Utc};
use hawker_core::{Claims, Role};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::order::Source;
use crate::Commerce;
use hawker_core::error::{Error, Result};
use hawker_hub::{Notice, Publication};

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the provider's signature.
pub const SIGNATURE_HEADER: &str = "X-Hawker-Signature";
/// How far a signature's timestamp may be from now, either way.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// The event type that pays an order; other types are acknowledged and ignored.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";

fn mac(secret: &str) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length (long ones are hashed first).
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// The `X-Hawker-Signature` value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn bad_signature(why: &str) -> Error {
    Error::invalid(
        "bad_signature",
        format!("the webhook signature is refused: {why}"),
    )
}

/// Checks `header` (the `X-Hawker-Signature` value) against `body` at `now`
/// (unix seconds). Several `v1` values are allowed (secret rotation): one
/// must match. The comparison is constant-time.
pub fn verify_signature(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<()> {
    let header = header.ok_or_else(|| bad_signature("the X-Hawker-Signature header is missing"))?;
    let mut t: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| bad_signature("expected `t=<unix seconds>,v1=<hex>`"))?;
        match name {
            "t" => {
                if t.is_some() {
                    return Err(bad_signature("more than one timestamp"));
                }
                t = Some(
                    value
                        .parse()
                        .map_err(|_| bad_signature("the timestamp is not a number"))?,
                );
            }
            "v1" => signatures.push(hex::decode(value).map_err(|_| bad_signature("v1 is not hex"))?),
            // Other schemes may be added by the provider; they are not ours to check.
            _ => {}
        }
    }
    let t = t.ok_or_else(|| bad_signature("the timestamp `t` is missing"))?;
    if signatures.is_empty() {
        return Err(bad_signature("no v1 signature"));
    }
    if now.abs_diff(t) > SIGNATURE_TOLERANCE_SECS.unsigned_abs() {
        return Err(bad_signature("the timestamp is more than five minutes away"));
    }
    let mut expected = mac(secret);
    expected.update(t.to_string().as_bytes());
    expected.update(b".");
    expected.update(body);
    let matches = signatures
        .iter()
        .any(|s| expected.clone().verify_slice(s).is_ok());
    if matches {
        Ok(())
    } else {
        Err(bad_signature("it does not match the body"))
    }
}

/// A provider event, as the webhook receives it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"event_id": "evt_1Nq2", "type": "payment.succeeded",
    "order_id": "0192f0c4-7f6e-7a51-9c1e-3f0b8e7d2a10", "amount_minor": 1999, "currency": "USD"}))]
pub struct PaymentEvent {
    /// The provider's id of this event (1 to 200 characters, no NUL); a repeat is answered once.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub event_id: String,
    /// `payment.succeeded`; other types are acknowledged with outcome `ignored`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub order_id: Uuid,
    /// Must equal the order's amount.
    pub amount_minor: i64,
    /// Must equal the order's currency.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// What a webhook event did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookOutcome {
    /// `applied` (the order is paid), `refund_due` (it arrived after expiry or
    /// cancellation: the money is to be returned), `duplicate_order` (the order
    /// was already paid: report it), or `ignored` (not a payment event).
    pub outcome: String,
    pub order_id: Uuid,
    /// The recorded payment (none for `ignored`).
    pub payment_id: Option<Uuid>,
    /// True when this event id was seen before: this is the first answer again.
    pub replayed: bool,
}

/// Verifies and applies one webhook call. `signature` is the
/// `X-Hawker-Signature` header, `body` the raw request body.
#[tracing::instrument(skip_all)]
pub async fn handle_webhook(c: &Commerce, signature: Option<&str>, body: &[u8]) -> Result<WebhookOutcome> {
    verify_signature(&c.inner.webhook_secret, signature, body, Utc::now().timestamp())?;
    let event: PaymentEvent = serde_json::from_slice(body)
        .map_err(|e| Error::invalid("bad_event", format!("the event is not valid JSON: {e}")))?;
    let id = &event.event_id;
    if id.is_empty() || id.chars().count() > 200 || id.contains('\0') {
        return Err(Error::invalid(
            "bad_event",
            "event_id must be 1 to 200 characters, without NUL",
        ));
    }
    if event.event_type != PAYMENT_SUCCEEDED {
        tracing::info!(event_type = %event.event_type, "webhook event ignored");
        return Ok(WebhookOutcome {
            outcome: "ignored".into(),
            order_id: event.order_id,
            payment_id: None,
            replayed: false,
        });
    }
    let outcome = apply_payment(c, &event).await?;
    metrics::counter!("hawker_payments_total", "outcome" => outcome_label(&outcome.outcome)).increment(1);
    tracing::info!(
        order_id = %outcome.order_id,
        outcome = %outcome.outcome,
        replayed = outcome.replayed,
        "payment event"
    );
    Ok(outcome)
}

fn outcome_label(outcome: &str) -> &'static str {
    match outcome {
        "applied" => "applied",
        "refund_due" => "refund_due",
        "duplicate_order" => "duplicate_order",
        _ => "other",
    }
}

async fn previous_outcome(
    tx: &mut Transaction<'_, Postgres>,
    event_id: &str,
) -> sqlx::Result<Option<WebhookOutcome>> {
    let row: Option<(Uuid, Uuid, String)> =
        sqlx::query_as("select payment_id, order_id, outcome from payment where provider_event_id = $1")
            .bind(event_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(|(payment_id, order_id, outcome)| WebhookOutcome {
        outcome,
        order_id,
        payment_id: Some(payment_id),
        replayed: true,
    }))
}

#[derive(sqlx::FromRow)]
struct LockedOrder {
    session_id: Uuid,
    buyer_id: String,
    source: Source,
    deal_id: Option<Uuid>,
    auction_id: Option<Uuid>,
    giveaway_id: Option<Uuid>,
    group_buy_id: Option<Uuid>,
    quantity: i32,
    amount_minor: i64,
    currency: String,
    status: String,
    expired: bool,
}

async fn apply_payment(c: &Commerce, event: &PaymentEvent) -> Result<WebhookOutcome> {
    let mut tx = c.db().begin().await?;
    if let Some(previous) = previous_outcome(&mut tx, &event.event_id).await? {
        return Ok(previous);
    }
    let order: LockedOrder = sqlx::query_as(
        "select session_id, buyer_id, source, deal_id, auction_id, giveaway_id, group_buy_id, quantity, amount_minor,
                currency, status, expires_at <= now() as expired
           from customer_order where order_id = $1 for update",
    )
    .bind(event.order_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("order"))?;
    // A concurrent delivery of the same event held the lock first.
    if let Some(previous) = previous_outcome(&mut tx, &event.event_id).await? {
        return Ok(previous);
    }
    if event.amount_minor != order.amount_minor || event.currency != order.currency {
        return Err(Error::invalid(
            "amount_mismatch",
            format!(
                "the order is {} {}, the payment {} {}",
                order.amount_minor, order.currency, event.amount_minor, event.currency
            ),
        ));
    }
    let payment_id = Uuid::now_v7();
    let (outcome, new_status, reason) = match order.status.as_str() {
        "pending_payment" if !order.expired => ("applied", Some("paid"), "paid"),
        "pending_payment" => ("refund_due", Some("refund_due"), "paid_after_expiry"),
        "cancelled" => ("refund_due", Some("refund_due"), "paid_after_cancellation"),
        // Owed back already; a further payment is owed back too.
        "refund_due" => ("refund_due", None, "paid_again"),
        "paid" | "partially_refunded" | "refunded" => ("duplicate_order", None, "already_paid"),
        other => {
            return Err(Error::Internal(anyhow::anyhow!(
                "order {} has unknown status {other}",
                event.order_id
            )))
        }
    };
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into payment (payment_id, provider_event_id, order_id, amount_minor, currency, outcome)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (provider_event_id) do nothing
         returning payment_id",
    )
    .bind(payment_id)
    .bind(&event.event_id)
    .bind(event.order_id)
    .bind(event.amount_minor)
    .bind(&event.currency)
    .bind(outcome)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        // The same event id, committed meanwhile for another order id.
        tx.rollback().await?;
        let mut tx = c.db().begin().await?;
        return previous_outcome(&mut tx, &event.event_id)
            .await?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("payment event vanished")));
    }
    if let Some(new_status) = new_status {
        // Leaving `cancelled_at` as it is: on a pending order past its expiry it
        // stays null, which says its units were not returned by the sweeper.
        sqlx::query(
            "update customer_order set status = $2, paid_at = case when $2 = 'paid' then now() else paid_at end
              where order_id = $1",
        )
        .bind(event.order_id)
        .bind(new_status)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into order_event (order_id, from_status, to_status, detail) values ($1, $2, $3, $4)",
        )
        .bind(event.order_id)
        .bind(&order.status)
        .bind(new_status)
        .bind(json!({
            "reason": reason,
            "payment_id": payment_id,
            "provider_event_id": event.event_id,
            "amount_minor": event.amount_minor,
        }))
        .execute(&mut *tx)
        .await?;
    }
    if outcome == "applied" {
        // The buyer alone hears of the payment; the room at most counts sales.
        c.hub()
            .enqueue_notice(
                &mut tx,
                &Notice::new(
                    &order.buyer_id,
                    "order.paid",
                    json!({
                        "order_id": event.order_id,
                        "session_id": order.session_id,
                        "source": order.source,
                        "deal_id": order.deal_id,
                        "auction_id": order.auction_id,
                        "giveaway_id": order.giveaway_id,
                        "group_buy_id": order.group_buy_id,
                        "quantity": order.quantity,
                        "amount_minor": order.amount_minor,
                        "currency": order.currency,
                    }),
                ),
            )
            .await?;
        if let Some(deal_id) = order.deal_id {
            announce_sales(&mut tx, order.session_id, deal_id).await?;
        }
    }
    tx.commit().await?;
    Ok(WebhookOutcome {
        outcome: outcome.into(),
        order_id: event.order_id,
        payment_id: Some(payment_id),
        replayed: false,
    })
}

/// `deal.sales` (the deal's paid orders and units, no buyer, no amount)
/// for a deal whose host shows its sales.
async fn announce_sales(tx: &mut sqlx::PgConnection, session_id: Uuid, deal_id: Uuid) -> Result<()> {
    let sales: Option<(i64, i64)> = sqlx::query_as(
        "select count(o.order_id), coalesce(sum(o.quantity), 0)::bigint
           from deal d left join customer_order o
             on o.deal_id = d.deal_id and o.status in ('paid', 'partially_refunded', 'refunded')
          where d.deal_id = $1 and d.show_sales
          group by d.deal_id",
    )
    .bind(deal_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((paid_orders, paid_units)) = sales {
        hawker_hub::durable::enqueue(
            tx,
            session_id,
            &Publication::new(
                "deal.sales",
                json!({ "deal_id": deal_id, "paid_orders": paid_orders, "paid_units": paid_units }),
            ),
        )
        .await?;
    }
    Ok(())
}

/// A refund or return of (part of) a paid order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refund {
    pub refund_id: Uuid,
    pub order_id: Uuid,
    pub amount_minor: i64,
    pub reason: String,
    /// `refund` or `return`.
    pub kind: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The order's status after this refund: `partially_refunded` or `refunded`.
    pub order_status: String,
    /// Everything refunded on the order so far, this refund included.
    pub refunded_minor: i64,
    /// The order's amount.
    pub order_amount_minor: i64,
}

/// Longest refund reason.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(sqlx::FromRow)]
struct RefundableOrder {
    status: String,
    amount_minor: i64,
    session_id: Uuid,
    brand_id: Uuid,
}

/// Records a refund (`kind` = `refund`) or a return (`return`) of
/// `amount_minor` on a paid order. Admins, the session's agency and the
/// brand owning the SKU may do this; others who may see the order are
/// refused (403), anyone else is told it does not exist (404). The order row is locked, so concurrent
/// refunds can never add up to more than the order's amount.
#[tracing::instrument(skip(c, claims, reason), fields(caller = %claims.sub))]
pub async fn refund(
    c: &Commerce,
    claims: &Claims,
    order_id: Uuid,
    amount_minor: i64,
    reason: &str,
    kind: &str,
) -> Result<Refund> {
    if amount_minor <= 0 {
        return Err(Error::invalid("bad_amount", "amount_minor must be at least 1"));
    }
    if kind != "refund" && kind != "return" {
        return Err(Error::invalid("bad_kind", "kind must be `refund` or `return`"));
    }
    if reason.chars().count() > MAX_REASON_CHARS || hawker_core::text::hidden_char(reason, false).is_some() {
        return Err(Error::invalid(
            "bad_reason",
            format!("reason must be at most {MAX_REASON_CHARS} characters, without control, bidi or zero-width characters"),
        ));
    }
    let mut tx = c.db().begin().await?;
    let refund = match refund_in(&mut tx, claims, order_id, amount_minor, reason, kind).await {
        Ok(refund) => refund,
        Err(Error::Forbidden { message }) => {
            tx.rollback().await?;
            // Those who may not know of the order are told it does not exist.
            let (buyer_id, session_id): (String, Uuid) =
                sqlx::query_as("select buyer_id, session_id from customer_order where order_id = $1")
                    .bind(order_id)
                    .fetch_optional(c.db())
                    .await?
                    .ok_or(Error::NotFound("order"))?;
            if !crate::order::may_see(c, claims, order_id, &buyer_id, session_id).await? {
                return Err(Error::NotFound("order"));
            }
            return Err(Error::Forbidden { message });
        }
        Err(e) => return Err(e),
    };
    tx.commit().await?;
    metrics::counter!("hawker_refunds_total", "kind" => if kind == "return" { "return" } else { "refund" })
        .increment(1);
    Ok(refund)
}

/// [`refund`] inside the caller's transaction (an approved return refunds in
/// the transaction that approves it). `amount_minor`, `reason` and `kind` are
/// already checked; the caller counts the metric after its commit.
pub(crate) async fn refund_in(
    tx: &mut Transaction<'_, Postgres>,
    claims: &Claims,
    order_id: Uuid,
    amount_minor: i64,
    reason: &str,
    kind: &str,
) -> Result<Refund> {
    let order: RefundableOrder = sqlx::query_as(
        "select o.status, o.amount_minor, o.session_id, p.brand_id
           from customer_order o
           join sku k on k.sku_id = o.sku_id
           join product p on p.product_id = k.product_id
          where o.order_id = $1
            for update of o",
    )
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::NotFound("order"))?;
    // The session's agency comes from `hawker-agency`, read in this transaction.
    let session = hawker_agency::access::load_session_on(tx, order.session_id).await?;
    let allowed = match claims.role {
        Role::Admin => true,
        Role::Agency => claims.agency_id == Some(session.agency_id),
        Role::Brand => claims.brand_id == Some(order.brand_id),
        Role::Host | Role::Viewer => false,
    };
    if !allowed {
        // `refund` turns this into 404 for those who may not know of the order.
        return Err(Error::forbidden(
            "only an admin, the session's agency or the product's brand may refund this order",
        ));
    }
    if order.status != "paid" && order.status != "partially_refunded" {
        return Err(Error::conflict(
            "order_not_paid",
            format!("only paid orders can be refunded; this one is {}", order.status),
        ));
    }
    let already: i64 =
        sqlx::query_scalar("select coalesce(sum(amount_minor), 0)::bigint from refund where order_id = $1")
            .bind(order_id)
            .fetch_one(&mut **tx)
            .await?;
    let refunded = already.saturating_add(amount_minor);
    if refunded > order.amount_minor {
        return Err(Error::conflict(
            "refund_exceeds_amount",
            format!(
                "the order is {} and {} is refunded already: at most {} more",
                order.amount_minor,
                already,
                order.amount_minor.saturating_sub(already)
            ),
        ));
    }
    let order_status = if refunded == order.amount_minor {
        "refunded"
    } else {
        "partially_refunded"
    };
    let refund_id = Uuid::now_v7();
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "insert into refund (refund_id, order_id, amount_minor, reason, kind, created_by)
         values ($1, $2, $3, $4, $5, $6) returning created_at",
    )
    .bind(refund_id)
    .bind(order_id)
    .bind(amount_minor)
    .bind(reason)
    .bind(kind)
    .bind(&claims.sub)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("update customer_order set status = $2 where order_id = $1")
        .bind(order_id)
        .bind(order_status)
        .execute(&mut **tx)
        .await?;
    sqlx::query("insert into order_event (order_id, from_status, to_status, detail) values ($1, $2, $3, $4)")
        .bind(order_id)
        .bind(&order.status)
        .bind(order_status)
        .bind(json!({
            "refund_id": refund_id,
            "kind": kind,
            "amount_minor": amount_minor,
            "refunded_minor": refunded,
            "reason": reason,
            "by": claims.sub,
        }))
        .execute(&mut **tx)
        .await?;
    Ok(Refund {
        refund_id,
        order_id,
        amount_minor,
        reason: reason.to_string(),
        kind: kind.to_string(),
        created_by: claims.sub.clone(),
        created_at,
        order_status: order_status.to_string(),
        refunded_minor: refunded,
        order_amount_minor: order.amount_minor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-webhook-secret";
    const BODY: &[u8] = br#"{"event_id":"e1"}"#;

    fn code(r: Result<()>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn a_signature_made_by_sign_verifies() {
        let header = sign(SECRET, 1_700_000_000, BODY);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            code(verify_signature(SECRET, Some(&header), BODY, 1_700_000_010)),
            "ok"
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // printf '1.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign("key", 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn forged_stale_and_malformed_signatures_are_refused() {
        let now = 1_700_000_000;
        let good = sign(SECRET, now, BODY);
        let cases: Vec<Option<String>> = vec![
            None,
            Some(String::new()),
            Some("garbage".into()),
            Some(format!("v1={}", &good[good.find("v1=").unwrap() + 3..])),
            Some(format!("t={now}")),
            Some(format!("t={now},v1=zz")),
            Some(sign("another-secret", now, BODY)),
            Some(sign(SECRET, now - 301, BODY)),
            Some(sign(SECRET, now + 301, BODY)),
            Some(sign(SECRET, now, br#"{"event_id":"e2"}"#)),
            Some(good.replace(&format!("t={now}"), &format!("t={}", now - 1))),
        ];
        for header in cases {
            assert_eq!(
                code(verify_signature(SECRET, header.as_deref(), BODY, now)),
                "bad_signature",
                "{header:?}"
            );
        }
    }

    #[test]
    fn one_matching_v1_of_several_is_enough() {
        let now = 1_700_000_000;
        let good = sign(SECRET, now, BODY);
        let v1 = &good[good.find("v1=").unwrap()..];
        let rotated = format!("t={now}, v1={}, {v1}", "00".repeat(32));
        assert_eq!(code(verify_signature(SECRET, Some(&rotated), BODY, now)), "ok");
    }

    #[test]
    fn a_signature_at_the_edge_of_the_window_verifies() {
        let now = 1_700_000_000;
        assert_eq!(
            code(verify_signature(
                SECRET,
                Some(&sign(SECRET, now - 300, BODY)),
                BODY,
                now
            )),
            "ok"
        );
    }
}

/// Fuzz targets of the webhook signature parser (proptest; `cargo test` runs
/// a bounded number of cases). Whatever the header, [`verify_signature`]
/// never panics and refuses with `bad_signature` only; a header made by
/// [`sign`] within the tolerance always verifies, and any change to its
/// timestamp, signature or body is refused.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &str = "a-fuzzing-webhook-secret";
    const NOW: i64 = 1_800_000_000;

    fn refused_as_bad_signature(result: Result<()>) -> std::result::Result<(), TestCaseError> {
        match result {
            Ok(()) => Err(TestCaseError::fail("a forged header verified")),
            Err(e) => {
                prop_assert_eq!(e.code(), "bad_signature");
                Ok(())
            }
        }
    }

    /// Header parts: well-formed, near misses and garbage.
    fn part() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|t| format!("t={t}")),
            (NOW - 400..NOW + 400).prop_map(|t| format!("t={t}")),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| format!("v1={}", hex::encode(b))),
            "[0-9a-fA-F]{0,70}".prop_map(|h| format!("v1={h}")),
            ".{0,30}".prop_map(|v| format!("v1={v}")),
            ".{0,30}".prop_map(|v| format!("t={v}")),
            "[a-z0-9]{0,4}=.{0,10}",
            ".{0,20}",
            Just(String::new()),
            Just("=".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_header_text_is_refused_as_bad_signature(header in ".{0,300}", body in prop::collection::vec(any::<u8>(), 0..64)) {
            refused_as_bad_signature(verify_signature(SECRET, Some(&header), &body, NOW))?;
        }

        #[test]
        fn any_combination_of_header_parts_is_refused_as_bad_signature(
            parts in prop::collection::vec(part(), 0..6),
            separator in prop::sample::select(vec![",", ", ", ",,", ";"]),
            now in any::<i64>(),
        ) {
            let header = parts.join(separator);
            refused_as_bad_signature(verify_signature(SECRET, Some(&header), b"{}", now))?;
        }

        #[test]
        fn a_signed_header_verifies_only_unchanged_and_in_time(
            skew in -300i64..=300,
            late in 301i64..1_000_000,
            body in prop::collection::vec(any::<u8>(), 0..64),
            flip in any::<prop::sample::Index>(),
        ) {
            let t = NOW + skew;
            let header = sign(SECRET, t, &body);
            prop_assert!(verify_signature(SECRET, Some(&header), &body, NOW).is_ok());
            // Rotation: another v1 beside the right one still verifies.
            let rotated = format!("{header},v1={}", "00".repeat(32));
            prop_assert!(verify_signature(SECRET, Some(&rotated), &body, NOW).is_ok());
            // Stale or early by more than the tolerance.
            refused_as_bad_signature(verify_signature(SECRET, Some(&header), &body, t + late))?;
            refused_as_bad_signature(verify_signature(SECRET, Some(&header), &body, t - late))?;
            // Another secret, another body, one hex digit of the signature changed.
            refused_as_bad_signature(verify_signature("another-secret", Some(&header), &body, NOW))?;
            let mut other = body.clone();
            other.push(b' ');
            refused_as_bad_signature(verify_signature(SECRET, Some(&header), &other, NOW))?;
            let (head, mac) = header.split_at(header.len() - 64);
            let at = flip.index(64);
            let mut digits: Vec<u8> = mac.bytes().collect();
            digits[at] = if digits[at] == b'0' { b'1' } else { b'0' };
            let tampered = format!("{head}{}", String::from_utf8(digits).unwrap_or_default());
            refused_as_bad_signature(verify_signature(SECRET, Some(&tampered), &body, NOW))?;
        }
    }
}
