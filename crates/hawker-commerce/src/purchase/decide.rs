//! Who gets what in a batch: a pure function of the batch's requests, in
//! arrival order, and of what Postgres said about them under the batch's
//! locks. No I/O, so every outcome has a unit test below. The settlement
//! decides a batch again, on the same requests, when a deal's guarded update
//! finds that another node sold meanwhile: `decide` is the same function of
//! the fresher row, so earlier requests still win.
//!
//! The checks, per request, in this order:
//! 1. its (buyer, key) already has an order: that order if the request is the
//!    same, `idempotency_key_reused` if not;
//! 2. the same (buyer, key) earlier in this batch: the answer of that request;
//! 3. the deal: gone (`not_found`), sold out, ended (or past `ends_at`), not started;
//!    a sold-out deal still sells to a buyer with an open waitlist offer, at
//!    most the offer's units, once (`crate::waitlist`);
//! 4. the buyer's cap, then the units left, both counting the requests
//!    accepted before it in this batch (earlier requests win the last units);
//! 5. the price: an amount that does not fit in an `i64` is refused alone
//!    (`bad_quantity`) instead of making Postgres refuse the whole batch;
//! 6. the coupon: the buyer's, unused (in Postgres and in this batch),
//!    dropped, from this deal's session, for this item and currency, and the
//!    minimum spend reached.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use crate::order::Order;
use crate::pricing::{self, Price};
use hawker_core::error::{Error, Result};

/// An admitted purchase, waiting for its commit.
#[derive(Debug, Clone)]
pub struct SettleRequest {
    pub deal_id: Uuid,
    pub buyer: String,
    pub quantity: i32,
    pub idempotency_key: String,
    /// What the request asks for, hashed (see `purchase::request_hash`).
    pub request_hash: String,
    pub coupon_claim_id: Option<Uuid>,
    /// This request's own admission reserved its units just now (not a
    /// replay settling an earlier reservation): if its key already has an
    /// order, those units go back to the gate.
    pub reserved_now: bool,
}

/// The answer to one admitted purchase.
#[derive(Debug)]
pub enum SettleOutcome {
    /// Committed now.
    Created(Order),
    /// This (buyer, key) already had an order with the same request.
    Existing(Order),
    /// Refused by Postgres' view (the gate's reservation is released).
    Rejected(Error),
}

/// A deal's row, read without a lock (the guarded update at the end decides).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DealRow {
    pub deal_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub price_minor: i64,
    pub currency: String,
    pub quantity: i32,
    pub sold: i32,
    pub per_buyer_cap: i32,
    pub status: String,
    pub end_reason: Option<String>,
    /// `starts_at <= now()` by Postgres' clock.
    pub started: bool,
    /// `ends_at <= now()` by Postgres' clock.
    pub over: bool,
    /// The campaign's floor per unit, which the amount after a coupon may
    /// not go below; none when the campaign allows it.
    pub floor_price_minor: Option<i64>,
}

/// A coupon claim with its drop's terms, read under lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub coupon_claim_id: Uuid,
    pub viewer_id: String,
    pub used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub discount_kind: String,
    pub discount_value: i64,
    pub currency: Option<String>,
    pub min_spend_minor: i64,
    pub lineup_item_id: Option<Uuid>,
    pub deal_id: Option<Uuid>,
    /// The drop's session: the coupon applies to that session's deals only.
    pub session_id: Uuid,
    /// The drop's status: `scheduled`, `dropped` or `ended`.
    pub status: String,
}

/// (buyer, idempotency key).
pub(crate) type BuyerKey = (String, String);

/// What Postgres said about a batch, read under the batch's locks.
#[derive(Debug, Default)]
pub(crate) struct Known {
    /// The batch's deals (a deal missing here no longer exists).
    pub deals: HashMap<Uuid, DealRow>,
    /// Units each buyer already holds, per (deal, buyer).
    pub held: HashMap<(Uuid, String), i32>,
    /// Orders that already exist for the batch's (buyer, key), with their request hash.
    pub existing: HashMap<BuyerKey, (Order, String)>,
    /// The coupon claims the batch names.
    pub claims: HashMap<Uuid, ClaimRow>,
    /// Open waitlist offers of the batch's buyers on sold-out deals:
    /// (deal, buyer) → units offered.
    pub offers: HashMap<(Uuid, String), i32>,
}

