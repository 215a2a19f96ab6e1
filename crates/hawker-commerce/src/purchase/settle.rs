//! The settlement: one task per node that commits admitted purchases in
//! batches — one Postgres transaction, the deal row locked and updated once
//! per batch — and answers each request only after the commit.
//!
//! Read top-down:
//! - [`Settler::submit`] queues a request with a one-shot reply;
//! - [`SettleTask::run`] (the batcher) gathers up to `commerce.batch_max`
//!   requests within `commerce.batch_window_us`;
//! - `settle_batch` commits them, answers, and tells the gate what happened
//!   (`after_commit`); a batch Postgres refuses is split and settled one by one;
//! - `commit` is the transaction, in named steps: lock and read what the batch
//!   touches, [`decide`] (pure), then write each table.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::decide::{self, BuyerKey, ClaimRow, DealRow, Decision, Known};
use super::gate::{Gate, ReservationKey};
use crate::order::{Order, ORDER_COLUMNS};
use crate::pricing::Price;
use crate::stock::{self, StockAnnouncer};
use crate::CommerceConfig;
use hawker_core::error::{Error, Result};

pub use super::decide::{SettleOutcome, SettleRequest};

type Reply = oneshot::Sender<Result<SettleOutcome>>;

/// Hands admitted requests to the node's settlement task. Cheap to clone.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::Sender<(SettleRequest, Reply)>,
    /// Until when (ms since epoch) purchases fail fast because Postgres is down.
    db_down_until: Arc<AtomicI64>,
}

/// The batcher: gathers requests and commits them (spawn [`SettleTask::run`]).
pub struct SettleTask {
    rx: mpsc::Receiver<(SettleRequest, Reply)>,
    db: PgPool,
    batch_max: usize,
    window: Duration,
    order_ttl_secs: i64,
    db_down_until: Arc<AtomicI64>,
    /// Told of every outcome: settled keys confirmed, refused ones released.
    gate: Gate,
    /// Publishes the new stock after each commit.
    stock: StockAnnouncer,
}

