//! The settlement writer: one task per node that commits admitted purchases
//! in batches — one Postgres transaction, the deal row locked and updated
//! once per batch — and answers each request only after the commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::gate::Gate;
use crate::orders::{Order, ORDER_COLUMNS};
use crate::stock::{Figure, StockAnnouncer};
use crate::CommerceConfig;
use hawker_core::error::{Error, Result};

/// An admitted purchase, waiting for its commit.
#[derive(Debug, Clone)]
pub struct SettleRequest {
    pub deal_id: Uuid,
    pub buyer: String,
    pub quantity: i32,
    pub idempotency_key: String,
    pub request_hash: String,
    pub coupon_claim_id: Option<Uuid>,
    /// The gate's field for (buyer, key).
    pub field: String,
}

#[derive(Debug)]
pub enum SettleOutcome {
    /// Committed now.
    Created(Order),
    /// This (buyer, key) already had an order with the same request.
    Existing(Order),
    /// Refused by Postgres' view (the gate's reservation was released).
    Rejected(Error),
}

type Reply = oneshot::Sender<Result<SettleOutcome>>;

#[derive(Clone)]
pub struct Settler {
    tx: mpsc::Sender<(SettleRequest, Reply)>,
    /// Until when (ms since epoch) purchases fail fast because Postgres is down.
    db_down_until: Arc<AtomicI64>,
}

pub struct SettleTask {
    rx: mpsc::Receiver<(SettleRequest, Reply)>,
    db: PgPool,
    batch_max: usize,
    window: Duration,
    order_ttl_secs: i64,
    db_down_until: Arc<AtomicI64>,
    gate: Option<(Gate, StockAnnouncer)>,
}

impl Settler {
    pub fn new(config: &CommerceConfig, db: PgPool) -> (Settler, SettleTask) {
        let (tx, rx) = mpsc::channel(65_536);
        let db_down_until = Arc::new(AtomicI64::new(0));
        let task = SettleTask {
            rx,
            db,
            batch_max: config.batch_max,
            window: Duration::from_micros(config.batch_window_us),
            order_ttl_secs: config.order_ttl_secs as i64,
            db_down_until: db_down_until.clone(),
            gate: None,
        };
        (Settler { tx, db_down_until }, task)
    }

    /// Purchases fail fast for a second after Postgres was found unreachable.
    pub fn database_down(&self) -> bool {
        self.db_down_until.load(Ordering::Relaxed) > chrono::Utc::now().timestamp_millis()
    }

    /// Queues a request and waits for its commit (or refusal).
    pub async fn submit(&self, request: SettleRequest) -> Result<SettleOutcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send((request, reply))
            .map_err(|_| Error::Unavailable { what: "settlement" })?;
        answer
            .await
            .unwrap_or(Err(Error::Unavailable { what: "settlement" }))
    }
}