/// What was decided for one request before the insert.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Insert an order at this price.
    Accept(Price),
    Reject(Error),
    /// Its order exists and the request is the same: answer with it.
    Existing(Box<Order>),
    /// Same (buyer, key) as the earlier request at this index of the batch.
    SameAs(usize),
}

/// Decides each request of a batch, in arrival order.
pub(crate) fn decide(requests: &[SettleRequest], known: &Known) -> Vec<Decision> {
    let mut sold: HashMap<Uuid, i32> = known.deals.iter().map(|(id, d)| (*id, d.sold)).collect();
    let mut held = known.held.clone();
    let mut seen_keys: HashMap<BuyerKey, usize> = HashMap::new();
    let mut used_claims: HashSet<Uuid> = HashSet::new();
    let mut offers = known.offers.clone();
    let mut decisions = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let id_key = (r.buyer.clone(), r.idempotency_key.clone());
        if let Some((order, hash)) = known.existing.get(&id_key) {
            decisions.push(if *hash == r.request_hash {
                Decision::Existing(Box::new(order.clone()))
            } else {
                Decision::Reject(key_reused())
            });
            continue;
        }
        if let Some(first) = seen_keys.get(&id_key) {
            // The same key with another request (another deal, quantity or
            // coupon) is refused, as it would be after the first committed:
            // its buyer must not get the first one's order.
            decisions.push(if requests[*first].request_hash == r.request_hash {
                Decision::SameAs(*first)
            } else {
                Decision::Reject(key_reused())
            });
            continue;
        }
        seen_keys.insert(id_key, i);
        let Some(deal) = known.deals.get(&r.deal_id) else {
            decisions.push(Decision::Reject(Error::NotFound("deal")));
            continue;
        };
        let offer = offers.get(&(r.deal_id, r.buyer.clone())).copied();
        let decision = match deal_refusal(deal) {
            Some(refusal) => match offer {
                Some(offered) if on_offer(deal) => {
                    let units = held.get(&(r.deal_id, r.buyer.clone())).copied().unwrap_or(0);
                    if r.quantity > offered {
                        Decision::Reject(Error::conflict(
                            "sold_out",
                            format!("the deal is sold out; your waitlist offer is for {offered} units"),
                        ))
                    } else if units.saturating_add(r.quantity) > deal.per_buyer_cap {
                        Decision::Reject(Error::conflict(
                            "cap_exceeded",
                            "the per-buyer cap would be exceeded",
                        ))
                    } else {
                        match price(r, deal, &known.claims, &mut used_claims) {
                            Ok(price) => {
                                held.insert((r.deal_id, r.buyer.clone()), units + r.quantity);
                                // An offer is bought once.
                                offers.remove(&(r.deal_id, r.buyer.clone()));
                                Decision::Accept(price)
                            }
                            Err(e) => Decision::Reject(e),
                        }
                    }
                }
                _ => Decision::Reject(refusal),
            },
            None => {
                let units = held.get(&(r.deal_id, r.buyer.clone())).copied().unwrap_or(0);
                let deal_sold = sold.get(&r.deal_id).copied().unwrap_or(deal.quantity);
                if units.saturating_add(r.quantity) > deal.per_buyer_cap {
                    Decision::Reject(Error::conflict(
                        "cap_exceeded",
                        "the per-buyer cap would be exceeded",
                    ))
                } else if deal_sold.saturating_add(r.quantity) > deal.quantity {
                    Decision::Reject(sold_out())
                } else {
                    match price(r, deal, &known.claims, &mut used_claims) {
                        Ok(price) => {
                            held.insert((r.deal_id, r.buyer.clone()), units + r.quantity);
                            sold.insert(r.deal_id, deal_sold + r.quantity);
                            Decision::Accept(price)
                        }
                        Err(e) => Decision::Reject(e),
                    }
                }
            }
        };
        decisions.push(decision);
    }
    decisions
}