impl Settler {
    /// A settler and its task, which commits through `db` and then tells `gate`
    /// and `stock` what happened.
    pub fn new(
        config: &CommerceConfig,
        db: PgPool,
        gate: Gate,
        stock: StockAnnouncer,
    ) -> (Settler, SettleTask) {
        let (tx, rx) = mpsc::channel(65_536);
        let db_down_until = Arc::new(AtomicI64::new(0));
        let task = SettleTask {
            rx,
            db,
            batch_max: config.batch_max,
            window: Duration::from_micros(config.batch_window_us),
            order_ttl_secs: i64::try_from(config.order_ttl_secs).unwrap_or(i64::MAX),
            db_down_until: db_down_until.clone(),
            gate,
            stock,
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
    /// Gathers and settles batches until `shutdown`, finishing what is queued.
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
                // A poisoned request broke a rule Postgres enforces: settle
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
        let key = ReservationKey::new(&request.buyer, &request.idempotency_key);
        if let Err(e) = self.gate.release(request.deal_id, &key, request.quantity).await {
            tracing::warn!(error = %e, "could not release a reservation; the reconciler will");
        }
    }

    /// Tells the gate what happened and announces the new stock.
    async fn after_commit(&self, requests: &[SettleRequest], result: &Committed) {
        let mut confirmed: HashMap<Uuid, Vec<(ReservationKey, Uuid)>> = HashMap::new();
        for (request, outcome) in requests.iter().zip(&result.outcomes) {
            match outcome {
                SettleOutcome::Created(order) | SettleOutcome::Existing(order) => {
                    confirmed.entry(request.deal_id).or_default().push((
                        ReservationKey::new(&request.buyer, &request.idempotency_key),
                        order.order_id,
                    ));
                }
                SettleOutcome::Rejected(_) => self.release(request).await,
            }
        }
        for (deal, settled) in confirmed {
            if let Err(e) = self.gate.confirm(deal, &settled).await {
                tracing::warn!(error = %e, "could not confirm settled reservations");
            }
        }
        for figure in &result.deals {
            let _ = self.gate.clamp(figure.deal_id, figure.remaining).await;
            if figure.ended {
                // Sold out: the final figure and `deal.ended` go through the outbox.
                let _ = self.gate.mark_ended(figure.deal_id, "sold_out").await;
                continue;
            }
            self.stock.announce(stock::deal_stock(
                figure.session_id,
                figure.deal_id,
                figure.remaining,
                figure.quantity,
                figure.version,
            ));
        }
    }
}

/// A deal's figures after the batch's units were taken.
struct DealAfter {
    deal_id: Uuid,
    session_id: Uuid,
    remaining: i32,
    quantity: i32,
    version: i64,
    /// This batch sold its last unit.
    ended: bool,
}

/// What a committed batch answers and changed.
struct Committed {
    /// One per request, in the batch's order.
    outcomes: Vec<SettleOutcome>,
    deals: Vec<DealAfter>,
}

/// Decides and commits a batch in one transaction.
async fn commit(db: &PgPool, requests: &[SettleRequest], order_ttl_secs: i64) -> Result<Committed> {
    let mut tx = db.begin().await?;
    let known = read_under_lock(&mut tx, requests).await?;
    let decisions = decide::decide(requests, &known);
    let created = insert_orders(&mut tx, requests, &known.deals, &decisions, order_ttl_secs).await?;
    add_buyer_units(&mut tx, &created, &known.deals).await?;
    mark_coupons_used(&mut tx, &created).await?;
    let deals = take_units(&mut tx, &created).await?;
    record_order_events(&mut tx, &created).await?;
    tx.commit().await?;
    metrics::counter!("hawker_orders_committed_total").increment(created.len() as u64);
    Ok(Committed {
        outcomes: decide::answers(decisions, created),
        deals,
    })
}

/// Step 1: locks the batch's deals (in id order), buyers and coupon claims,
/// and reads the orders that already exist for its keys.
async fn read_under_lock(tx: &mut Transaction<'_, Postgres>, requests: &[SettleRequest]) -> Result<Known> {
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
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|d| (d.deal_id, d))
    .collect();

    let buyers: Vec<&str> = requests.iter().map(|r| r.buyer.as_str()).collect();
    let keys: Vec<&str> = requests.iter().map(|r| r.idempotency_key.as_str()).collect();
    let existing: HashMap<BuyerKey, (Order, String)> = sqlx::query_as::<_, ExistingRow>(&format!(
        "select {ORDER_COLUMNS}, request_hash, idempotency_key as key_again from customer_order
          where (buyer_id, idempotency_key) in (select * from unnest($1::text[], $2::text[]))"
    ))
    .bind(&buyers)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|row| {
        (
            (row.order.buyer_id.clone(), row.key_again.clone()),
            (row.order, row.request_hash),
        )
    })
    .collect();

    let held: HashMap<(Uuid, String), i32> = sqlx::query_as::<_, (Uuid, String, i32)>(
        "select deal_id, buyer_id, units from deal_buyer
          where deal_id = any($1) and buyer_id = any($2) for update",
    )
    .bind(&deal_ids)
    .bind(&buyers)
    .fetch_all(&mut **tx)
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
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|c| (c.coupon_claim_id, c))
        .collect()
    };
    Ok(Known {
        deals,
        held,
        existing,
        claims,
    })
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    #[sqlx(flatten)]
    order: Order,
    request_hash: String,
    key_again: String,
}