impl SettleTask {
    pub fn with_gate(mut self, gate: Gate, stock: StockAnnouncer) -> Self {
        self.gate = Some((gate, stock));
        self
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch: Vec<(SettleRequest, Reply)> = Vec::with_capacity(self.batch_max);
        loop {
            let first = tokio::select! {
                // On shutdown, finish what is queued: those buyers are waiting.
                _ = shutdown.cancelled(), if self.rx.is_empty() => return,
                first = self.rx.recv() => match first { Some(f) => f, None => return },
            };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.window;
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(item)) => batch.push(item),
                        _ => break,
                    },
                }
            }
            let started = Instant::now();
            let size = batch.len();
            self.settle_batch(std::mem::take(&mut batch)).await;
            metrics::histogram!("hawker_settle_batch_size").record(size as f64);
            metrics::histogram!("hawker_settle_batch_seconds").record(started.elapsed().as_secs_f64());
        }
    }

    async fn settle_batch(&self, batch: Vec<(SettleRequest, Reply)>) {
        let requests: Vec<SettleRequest> = batch.iter().map(|(r, _)| r.clone()).collect();
        match commit(&self.db, &requests, self.order_ttl_secs).await {
            Ok(result) => {
                self.after_commit(&requests, &result).await;
                for ((_, reply), outcome) in batch.into_iter().zip(result.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(Error::Unavailable { what }) => {
                // The commit did not happen, or its outcome is unknown: keep
                // the gate's reservations (the reconciler settles or releases
                // them) and tell buyers to retry with the same key.
                self.db_down_until
                    .store(chrono::Utc::now().timestamp_millis() + 1000, Ordering::Relaxed);
                metrics::counter!("hawker_settle_failures_total", "kind" => "unavailable").increment(1);
                for (_, reply) in batch {
                    let _ = reply.send(Err(Error::Unavailable { what }));
                }
            }
            Err(error) if batch.len() > 1 => {
                // Something in the batch broke a rule Postgres enforces: settle
                // each request alone, so one bad request fails only itself.
                tracing::warn!(error = %error, size = batch.len(), "batch refused; settling one by one");
                metrics::counter!("hawker_settle_failures_total", "kind" => "split").increment(1);
                for item in batch {
                    Box::pin(self.settle_batch(vec![item])).await;
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "settlement failed");
                metrics::counter!("hawker_settle_failures_total", "kind" => "error").increment(1);
                if let Some((request, reply)) = batch.into_iter().next() {
                    self.release(&request).await;
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    async fn release(&self, request: &SettleRequest) {
        if let Some((gate, _)) = &self.gate {
            if let Err(e) = gate
                .release(request.deal_id, &request.buyer, request.quantity, &request.field)
                .await
            {
                tracing::warn!(error = %e, "could not release a reservation; the reconciler will");
            }
        }
    }

    /// Tells the gate what happened and announces the new stock.
    async fn after_commit(&self, requests: &[SettleRequest], result: &Committed) {
        let Some((gate, stock)) = &self.gate else { return };
        let mut confirmed: HashMap<Uuid, Vec<(String, Uuid)>> = HashMap::new();
        for (request, outcome) in requests.iter().zip(&result.outcomes) {
            match outcome {
                SettleOutcome::Created(order) | SettleOutcome::Existing(order) => {
                    confirmed
                        .entry(request.deal_id)
                        .or_default()
                        .push((request.field.clone(), order.order_id));
                }
                SettleOutcome::Rejected(_) => self.release(request).await,
            }
        }
        for (deal, settled) in confirmed {
            if let Err(e) = gate.confirm(deal, &settled).await {
                tracing::warn!(error = %e, "could not confirm settled reservations");
            }
        }
        for figure in &result.deals {
            let _ = gate.clamp(figure.deal_id, figure.remaining).await;
            if figure.ended {
                // Sold out: the final figure and `deal.ended` go through the outbox.
                let _ = gate.mark_ended(figure.deal_id, "sold_out").await;
                continue;
            }
            stock.announce(stock_figure(
                figure.session_id,
                figure.deal_id,
                figure.remaining,
                figure.quantity,
                figure.version,
            ));
        }
    }
}

/// The `deal.stock` figure of a deal.
pub fn stock_figure(session_id: Uuid, deal_id: Uuid, remaining: i32, quantity: i32, version: i64) -> Figure {
    Figure {
        session_id,
        key: format!("deal:{deal_id}:stock"),
        event_type: "deal.stock",
        data: json!({ "deal_id": deal_id, "remaining": remaining, "quantity": quantity }),
        version,
    }
}

struct DealAfter {
    deal_id: Uuid,
    session_id: Uuid,
    remaining: i32,
    quantity: i32,
    version: i64,
    ended: bool,
}

struct Committed {
    outcomes: Vec<SettleOutcome>,
    deals: Vec<DealAfter>,
}

#[derive(sqlx::FromRow)]
struct DealRow {
    deal_id: Uuid,
    session_id: Uuid,
    lineup_item_id: Uuid,
    sku_id: Uuid,
    price_minor: i64,
    currency: String,
    quantity: i32,
    sold: i32,
    per_buyer_cap: i32,
    status: String,
    end_reason: Option<String>,
    started: bool,
    over: bool,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    coupon_claim_id: Uuid,
    viewer_id: String,
    used_at: Option<chrono::DateTime<chrono::Utc>>,
    discount_kind: String,
    discount_value: i64,
    currency: Option<String>,
    min_spend_minor: i64,
    lineup_item_id: Option<Uuid>,
    deal_id: Option<Uuid>,
    status: String,
}

/// What Postgres decided for one request before the insert.
enum Decision {
    Accept {
        discount: i64,
    },
    Reject(Error),
    Existing(Box<Order>),
    /// Same (buyer, key) as an earlier request of this batch.
    SameAs(usize),
}

/// Decides and commits a batch in one transaction.
async fn commit(db: &PgPool, requests: &[SettleRequest], order_ttl_secs: i64) -> Result<Committed> {
    let mut tx = db.begin().await?;
    let deal_ids: Vec<Uuid> = requests
        .iter()
        .map(|r| r.deal_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let deals: HashMap<Uuid, DealRow> = sqlx::query_as::<_, DealRow>(
        "select deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity, sold,
                per_buyer_cap, status, end_reason, starts_at <= now() as started, ends_at <= now() as over
           from deal where deal_id = any($1) order by deal_id for update",
    )
    .bind(&deal_ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|d| (d.deal_id, d))
    .collect();

    let buyers: Vec<&str> = requests.iter().map(|r| r.buyer.as_str()).collect();
    let keys: Vec<&str> = requests.iter().map(|r| r.idempotency_key.as_str()).collect();
    let existing: HashMap<(String, String), (Order, String)> = sqlx::query_as::<_, ExistingRow>(&format!(
        "select {ORDER_COLUMNS}, request_hash, idempotency_key as key_again from customer_order
          where (buyer_id, idempotency_key) in (select * from unnest($1::text[], $2::text[]))"
    ))
    .bind(&buyers)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| {
        (
            (row.order.buyer_id.clone(), row.key_again.clone()),
            (row.order, row.request_hash),
        )
    })
    .collect();

    let mut held: HashMap<(Uuid, String), i32> = sqlx::query_as::<_, (Uuid, String, i32)>(
        "select deal_id, buyer_id, units from deal_buyer
          where deal_id = any($1) and buyer_id = any($2) for update",
    )
    .bind(&deal_ids)
    .bind(&buyers)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(d, b, u)| ((d, b), u))
    .collect();

    let claim_ids: Vec<Uuid> = requests.iter().filter_map(|r| r.coupon_claim_id).collect();
    let claims: HashMap<Uuid, ClaimRow> = if claim_ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, ClaimRow>(
            "select c.coupon_claim_id, c.viewer_id, c.used_at, d.discount_kind, d.discount_value, d.currency,
                    d.min_spend_minor, d.lineup_item_id, d.deal_id, d.status
               from coupon_claim c join coupon_drop d using (coupon_drop_id)
              where c.coupon_claim_id = any($1) for update of c",
        )
        .bind(&claim_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|c| (c.coupon_claim_id, c))
        .collect()
    };

    // Decide, in arrival order.
    let mut sold: HashMap<Uuid, i32> = deals.iter().map(|(id, d)| (*id, d.sold)).collect();
    let mut seen_keys: HashMap<(String, String), usize> = HashMap::new();
    let mut used_claims: HashSet<Uuid> = HashSet::new();
    let mut decisions = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let id_key = (r.buyer.clone(), r.idempotency_key.clone());
        if let Some((order, hash)) = existing.get(&id_key) {
            decisions.push(if *hash == r.request_hash {
                Decision::Existing(Box::new(order.clone()))
            } else {
                Decision::Reject(Error::conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                ))
            });
            continue;
        }
        if let Some(first) = seen_keys.get(&id_key) {
            decisions.push(Decision::SameAs(*first));
            continue;
        }
        seen_keys.insert(id_key, i);
        let Some(deal) = deals.get(&r.deal_id) else {
            decisions.push(Decision::Reject(Error::NotFound("deal")));
            continue;
        };
        let decision = if deal.end_reason.as_deref() == Some("sold_out") {
            Decision::Reject(Error::conflict("sold_out", "the deal is sold out"))
        } else if deal.status == "ended" || deal.over {
            Decision::Reject(Error::conflict("deal_ended", "the deal has ended"))
        } else if !deal.started {
            Decision::Reject(Error::conflict(
                "deal_not_started",
                "the deal has not started yet",
            ))
        } else {
            let units = held.get(&(r.deal_id, r.buyer.clone())).copied().unwrap_or(0);
            let deal_sold = sold.get(&r.deal_id).copied().unwrap_or(deal.quantity);
            if units + r.quantity > deal.per_buyer_cap {
                Decision::Reject(Error::conflict(
                    "cap_exceeded",
                    "the per-buyer cap would be exceeded",
                ))
            } else if deal_sold + r.quantity > deal.quantity {
                Decision::Reject(Error::conflict("sold_out", "the deal is sold out"))
            } else {
                match coupon_discount(r, deal, &claims, &mut used_claims) {
                    Ok(discount) => {
                        held.insert((r.deal_id, r.buyer.clone()), units + r.quantity);
                        sold.insert(r.deal_id, deal_sold + r.quantity);
                        Decision::Accept { discount }
                    }
                    Err(e) => Decision::Reject(e),
                }
            }
        };
        decisions.push(decision);
    }

    // Insert the accepted orders in one statement.
    let accepted: Vec<(usize, i64)> = decisions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Decision::Accept { discount } => Some((i, *discount)),
            _ => None,
        })
        .collect();
    let mut created: HashMap<usize, Order> = HashMap::new();
    if !accepted.is_empty() {
        let mut cols = OrderColumns::default();
        for (i, discount) in &accepted {
            let r = &requests[*i];
            let Some(deal) = deals.get(&r.deal_id) else {
                continue;
            };
            cols.push(r, deal, *discount);
        }
        let rows = cols.insert(&mut tx, order_ttl_secs).await?;
        let by_key: HashMap<(String, String), Order> = rows
            .into_iter()
            .map(|(key, order)| ((order.buyer_id.clone(), key), order))
            .collect();
        for (i, _) in &accepted {
            let r = &requests[*i];
            if let Some(order) = by_key.get(&(r.buyer.clone(), r.idempotency_key.clone())) {
                created.insert(*i, order.clone());
            }
        }
    }

    // Per deal: units actually inserted, buyers' units, coupons used.
    let mut deal_units: HashMap<Uuid, i32> = HashMap::new();
    let mut buyer_units: HashMap<(Uuid, String), i32> = HashMap::new();
    let mut claims_used: Vec<Uuid> = Vec::new();
    for order in created.values() {
        *deal_units.entry(order.deal_id).or_default() += order.quantity;
        *buyer_units
            .entry((order.deal_id, order.buyer_id.clone()))
            .or_default() += order.quantity;
        if let Some(claim) = order.coupon_claim_id {
            claims_used.push(claim);
        }
    }
    if !buyer_units.is_empty() {
        let (mut d, mut b, mut u, mut cap) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((deal_id, buyer), units) in &buyer_units {
            d.push(*deal_id);
            b.push(buyer.clone());
            u.push(*units);
            cap.push(deals.get(deal_id).map(|x| x.per_buyer_cap).unwrap_or(0));
        }
        sqlx::query(
            "insert into deal_buyer (deal_id, buyer_id, units, cap)
             select * from unnest($1::uuid[], $2::text[], $3::int[], $4::int[])
             on conflict (deal_id, buyer_id) do update set units = deal_buyer.units + excluded.units",
        )
        .bind(&d)
        .bind(&b)
        .bind(&u)
        .bind(&cap)
        .execute(&mut *tx)
        .await?;
    }
    if !claims_used.is_empty() {
        sqlx::query("update coupon_claim set used_at = now() where coupon_claim_id = any($1)")
            .bind(&claims_used)
            .execute(&mut *tx)
            .await?;
    }
    let mut after = Vec::new();
    for (deal_id, units) in &deal_units {
        let (session_id, quantity, new_sold, version, ended): (Uuid, i32, i32, i64, bool) = sqlx::query_as(
            "update deal set sold = sold + $2, stock_version = stock_version + 1,
                    status = case when sold + $2 = quantity then 'ended' else status end,
                    end_reason = case when sold + $2 = quantity then 'sold_out' else end_reason end,
                    ended_at = case when sold + $2 = quantity then now() else ended_at end
              where deal_id = $1
          returning session_id, quantity, sold, stock_version, status = 'ended'",
        )
        .bind(deal_id)
        .bind(units)
        .fetch_one(&mut *tx)
        .await?;
        if ended {
            crate::deals::announce_end(
                &mut tx, *deal_id, session_id, "sold_out", quantity, new_sold, version,
            )
            .await?;
        }
        after.push(DealAfter {
            deal_id: *deal_id,
            session_id,
            remaining: quantity - new_sold,
            quantity,
            version,
            ended,
        });
    }
    if !created.is_empty() {
        let ids: Vec<Uuid> = created.values().map(|o| o.order_id).collect();
        sqlx::query(
            "insert into order_event (order_id, to_status, detail)
             select id, 'pending_payment', '{\"by\": \"settlement\"}'::jsonb from unnest($1::uuid[]) as t(id)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("hawker_orders_committed_total").increment(created.len() as u64);

    let mut outcomes: Vec<SettleOutcome> = Vec::with_capacity(requests.len());
    for (i, decision) in decisions.into_iter().enumerate() {
        let outcome = match decision {
            Decision::Accept { .. } => match created.remove(&i) {
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
    Ok(Committed {
        outcomes,
        deals: after,
    })
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    #[sqlx(flatten)]
    order: Order,
    request_hash: String,
    key_again: String,
}

fn coupon_discount(
    r: &SettleRequest,
    deal: &DealRow,
    claims: &HashMap<Uuid, ClaimRow>,
    used: &mut HashSet<Uuid>,
) -> Result<i64> {
    let Some(claim_id) = r.coupon_claim_id else {
        return Ok(0);
    };
    let invalid = |why: &str| Error::invalid("coupon_invalid", format!("the coupon cannot be used: {why}"));
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
    if claim.lineup_item_id.is_some_and(|l| l != deal.lineup_item_id)
        || claim.deal_id.is_some_and(|d| d != deal.deal_id)
    {
        return Err(invalid("it is for another item"));
    }
    if claim.discount_kind == "fixed" && claim.currency.as_deref() != Some(deal.currency.as_str()) {
        return Err(invalid("it is in another currency"));
    }
    let subtotal = deal.price_minor * i64::from(r.quantity);
    crate::coupons::discount_minor(
        &claim.discount_kind,
        claim.discount_value,
        claim.min_spend_minor,
        subtotal,
    )
    .ok_or_else(|| invalid("the order is below its minimum spend"))
}

/// Column arrays for one multi-row insert.
#[derive(Default)]
struct OrderColumns {
    order_id: Vec<Uuid>,
    deal_id: Vec<Uuid>,
    session_id: Vec<Uuid>,
    lineup_item_id: Vec<Uuid>,
    sku_id: Vec<Uuid>,
    buyer_id: Vec<String>,
    quantity: Vec<i32>,
    unit_price: Vec<i64>,
    discount: Vec<i64>,
    amount: Vec<i64>,
    currency: Vec<String>,
    coupon: Vec<Option<Uuid>>,
    key: Vec<String>,
    hash: Vec<String>,
}

impl OrderColumns {
    fn push(&mut self, r: &SettleRequest, deal: &DealRow, discount: i64) {
        let subtotal = deal.price_minor * i64::from(r.quantity);
        self.order_id.push(Uuid::now_v7());
        self.deal_id.push(deal.deal_id);
        self.session_id.push(deal.session_id);
        self.lineup_item_id.push(deal.lineup_item_id);
        self.sku_id.push(deal.sku_id);
        self.buyer_id.push(r.buyer.clone());
        self.quantity.push(r.quantity);
        self.unit_price.push(deal.price_minor);
        self.discount.push(discount);
        self.amount.push(subtotal - discount);
        self.currency.push(deal.currency.clone());
        self.coupon.push(r.coupon_claim_id);
        self.key.push(r.idempotency_key.clone());
        self.hash.push(r.request_hash.clone());
    }

    /// Inserts; a (buyer, key) another node inserted first is skipped.
    async fn insert(
        self,
        tx: &mut Transaction<'_, Postgres>,
        ttl_secs: i64,
    ) -> sqlx::Result<Vec<(String, Order)>> {
        let rows: Vec<InsertedRow> = sqlx::query_as(&format!(
            "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                    unit_price_minor, discount_minor, amount_minor, currency, coupon_claim_id, idempotency_key,
                    request_hash, expires_at, host_id)
             select t.*, now() + make_interval(secs => $15), host_on_shift(t.session_id, now())
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::int[],
                           $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::uuid[], $13::text[],
                           $14::text[])
                    as t(order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                         unit_price_minor, discount_minor, amount_minor, currency, coupon_claim_id,
                         idempotency_key, request_hash)
             on conflict on constraint customer_order_idempotency do nothing
             returning {ORDER_COLUMNS}, idempotency_key as key_again"
        ))
        .bind(&self.order_id)
        .bind(&self.deal_id)
        .bind(&self.session_id)
        .bind(&self.lineup_item_id)
        .bind(&self.sku_id)
        .bind(&self.buyer_id)
        .bind(&self.quantity)
        .bind(&self.unit_price)
        .bind(&self.discount)
        .bind(&self.amount)
        .bind(&self.currency)
        .bind(&self.coupon)
        .bind(&self.key)
        .bind(&self.hash)
        .bind(ttl_secs as f64)
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows.into_iter().map(|r| (r.key_again, r.order)).collect())
    }
}

#[derive(sqlx::FromRow)]
struct InsertedRow {
    #[sqlx(flatten)]
    order: Order,
    key_again: String,
}