/// Each request's answer once the accepted ones were inserted: `created`
/// holds the orders the insert returned, by request index.
pub(crate) fn answers(decisions: Vec<Decision>, mut created: HashMap<usize, Order>) -> Vec<SettleOutcome> {
    let mut outcomes: Vec<SettleOutcome> = Vec::with_capacity(decisions.len());
    for (i, decision) in decisions.into_iter().enumerate() {
        let outcome = match decision {
            Decision::Accept(_) => match created.remove(&i) {
                Some(order) => SettleOutcome::Created(order),
                // Lost a race for its idempotency key with another node.
                None => SettleOutcome::Rejected(Error::Unavailable {
                    what: "the order (retry with the same key)",
                }),
            },
            Decision::Existing(order) => SettleOutcome::Existing(*order),
            Decision::Reject(e) => SettleOutcome::Rejected(e),
            Decision::SameAs(first) => match outcomes.get(first) {
                Some(SettleOutcome::Created(order) | SettleOutcome::Existing(order)) => {
                    SettleOutcome::Existing(order.clone())
                }
                _ => SettleOutcome::Rejected(Error::conflict(
                    "duplicate_request",
                    "the same request is being settled",
                )),
            },
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Units to take from each deal, once per deal, in deal id order (the order
/// every node takes deal rows in, so two batches never wait on each other in
/// a cycle). A total past `i32` is refused: Postgres could not hold it.
pub(crate) fn units_by_deal(orders: impl IntoIterator<Item = (Uuid, i32)>) -> Result<BTreeMap<Uuid, i32>> {
    let mut units: BTreeMap<Uuid, i32> = BTreeMap::new();
    for (deal_id, quantity) in orders {
        let total = units.entry(deal_id).or_default();
        *total = total
            .checked_add(quantity)
            .ok_or_else(|| Error::invalid("bad_quantity", "too many units in one batch"))?;
    }
    Ok(units)
}

fn key_reused() -> Error {
    Error::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

fn sold_out() -> Error {
    Error::conflict("sold_out", "the deal is sold out")
}

/// A sold-out deal whose time is not over: its waitlist offers may be bought.
fn on_offer(deal: &DealRow) -> bool {
    deal.end_reason.as_deref() == Some("sold_out") && !deal.over
}

/// Why nobody may buy from this deal now, if so.
fn deal_refusal(deal: &DealRow) -> Option<Error> {
    if deal.end_reason.as_deref() == Some("sold_out") {
        Some(sold_out())
    } else if deal.status == "ended" || deal.over {
        Some(Error::conflict("deal_ended", "the deal has ended"))
    } else if !deal.started {
        Some(Error::conflict(
            "deal_not_started",
            "the deal has not started yet",
        ))
    } else {
        None
    }
}

/// The request's price, with its coupon applied (marking the claim used in this batch).
fn price(
    r: &SettleRequest,
    deal: &DealRow,
    claims: &HashMap<Uuid, ClaimRow>,
    used: &mut HashSet<Uuid>,
) -> Result<Price> {
    let too_large = || Error::invalid("bad_quantity", "the order's amount is too large");
    let subtotal = pricing::subtotal_minor(deal.price_minor, r.quantity).ok_or_else(too_large)?;
    let discount = coupon_discount(r, deal, subtotal, claims, used)?;
    let price = pricing::price(deal.price_minor, r.quantity, discount).ok_or_else(too_large)?;
    if let Some(floor) = deal.floor_price_minor {
        let lowest = pricing::subtotal_minor(floor, r.quantity).ok_or_else(too_large)?;
        if price.amount_minor < lowest {
            // The coupon was not used after all: a later request may use it.
            if let Some(id) = r.coupon_claim_id {
                used.remove(&id);
            }
            return Err(Error::conflict(
                "coupon_below_floor",
                format!("with the coupon the order would cost less than the campaign's floor of {floor} minor units per unit"),
            ));
        }
    }
    Ok(price)
}

fn coupon_discount(
    r: &SettleRequest,
    deal: &DealRow,
    subtotal: i64,
    claims: &HashMap<Uuid, ClaimRow>,
    used: &mut HashSet<Uuid>,
) -> Result<i64> {
    let Some(claim_id) = r.coupon_claim_id else {
        return Ok(0);
    };
    let invalid = |why: &str| Error::conflict("coupon_invalid", format!("the coupon cannot be used: {why}"));
    let claim = claims.get(&claim_id).ok_or_else(|| invalid("no such claim"))?;
    if claim.viewer_id != r.buyer {
        return Err(invalid("it was claimed by someone else"));
    }
    if claim.used_at.is_some() || !used.insert(claim_id) {
        return Err(invalid("it was already used"));
    }
    if claim.status == "scheduled" {
        return Err(invalid("it has not dropped"));
    }
    if claim.session_id != deal.session_id {
        return Err(invalid("it is for another session"));
    }
    if claim.lineup_item_id.is_some_and(|l| l != deal.lineup_item_id)
        || claim.deal_id.is_some_and(|d| d != deal.deal_id)
    {
        return Err(invalid("it is for another item"));
    }
    if claim.discount_kind == "fixed" && claim.currency.as_deref() != Some(deal.currency.as_str()) {
        return Err(invalid("it is in another currency"));
    }
    pricing::discount_minor(
        &claim.discount_kind,
        claim.discount_value,
        claim.min_spend_minor,
        subtotal,
    )
    .ok_or_else(|| invalid("the order is below its minimum spend"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const PRICE: i64 = 1000;

    fn deal(quantity: i32, sold: i32, cap: i32) -> DealRow {
        DealRow {
            deal_id: Uuid::from_u128(1),
            session_id: Uuid::from_u128(2),
            lineup_item_id: Uuid::from_u128(3),
            sku_id: Uuid::from_u128(4),
            price_minor: PRICE,
            currency: "USD".into(),
            quantity,
            sold,
            per_buyer_cap: cap,
            status: "live".into(),
            end_reason: None,
            started: true,
            over: false,
            floor_price_minor: None,
        }
    }

    fn known(deal: DealRow) -> Known {
        Known {
            deals: HashMap::from([(deal.deal_id, deal)]),
            ..Known::default()
        }
    }

    fn request(buyer: &str, key: &str, quantity: i32) -> SettleRequest {
        SettleRequest {
            deal_id: Uuid::from_u128(1),
            buyer: buyer.into(),
            quantity,
            idempotency_key: key.into(),
            request_hash: format!("hash-{quantity}"),
            coupon_claim_id: None,
            reserved_now: true,
        }
    }

    fn order(buyer: &str, quantity: i32) -> Order {
        Order {
            order_id: Uuid::now_v7(),
            source: crate::order::Source::Deal,
            deal_id: Some(Uuid::from_u128(1)),
            auction_id: None,
            giveaway_id: None,
            group_buy_id: None,
            session_id: Uuid::from_u128(2),
            lineup_item_id: Uuid::from_u128(3),
            sku_id: Uuid::from_u128(4),
            buyer_id: buyer.into(),
            quantity,
            unit_price_minor: PRICE,
            discount_minor: 0,
            amount_minor: PRICE * i64::from(quantity),
            currency: "USD".into(),
            coupon_claim_id: None,
            status: "pending_payment".into(),
            created_at: Utc::now(),
            expires_at: Utc::now(),
            paid_at: None,
            cancelled_at: None,
            host_id: None,
        }
    }

    fn claim(id: u128, viewer: &str) -> ClaimRow {
        ClaimRow {
            coupon_claim_id: Uuid::from_u128(id),
            viewer_id: viewer.into(),
            used_at: None,
            discount_kind: "percent".into(),
            discount_value: 10,
            currency: None,
            min_spend_minor: 0,
            lineup_item_id: None,
            deal_id: None,
            session_id: Uuid::from_u128(2),
            status: "dropped".into(),
        }
    }

    fn with_coupon(mut r: SettleRequest, id: u128) -> SettleRequest {
        r.coupon_claim_id = Some(Uuid::from_u128(id));
        r
    }

    /// Each decision as a short label: `ok:<amount>`, `existing`, `same:<i>` or the refusal's code.
    fn labels(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .map(|d| match d {
                Decision::Accept(price) => format!("ok:{}", price.amount_minor),
                Decision::Reject(e) => e.code().to_string(),
                Decision::Existing(_) => "existing".into(),
                Decision::SameAs(i) => format!("same:{i}"),
            })
            .collect()
    }

    fn decided(requests: &[SettleRequest], known: &Known) -> Vec<String> {
        labels(&decide(requests, known))
    }

    #[test]
    fn a_sold_out_deal_sells_only_an_open_waitlist_offer_once() {
        let mut row = deal(10, 10, 2);
        row.status = "ended".into();
        row.end_reason = Some("sold_out".into());
        let mut known = known(row);
        known.offers.insert((Uuid::from_u128(1), "a".into()), 2);
        let batch = [
            request("b", "k", 1),
            request("a", "k1", 3),
            request("a", "k2", 2),
            request("a", "k3", 1),
        ];
        assert_eq!(
            decided(&batch, &known),
            ["sold_out", "sold_out", "ok:2000", "sold_out"]
        );
        // Past its end the offer is void.
        known.deals.get_mut(&Uuid::from_u128(1)).unwrap().over = true;
        assert_eq!(decided(&[request("a", "k", 1)], &known), ["sold_out"]);
    }

    #[test]
    fn the_happy_path_accepts_at_the_deal_price() {
        let known = known(deal(10, 0, 5));
        assert_eq!(
            decided(&[request("a", "k1", 2), request("b", "k1", 1)], &known),
            ["ok:2000", "ok:1000"]
        );
    }

    #[test]
    fn earlier_requests_win_the_last_units() {
        let known = known(deal(10, 7, 5));
        let batch = [
            request("a", "k", 2),
            request("b", "k", 2),
            request("c", "k", 1),
            request("d", "k", 1),
        ];
        // 3 left: a takes 2, b (2) does not fit, c takes the last, d finds none.
        assert_eq!(
            decided(&batch, &known),
            ["ok:2000", "sold_out", "ok:1000", "sold_out"]
        );
    }

    #[test]
    fn a_sold_out_deal_refuses_everyone() {
        let mut row = deal(10, 10, 5);
        assert_eq!(
            decided(&[request("a", "k", 1)], &known(row.clone())),
            ["sold_out"]
        );
        // Ended by selling out: sold_out, not deal_ended.
        row.status = "ended".into();
        row.end_reason = Some("sold_out".into());
        assert_eq!(decided(&[request("a", "k", 1)], &known(row)), ["sold_out"]);
    }

    #[test]
    fn an_ended_early_or_late_deal_says_so() {
        let mut ended = deal(10, 0, 5);
        ended.status = "ended".into();
        ended.end_reason = Some("ended_by_host".into());
        let mut over = deal(10, 0, 5);
        over.over = true;
        let mut early = deal(10, 0, 5);
        early.started = false;
        let r = [request("a", "k", 1)];
        assert_eq!(decided(&r, &known(ended)), ["deal_ended"]);
        assert_eq!(decided(&r, &known(over)), ["deal_ended"]);
        assert_eq!(decided(&r, &known(early)), ["deal_not_started"]);
    }

    #[test]
    fn the_cap_counts_held_units_and_this_batch() {
        let mut known = known(deal(100, 0, 3));
        known.held.insert((Uuid::from_u128(1), "a".into()), 1);
        let batch = [
            request("a", "k1", 1),
            request("a", "k2", 2),
            request("b", "k1", 3),
            request("b", "k2", 1),
        ];
        // a holds 1: +1 fits (2), +2 would make 4; b: 3 fits, one more does not.
        assert_eq!(
            decided(&batch, &known),
            ["ok:1000", "cap_exceeded", "ok:3000", "cap_exceeded"]
        );
    }

    #[test]
    fn the_cap_is_checked_before_the_units_left() {
        let known = known(deal(10, 10, 1));
        assert_eq!(decided(&[request("a", "k", 2)], &known), ["cap_exceeded"]);
    }

    #[test]
    fn an_existing_key_replays_or_is_refused_as_reused() {
        let mut known = known(deal(10, 10, 5));
        let earlier = order("a", 2);
        let earlier_id = earlier.order_id;
        known
            .existing
            .insert(("a".into(), "k".into()), (earlier, "hash-2".into()));
        // Same request: its order, even though the deal is sold out now.
        let decisions = decide(&[request("a", "k", 2)], &known);
        assert!(matches!(&decisions[0], Decision::Existing(o) if o.order_id == earlier_id));
        // Same key, another request.
        assert_eq!(
            decided(&[request("a", "k", 3)], &known),
            ["idempotency_key_reused"]
        );
    }

    #[test]
    fn a_key_repeated_within_the_batch_follows_its_first_request() {
        let known = known(deal(10, 0, 5));
        let batch = [request("a", "k", 1), request("b", "k", 1), request("a", "k", 1)];
        assert_eq!(decided(&batch, &known), ["ok:1000", "ok:1000", "same:0"]);
    }

    #[test]
    fn a_key_repeated_within_the_batch_with_another_request_is_refused_as_reused() {
        let mut known = known(deal(10, 0, 5));
        let other_deal = Uuid::from_u128(7);
        let mut elsewhere = deal(10, 0, 5);
        elsewhere.deal_id = other_deal;
        known.deals.insert(other_deal, elsewhere);
        // The same buyer and key on another deal (its hash differs), and with
        // another quantity: neither is answered with the first one's order.
        let mut on_other_deal = request("a", "k", 1);
        on_other_deal.deal_id = other_deal;
        on_other_deal.request_hash = "hash-other-deal".into();
        let batch = [request("a", "k", 1), on_other_deal, request("a", "k", 2)];
        assert_eq!(
            decided(&batch, &known),
            ["ok:1000", "idempotency_key_reused", "idempotency_key_reused"]
        );
    }

    #[test]
    fn a_missing_deal_row_is_refused_alone() {
        // A poisoned row: the deal is gone. Only its request fails.
        let known = known(deal(10, 0, 5));
        let mut gone = request("a", "k", 1);
        gone.deal_id = Uuid::from_u128(99);
        assert_eq!(
            decided(&[gone, request("b", "k", 1)], &known),
            ["not_found", "ok:1000"]
        );
    }

    #[test]
    fn an_amount_that_overflows_is_refused_alone() {
        // A poisoned row: Postgres would refuse it (bigint out of range) and with
        // it the whole batch; it is refused here, the rest of the batch goes on.
        let mut row = deal(10, 0, 5);
        row.price_minor = i64::MAX / 2;
        let mut known = known(row);
        let other = deal(10, 0, 5);
        let mut fine = request("b", "k", 1);
        fine.deal_id = Uuid::from_u128(7);
        known.deals.insert(
            Uuid::from_u128(7),
            DealRow {
                deal_id: Uuid::from_u128(7),
                ..other
            },
        );
        assert_eq!(
            decided(&[request("a", "k", 3), fine], &known),
            ["bad_quantity", "ok:1000"]
        );
    }

    #[test]
    fn a_coupon_is_applied_once() {
        let mut known = known(deal(10, 0, 5));
        known.claims.insert(Uuid::from_u128(50), claim(50, "a"));
        let batch = [
            with_coupon(request("a", "k1", 2), 50),
            with_coupon(request("a", "k2", 1), 50),
        ];
        // 10 % off 2000; the second use in the same batch is refused.
        assert_eq!(decided(&batch, &known), ["ok:1800", "coupon_invalid"]);
        let decisions = decide(&batch, &known);
        assert!(matches!(
            &decisions[0],
            Decision::Accept(Price {
                subtotal_minor: 2000,
                discount_minor: 200,
                amount_minor: 1800
            })
        ));
    }

    #[test]
    fn a_coupon_may_not_take_the_amount_below_the_campaign_floor() {
        let mut deal = deal(10, 0, 5);
        deal.floor_price_minor = Some(950);
        let mut known = known(deal);
        known.claims.insert(Uuid::from_u128(50), claim(50, "a"));
        // 10 % off 1000 is 900 per unit, under the floor of 950: refused, and
        // the claim stays usable by the buyer's next request in the batch.
        let batch = [with_coupon(request("a", "k1", 1), 50), request("a", "k2", 1)];
        assert_eq!(decided(&batch, &known), ["coupon_below_floor", "ok:1000"]);
        known
            .deals
            .values_mut()
            .for_each(|d| d.floor_price_minor = Some(900));
        assert_eq!(decided(&batch[..1], &known), ["ok:900"]);
        known.deals.values_mut().for_each(|d| d.floor_price_minor = None);
        assert_eq!(decided(&batch[..1], &known), ["ok:900"]);
    }

    #[test]
    fn a_used_coupon_is_refused() {
        let mut known = known(deal(10, 0, 5));
        let mut used = claim(50, "a");
        used.used_at = Some(Utc::now());
        known.claims.insert(Uuid::from_u128(50), used);
        let decisions = decide(&[with_coupon(request("a", "k", 1), 50)], &known);
        assert!(matches!(&decisions[0], Decision::Reject(e) if e.to_string().contains("already used")));
    }

    #[test]
    fn a_coupon_that_does_not_apply_is_refused_with_its_reason() {
        let row = deal(10, 0, 5);
        let cases: [(ClaimRow, &str); 7] = [
            (claim(50, "someone else"), "claimed by someone else"),
            (
                ClaimRow {
                    session_id: Uuid::from_u128(97),
                    ..claim(50, "a")
                },
                "another session",
            ),
            (
                ClaimRow {
                    status: "scheduled".into(),
                    ..claim(50, "a")
                },
                "has not dropped",
            ),
            (
                ClaimRow {
                    lineup_item_id: Some(Uuid::from_u128(98)),
                    ..claim(50, "a")
                },
                "another item",
            ),
            (
                ClaimRow {
                    deal_id: Some(Uuid::from_u128(98)),
                    ..claim(50, "a")
                },
                "another item",
            ),
            (
                ClaimRow {
                    discount_kind: "fixed".into(),
                    discount_value: 100,
                    currency: Some("EUR".into()),
                    ..claim(50, "a")
                },
                "another currency",
            ),
            (
                ClaimRow {
                    min_spend_minor: 5000,
                    ..claim(50, "a")
                },
                "minimum spend",
            ),
        ];
        for (claim_row, reason) in cases {
            let mut known = known(row.clone());
            known.claims.insert(Uuid::from_u128(50), claim_row);
            let decisions = decide(&[with_coupon(request("a", "k", 1), 50)], &known);
            assert!(
                matches!(&decisions[0], Decision::Reject(e) if e.code() == "coupon_invalid" && e.to_string().contains(reason)),
                "{reason}: {decisions:?}"
            );
        }
        // No such claim at all.
        let decisions = decide(&[with_coupon(request("a", "k", 1), 51)], &known(row));
        assert!(matches!(&decisions[0], Decision::Reject(e) if e.to_string().contains("no such claim")));
    }

    #[test]
    fn a_refused_request_takes_no_units() {
        let mut known = known(deal(2, 0, 2));
        let mut bad = claim(50, "a");
        bad.used_at = Some(Utc::now());
        known.claims.insert(Uuid::from_u128(50), bad);
        let batch = [with_coupon(request("a", "k1", 2), 50), request("b", "k", 2)];
        assert_eq!(decided(&batch, &known), ["coupon_invalid", "ok:2000"]);
    }

    #[test]
    fn answers_follow_the_insert() {
        let first = order("a", 1);
        let first_id = first.order_id;
        let decisions = vec![
            Decision::Accept(Price {
                subtotal_minor: 1000,
                discount_minor: 0,
                amount_minor: 1000,
            }),
            Decision::Accept(Price {
                subtotal_minor: 1000,
                discount_minor: 0,
                amount_minor: 1000,
            }),
            Decision::SameAs(0),
            Decision::SameAs(1),
            Decision::Reject(sold_out()),
            Decision::Existing(Box::new(order("c", 1))),
        ];
        // Request 1 lost its key to another node: its insert returned nothing.
        let outcomes = answers(decisions, HashMap::from([(0, first)]));
        assert!(matches!(&outcomes[0], SettleOutcome::Created(o) if o.order_id == first_id));
        assert!(matches!(
            &outcomes[1],
            SettleOutcome::Rejected(Error::Unavailable { .. })
        ));
        assert!(matches!(&outcomes[2], SettleOutcome::Existing(o) if o.order_id == first_id));
        assert!(matches!(&outcomes[3], SettleOutcome::Rejected(e) if e.code() == "duplicate_request"));
        assert!(matches!(&outcomes[4], SettleOutcome::Rejected(e) if e.code() == "sold_out"));
        assert!(matches!(&outcomes[5], SettleOutcome::Existing(_)));
    }

    #[test]
    fn units_are_taken_once_per_deal_in_id_order() {
        let (a, b) = (Uuid::from_u128(9), Uuid::from_u128(2));
        let units = units_by_deal([(a, 3), (b, 1), (a, 4)]).expect("fits");
        assert_eq!(units.into_iter().collect::<Vec<_>>(), vec![(b, 1), (a, 7)]);
        assert!(units_by_deal([]).expect("empty").is_empty());
        assert!(units_by_deal([(a, i32::MAX), (a, 1)]).is_err());
    }

    #[test]
    fn deciding_again_on_a_fresher_row_keeps_the_earlier_requests() {
        // First read: 5 left. Another node sells 3 before the guarded update,
        // which fails; the batch is decided again on the fresh row.
        let requests = [
            request("a", "k1", 2),
            request("b", "k2", 2),
            request("c", "k3", 1),
        ];
        assert_eq!(
            decided(&requests, &known(deal(10, 5, 5))),
            ["ok:2000", "ok:2000", "ok:1000"]
        );
        let fresh = decided(&requests, &known(deal(10, 8, 5)));
        assert_eq!(fresh, ["ok:2000", "sold_out", "sold_out"]);
    }
}