/// Step 3: inserts the accepted orders in one statement; returns them by
/// request index. A (buyer, key) another node inserted first is skipped.
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[SettleRequest],
    deals: &HashMap<Uuid, DealRow>,
    decisions: &[Decision],
    order_ttl_secs: i64,
) -> Result<HashMap<usize, Order>> {
    let accepted: Vec<(usize, &Price)> = decisions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Decision::Accept(price) => Some((i, price)),
            _ => None,
        })
        .collect();
    let mut created: HashMap<usize, Order> = HashMap::new();
    if accepted.is_empty() {
        return Ok(created);
    }
    let mut cols = OrderColumns::default();
    for (i, price) in &accepted {
        let r = &requests[*i];
        let Some(deal) = deals.get(&r.deal_id) else {
            continue;
        };
        cols.push(r, deal, price);
    }
    let rows = cols.insert(tx, order_ttl_secs).await?;
    let by_key: HashMap<BuyerKey, Order> = rows
        .into_iter()
        .map(|(key, order)| ((order.buyer_id.clone(), key), order))
        .collect();
    for (i, _) in &accepted {
        let r = &requests[*i];
        if let Some(order) = by_key.get(&(r.buyer.clone(), r.idempotency_key.clone())) {
            created.insert(*i, order.clone());
        }
    }
    Ok(created)
}

/// Step 4: adds the inserted units to each buyer's `deal_buyer` row.
async fn add_buyer_units(
    tx: &mut Transaction<'_, Postgres>,
    created: &HashMap<usize, Order>,
    deals: &HashMap<Uuid, DealRow>,
) -> Result<()> {
    let mut buyer_units: HashMap<(Uuid, String), i32> = HashMap::new();
    for order in created.values() {
        *buyer_units
            .entry((order.deal_id, order.buyer_id.clone()))
            .or_default() += order.quantity;
    }
    if buyer_units.is_empty() {
        return Ok(());
    }
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Step 5: marks the inserted orders' coupon claims used.
async fn mark_coupons_used(
    tx: &mut Transaction<'_, Postgres>,
    created: &HashMap<usize, Order>,
) -> Result<()> {
    let claims_used: Vec<Uuid> = created.values().filter_map(|o| o.coupon_claim_id).collect();
    if claims_used.is_empty() {
        return Ok(());
    }
    sqlx::query("update coupon_claim set used_at = now() where coupon_claim_id = any($1)")
        .bind(&claims_used)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Step 6: takes the inserted units from each deal, once per deal; a deal
/// that sells its last unit ends `sold_out` here, its final stock and
/// `deal.ended` queued in the room outbox.
async fn take_units(
    tx: &mut Transaction<'_, Postgres>,
    created: &HashMap<usize, Order>,
) -> Result<Vec<DealAfter>> {
    let mut deal_units: HashMap<Uuid, i32> = HashMap::new();
    for order in created.values() {
        *deal_units.entry(order.deal_id).or_default() += order.quantity;
    }
    let mut after = Vec::with_capacity(deal_units.len());
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
        .fetch_one(&mut **tx)
        .await?;
        if ended {
            crate::deals::announce_end(tx, *deal_id, session_id, "sold_out", quantity, new_sold, version)
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
    Ok(after)
}

/// Step 7: records each new order's first status in `order_event`.
async fn record_order_events(
    tx: &mut Transaction<'_, Postgres>,
    created: &HashMap<usize, Order>,
) -> Result<()> {
    if created.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = created.values().map(|o| o.order_id).collect();
    sqlx::query(
        "insert into order_event (order_id, to_status, detail)
         select id, 'pending_payment', '{\"by\": \"settlement\"}'::jsonb from unnest($1::uuid[]) as t(id)",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    fn push(&mut self, r: &SettleRequest, deal: &DealRow, price: &Price) {
        self.order_id.push(Uuid::now_v7());
        self.deal_id.push(deal.deal_id);
        self.session_id.push(deal.session_id);
        self.lineup_item_id.push(deal.lineup_item_id);
        self.sku_id.push(deal.sku_id);
        self.buyer_id.push(r.buyer.clone());
        self.quantity.push(r.quantity);
        self.unit_price.push(deal.price_minor);
        self.discount.push(price.discount_minor);
        self.amount.push(price.amount_minor);
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
