//! The settlement: one task per node that commits admitted purchases in
//! batches — one Postgres transaction, the deal row taken once per batch by a
//! guarded update at its end — and answers each request only after the commit.
//!
//! Read top-down:
//! - [`Settler::submit`] queues a request with a one-shot reply;
//! - [`SettleTask::run`] (the batcher) gathers up to `commerce.batch_max`
//!   requests within `commerce.batch_window_us`;
//! - `settle_batch` commits them, answers, and tells the gate what happened
//!   (`after_commit`); a batch Postgres refuses is split and settled one by one;
//! - `commit` is the transaction, in named steps: read what the batch
//!   touches, [`decide`] (pure), then write each table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::decide::{self, BuyerKey, ClaimRow, DealRow, Decision, Known};
use super::gate::{Gate, ReservationKey};
use crate::order::{Order, Source, ORDER_COLUMNS};
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
    /// What the last batches did, for readiness.
    health: Arc<SettleHealth>,
    /// Releases the reservation of a request that never reached the task.
    gate: Gate,
    /// Cancelled once the listeners have stopped: the task then finishes
    /// what is queued and ends (see [`Settler::close`]).
    closed: CancellationToken,
}

/// The batcher: gathers requests and commits them (spawn [`SettleTask::run`]).
pub struct SettleTask {
    rx: mpsc::Receiver<(SettleRequest, Reply)>,
    batch_max: usize,
    window: Duration,
    /// Batches committed at once (`commerce.settle_parallel`).
    parallel: usize,
    /// The fewest requests a batch starts with while another commits.
    parallel_min: usize,
    closed: CancellationToken,
    committer: Arc<Committer>,
}

/// Commits one batch at a time; the task runs `parallel` of them at once.
struct Committer {
    db: PgPool,
    order_ttl_secs: i64,
    /// A batch whose commit has not answered by then is given up (its outcome
    /// unknown, its reservations kept for the reconciler): a Postgres path
    /// that drops packets must not hold the node's settlement for minutes.
    commit_timeout: Duration,
    /// Test hook: how long a batch holds its deal rows before committing.
    hold_after_take: Duration,
    /// One batch at a time takes its deal rows and commits.
    turn: Turn,
    db_down_until: Arc<AtomicI64>,
    health: Arc<SettleHealth>,
    /// Told of every outcome: settled keys confirmed, refused ones released.
    gate: Gate,
    /// Publishes the new stock after each commit.
    stock: StockAnnouncer,
}

/// A batch starts beside one that is committing only with at least
/// `batch_max` / this many requests (64 by default); a smaller one waits and
/// grows. Measured at 10,000 purchases/s, small batches side by side cost
/// Postgres 40 % more per order than one at a time.
const PARALLEL_MIN_DIVISOR: usize = 8;

/// A batch that has not committed after this long, or batches failing as
/// unavailable for this long, make the node not ready.
const UNREADY_AFTER_MS: i64 = 3000;
/// A failure older than this no longer counts against readiness (no traffic
/// comes to a node that says it is not ready, so no success may follow).
const FAILURE_FORGOTTEN_MS: i64 = 10_000;

/// What the node's own batches did lately (ms since the epoch; 0 = never).
#[derive(Default)]
struct SettleHealth {
    /// Each batch being committed, by number, with when it began (its wait
    /// for the node's turn at the deal rows not counted, see [`Running`]).
    committing_since: std::sync::Mutex<Vec<(u64, i64)>>,
    /// Numbers the batches.
    batches: std::sync::atomic::AtomicU64,
    /// The first failure since the last successful commit.
    failing_since: AtomicI64,
    last_failure: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SettleHealth {
    fn succeeded(&self) {
        self.failing_since.store(0, Ordering::Relaxed);
    }

    fn failed(&self) {
        let now = now_ms();
        self.last_failure.store(now, Ordering::Relaxed);
        let _ = self
            .failing_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Batch `batch` is committing, since `since`.
    fn commit_started(&self, batch: u64, since: i64) {
        if let Ok(mut running) = self.committing_since.lock() {
            running.push((batch, since));
        }
    }

    /// Batch `batch` has finished (or waits for its turn); returns since when
    /// it was committing.
    fn commit_ended(&self, batch: u64) -> Option<i64> {
        let mut running = self.committing_since.lock().ok()?;
        let i = running.iter().position(|(b, _)| *b == batch)?;
        Some(running.swap_remove(i).1)
    }

    fn oldest_commit(&self) -> Option<i64> {
        self.committing_since
            .lock()
            .ok()?
            .iter()
            .map(|(_, since)| *since)
            .min()
    }

    /// Why the node's batches cannot commit, if they cannot.
    fn problem(&self, now: i64) -> Option<String> {
        let committing = self.oldest_commit().unwrap_or(0);
        if committing != 0 && now - committing >= UNREADY_AFTER_MS {
            return Some(format!(
                "settlement: a batch has been committing for {} ms",
                now - committing
            ));
        }
        let failing = self.failing_since.load(Ordering::Relaxed);
        let last = self.last_failure.load(Ordering::Relaxed);
        if failing != 0 && last - failing >= UNREADY_AFTER_MS && now - last < FAILURE_FORGOTTEN_MS {
            return Some(format!(
                "settlement: every batch failed as unavailable for {} ms",
                last - failing
            ));
        }
        None
    }
}

/// A batch being committed, as readiness sees it; removed when dropped.
///
/// While the batch waits for the node's [`Turn`] it does not count: the
/// batch holding the turn does (a node frozen or cut off shows in that one),
/// and the waiting one's age would otherwise add its sibling's.
struct Running<'a> {
    health: &'a SettleHealth,
    batch: u64,
}

impl<'a> Running<'a> {
    fn start(health: &'a SettleHealth) -> Running<'a> {
        let batch = health.batches.fetch_add(1, Ordering::Relaxed);
        health.commit_started(batch, now_ms());
        Running { health, batch }
    }

    /// Waits for the node's turn at the deal rows, not counted meanwhile:
    /// its start moves later by the wait.
    async fn take_turn<'t>(&self, turn: &'t Turn) -> tokio::sync::MutexGuard<'t, ()> {
        let waiting_since = now_ms();
        let since = self.health.commit_ended(self.batch).unwrap_or(waiting_since);
        let guard = turn.0.lock().await;
        self.health
            .commit_started(self.batch, since + (now_ms() - waiting_since));
        guard
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.health.commit_ended(self.batch);
    }
}

/// The node's batches take their deal rows one at a time: a batch's guarded
/// update and commit run under this lock, while the other batches of the
/// node (`commerce.settle_parallel`) write their orders. So a node has at
/// most one transaction holding or waiting for a deal row: frozen, it keeps
/// the other nodes waiting behind that one alone (until Postgres ends it,
/// `database.idle_in_transaction_timeout_ms`), as with a single batch.
#[derive(Default)]
struct Turn(tokio::sync::Mutex<()>);

impl Settler {
    /// A settler and its task, which commits through `db` and then tells `gate`
    /// and `stock` what happened.
    pub fn new(
        config: &CommerceConfig,
        db: PgPool,
        gate: Gate,
        stock: StockAnnouncer,
    ) -> (Settler, SettleTask) {
        let (tx, rx) = mpsc::channel(config.settle_queue_max);
        let db_down_until = Arc::new(AtomicI64::new(0));
        let health = Arc::new(SettleHealth::default());
        let closed = CancellationToken::new();
        let task = SettleTask {
            rx,
            batch_max: config.batch_max,
            window: Duration::from_micros(config.batch_window_us),
            parallel: config.settle_parallel.max(1),
            parallel_min: (config.batch_max / PARALLEL_MIN_DIVISOR).max(1),
            closed: closed.clone(),
            committer: Arc::new(Committer {
                db,
                order_ttl_secs: i64::try_from(config.order_ttl_secs).unwrap_or(i64::MAX),
                commit_timeout: Duration::from_millis(config.commit_timeout_ms),
                hold_after_take: config.test_hold_after_take(),
                turn: Turn::default(),
                db_down_until: db_down_until.clone(),
                health: health.clone(),
                gate: gate.clone(),
                stock,
            }),
        };
        let settler = Settler {
            tx,
            db_down_until,
            health,
            gate,
            closed,
        };
        (settler, task)
    }

    /// Purchases fail fast for a second after Postgres was found unreachable.
    pub fn database_down(&self) -> bool {
        self.db_down_until.load(Ordering::Relaxed) > now_ms()
    }

    /// Why this node's batches cannot commit now (for readiness), if so.
    pub fn problem(&self) -> Option<String> {
        self.health.problem(now_ms())
    }

    /// Ends the settlement once what is queued is settled. Called after the
    /// listeners stopped, so no admitted request finds the task gone.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Queues a request and waits for its commit (or refusal). A request the
    /// task never took (queue full, task ended) has its reservation released
    /// before the buyer is told to retry.
    pub async fn submit(&self, request: SettleRequest) -> Result<SettleOutcome> {
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = self.tx.try_send((request, reply)) {
            let (request, _) = match refused {
                mpsc::error::TrySendError::Full(item) => {
                    metrics::counter!("hawker_settle_refused_total", "why" => "queue_full").increment(1);
                    item
                }
                mpsc::error::TrySendError::Closed(item) => {
                    metrics::counter!("hawker_settle_refused_total", "why" => "stopped").increment(1);
                    item
                }
            };
            release(&self.gate, &request).await;
            return Err(Error::Unavailable { what: "settlement" });
        }
        answer
            .await
            .unwrap_or(Err(Error::Unavailable { what: "settlement" }))
    }
}

/// Gives a pending reservation's units back (a no-op if it settled).
async fn release(gate: &Gate, request: &SettleRequest) {
    let key = ReservationKey::new(&request.buyer, &request.idempotency_key);
    if let Err(e) = gate.release(request.deal_id, &key, request.quantity).await {
        tracing::warn!(error = %e, "could not release a reservation; the reconciler will");
    }
}

impl SettleTask {
    /// Gathers and settles batches until the settler is closed (after the
    /// listeners stopped), finishing what is queued. A request still in the
    /// queue when the task ends is dropped with its reply, and its sender
    /// releases its reservation.
    ///
    /// Up to `parallel` batches commit at once. The next batch is gathered
    /// once a slot is free, so while every slot waits for Postgres the queue
    /// grows and the next batch is bigger.
    pub async fn run(mut self) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.parallel));
        let mut running = tokio::task::JoinSet::new();
        loop {
            let first = tokio::select! {
                // Finish what is queued first: those buyers are waiting.
                biased;
                first = self.rx.recv() => match first { Some(f) => f, None => break },
                _ = self.closed.cancelled() => {
                    self.rx.close();
                    match self.rx.recv().await { Some(f) => f, None => break }
                }
            };
            let Ok(mut slot) = slots.clone().acquire_owned().await else {
                break;
            };
            // Another batch is committing (this loop alone takes slots).
            let beside = slots.available_permits() + 1 < self.parallel;
            let mut batch: Vec<(SettleRequest, Reply)> = Vec::with_capacity(self.batch_max.min(1024));
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.window;
            loop {
                self.take_queued(&mut batch);
                if batch.len() >= self.batch_max {
                    break;
                }
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    _ => break,
                }
            }
            if beside && batch.len() < self.parallel_min {
                // Too few for a transaction of their own beside the running
                // one (each costs Postgres its fixed part): wait until it
                // is done, taking what queues meanwhile.
                drop(slot);
                let Ok(mut all) = slots.clone().acquire_many_owned(self.parallel as u32).await else {
                    break;
                };
                slot = match all.split(1) {
                    Some(one) => one,
                    None => all,
                };
                self.take_queued(&mut batch);
            }
            let committer = self.committer.clone();
            running.spawn(async move {
                let started = Instant::now();
                let size = batch.len();
                let after = committer.settle_batch(batch).await;
                metrics::histogram!("hawker_settle_batch_size").record(size as f64);
                metrics::histogram!("hawker_settle_batch_seconds").record(started.elapsed().as_secs_f64());
                tracing::trace!(size, us = started.elapsed().as_micros() as u64, "batch settled");
                // The buyers have their answers: the next batch may start
                // while the gate and the room are told (Redis round trips).
                drop(slot);
                if let Some(after) = after {
                    committer.after_commit(after).await;
                }
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    }

    /// Adds to `batch` what is already queued, up to `batch_max`.
    fn take_queued(&mut self, batch: &mut Vec<(SettleRequest, Reply)>) {
        while batch.len() < self.batch_max {
            match self.rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
    }
}

impl Committer {
    /// `commit`, bounded by `commit_timeout`, with the health it shows.
    async fn commit_bounded(&self, requests: &[SettleRequest]) -> Result<Committed> {
        let running = Running::start(&self.health);
        let committed = tokio::time::timeout(self.commit_timeout, commit(self, &running, requests))
            .await
            .unwrap_or(Err(Error::Unavailable { what: "the database" }));
        drop(running);
        match &committed {
            Ok(_) => self.health.succeeded(),
            Err(Error::Unavailable { .. }) => self.health.failed(),
            Err(_) => {}
        }
        committed
    }

    /// Commits a batch and answers its buyers; returns what the gate and the
    /// room are still to be told ([`Committer::after_commit`]).
    async fn settle_batch(&self, batch: Vec<(SettleRequest, Reply)>) -> Option<AfterCommit> {
        if self.db_down_until.load(Ordering::Relaxed) > now_ms() {
            // A batch just found Postgres unreachable: the requests queued
            // behind it are answered now, not after another
            // `database.acquire_timeout_ms` (their buyers have waited for
            // that batch already). Fresh reservations never reached Postgres:
            // they go back at once, like a request the queue refused.
            for (request, reply) in batch {
                if request.reserved_now {
                    self.release(&request).await;
                }
                let _ = reply.send(Err(Error::Unavailable { what: "the database" }));
            }
            return None;
        }
        let requests: Vec<SettleRequest> = batch.iter().map(|(r, _)| r.clone()).collect();
        match self.commit_bounded(&requests).await {
            Ok(result) => {
                // The buyers are answered as soon as their orders are
                // committed; the gate is told afterwards (a key it still
                // holds as pending is looked up in Postgres if repeated).
                let told = Told::of(&requests, &result.outcomes);
                for ((_, reply), outcome) in batch.into_iter().zip(result.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                Some(AfterCommit {
                    requests,
                    told,
                    deals: result.deals,
                })
            }
            Err(Error::Unavailable { what }) => {
                // The commit did not happen, or its outcome is unknown: keep
                // the gate's reservations (the reconciler settles or releases
                // them) and tell buyers to retry with the same key. A deal
                // row held by another node is that node's problem: retry at
                // once rather than fail fast.
                if what != DEAL_ROW_BUSY {
                    self.db_down_until.store(now_ms() + 1000, Ordering::Relaxed);
                }
                metrics::counter!("hawker_settle_failures_total", "kind" => "unavailable").increment(1);
                for (_, reply) in batch {
                    let _ = reply.send(Err(Error::Unavailable { what }));
                }
                None
            }
            Err(error) if batch.len() > 1 => {
                // A poisoned request broke a rule Postgres enforces: settle
                // each request alone, so one bad request fails only itself.
                tracing::warn!(error = %error, size = batch.len(), "batch refused; settling one by one");
                metrics::counter!("hawker_settle_failures_total", "kind" => "split").increment(1);
                for item in batch {
                    if let Some(after) = Box::pin(self.settle_batch(vec![item])).await {
                        self.after_commit(after).await;
                    }
                }
                None
            }
            Err(error) => {
                tracing::error!(error = %error, "settlement failed");
                metrics::counter!("hawker_settle_failures_total", "kind" => "error").increment(1);
                if let Some((request, reply)) = batch.into_iter().next() {
                    self.release(&request).await;
                    let _ = reply.send(Err(error));
                }
                None
            }
        }
    }

    async fn release(&self, request: &SettleRequest) {
        release(&self.gate, request).await;
    }

    /// Tells the gate what happened and announces the new stock.
    async fn after_commit(&self, after: AfterCommit) {
        let AfterCommit {
            requests,
            told,
            deals,
        } = after;
        let mut confirmed: HashMap<Uuid, Vec<(ReservationKey, Uuid)>> = HashMap::new();
        for (request, told) in requests.iter().zip(told) {
            let key = || ReservationKey::new(&request.buyer, &request.idempotency_key);
            match told {
                Told::Existing(order_id) => {
                    // The gate had lost this key (Redis flushed) and reserved
                    // units for an order Postgres already counts: give them back.
                    if let Err(e) = self
                        .gate
                        .settle_existing(request.deal_id, &key(), request.quantity, order_id)
                        .await
                    {
                        tracing::warn!(error = %e, "could not settle a replayed key; the reconciler will");
                    }
                }
                Told::Settled(order_id) => {
                    confirmed
                        .entry(request.deal_id)
                        .or_default()
                        .push((key(), order_id));
                }
                Told::Refused => release(&self.gate, request).await,
            }
        }
        for (deal, settled) in confirmed {
            if let Err(e) = self.gate.confirm(deal, &settled).await {
                tracing::warn!(error = %e, "could not confirm settled reservations");
            }
        }
        for figure in deals {
            for buyer in &figure.offers_bought {
                let _ = self.gate.revoke_offer(figure.deal_id, buyer).await;
            }
            if let Some(count) = &figure.waitlist_count {
                self.stock.announce(count.clone());
            }
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

/// A committed batch, for [`Committer::after_commit`].
struct AfterCommit {
    requests: Vec<SettleRequest>,
    told: Vec<Told>,
    deals: Vec<DealAfter>,
}

/// What the gate is told of one request after its batch committed.
enum Told {
    /// Its order existed before this request's own admission reserved units
    /// for it: those units go back.
    Existing(Uuid),
    /// Its order exists: the reservation is settled.
    Settled(Uuid),
    /// Refused: the reservation is released.
    Refused,
}

impl Told {
    fn of(requests: &[SettleRequest], outcomes: &[SettleOutcome]) -> Vec<Told> {
        requests
            .iter()
            .zip(outcomes)
            .map(|(request, outcome)| match outcome {
                SettleOutcome::Existing(order) if request.reserved_now => Told::Existing(order.order_id),
                SettleOutcome::Created(order) | SettleOutcome::Existing(order) => {
                    Told::Settled(order.order_id)
                }
                SettleOutcome::Rejected(_) => Told::Refused,
            })
            .collect()
    }
}

/// A deal's figures after the batch's units were taken.
struct DealAfter {
    deal_id: Uuid,
    session_id: Uuid,
    remaining: i32,
    quantity: i32,
    version: i64,
    /// This batch sold its last unit (or sold from an ended deal's waitlist offers).
    ended: bool,
    /// Buyers whose waitlist offers this batch bought.
    offers_bought: Vec<String>,
    /// The room's new waitlist count, when offers were bought.
    waitlist_count: Option<stock::Figure>,
}

/// What a committed batch answers and changed.
struct Committed {
    /// One per request, in the batch's order.
    outcomes: Vec<SettleOutcome>,
    deals: Vec<DealAfter>,
}

/// The deal row held by another transaction past `lock_timeout`: a sick peer,
/// not this node's database path, so the node does not fail fast for it.
const DEAL_ROW_BUSY: &str = "the deal (held by another node)";

/// Decides and commits a batch in one transaction.
///
/// The deal rows are read without a lock and taken only at the end by a
/// guarded update (`take_units`), so the lock another node waits for is held
/// only from that update to the commit. If a guard fails (another node sold
/// meanwhile), the batch's writes are rolled back to a savepoint, that deal's
/// row is read again, locked this time, and the batch decided again: the
/// outcome is the one a fresh read would have given, earlier requests first.
async fn commit(c: &Committer, running: &Running<'_>, requests: &[SettleRequest]) -> Result<Committed> {
    let (order_ttl_secs, hold_after_take) = (c.order_ttl_secs, c.hold_after_take);
    let mut tx = c.db.begin().await?;
    let mut known = read(&mut tx, requests).await?;
    let mut locked: HashSet<Uuid> = HashSet::new();
    // The buyers' units are not read first: the gate kept every buyer under
    // the cap, so the batch is decided as if they held none and the
    // guarded upsert of `add_buyer_units` checks the sum. Only when it finds
    // a buyer over the cap (the gate lost a count: Redis flushed) are the
    // buyers' rows read, locked, and the batch decided again.
    let mut held_read = false;
    // Nor are the orders that already exist for the batch's keys: the insert
    // fails on a key that has one, and only then is the batch decided again
    // with those orders read (a replay is answered with its order).
    let mut existing_read = false;
    loop {
        // Again after each rollback to it, so that rows locked since stay locked.
        sqlx::query("savepoint take").execute(&mut *tx).await?;
        let decisions = decide::decide(requests, &known);
        // Until a key is found taken, the insert has no `on conflict`
        // clause: a taken key fails the statement (one index probe per row
        // fewer than an arbiter's), the batch rolls back to its savepoint,
        // reads the existing orders and is decided again; from then on the
        // insert skips a key another node takes meanwhile.
        let Some(created) = insert_orders(
            &mut tx,
            requests,
            &known.deals,
            &decisions,
            order_ttl_secs,
            existing_read,
        )
        .await?
        else {
            existing_read = true;
            metrics::counter!("hawker_settle_redecided_total", "why" => "existing_order").increment(1);
            sqlx::query("rollback to savepoint take")
                .execute(&mut *tx)
                .await?;
            known.existing = read_existing(&mut tx, requests).await?;
            continue;
        };
        if !add_buyer_units(&mut tx, &created, &known.deals).await? {
            if held_read {
                // Decided under the buyers' row locks and still over: only
                // a bug gets here; Postgres kept the rule.
                return Err(Error::Internal(anyhow::anyhow!(
                    "a buyer over the cap under their own row lock"
                )));
            }
            held_read = true;
            metrics::counter!("hawker_settle_redecided_total", "why" => "buyer_units").increment(1);
            sqlx::query("rollback to savepoint take")
                .execute(&mut *tx)
                .await?;
            known.held = read_held(&mut tx, requests).await?;
            continue;
        }
        mark_coupons_used(&mut tx, &created).await?;
        // Every order the settlement creates is a deal order.
        let units = decide::units_by_deal(
            created
                .values()
                .filter_map(|o| o.deal_id.map(|d| (d, o.quantity))),
        )?;
        let turn = running.take_turn(&c.turn).await;
        match take_units(&mut tx, &units, &known.deals, &created).await? {
            Taken::All(deals) => {
                if !hold_after_take.is_zero() {
                    // Test hook (`commerce.test_hold_after_take_ms`): hold the
                    // deal rows as a node frozen before its commit would.
                    tokio::time::sleep(hold_after_take).await;
                }
                tx.commit().await?;
                drop(turn);
                metrics::counter!("hawker_orders_committed_total").increment(created.len() as u64);
                return Ok(Committed {
                    outcomes: decide::answers(decisions, created),
                    deals,
                });
            }
            Taken::Short(deal_id) => {
                if !locked.insert(deal_id) {
                    // Decided under this row's lock and still short: only a
                    // bug gets here; Postgres kept the rule.
                    return Err(Error::Internal(anyhow::anyhow!(
                        "deal {deal_id} short of units under its own lock"
                    )));
                }
                metrics::counter!("hawker_settle_redecided_total", "why" => "deal_units").increment(1);
                sqlx::query("rollback to savepoint take")
                    .execute(&mut *tx)
                    .await?;
                // The rows are read again under their lock: a wait in
                // Postgres, which must not hold the node's other batches.
                // The one case this leaves: the batch that takes the turn
                // next needs the row this one now locks (both sell several
                // deals); it waits `database.lock_timeout_ms` and fails as
                // busy (503, retried with the same key), which releases the
                // turn. Rare: a guard fails only when another node sold the
                // units meanwhile.
                drop(turn);
                for row in read_deals(&mut tx, &[deal_id], true).await? {
                    known.deals.insert(row.deal_id, row);
                }
                // Under the row lock no offer of this deal changes.
                let buyers: Vec<&str> = requests.iter().map(|r| r.buyer.as_str()).collect();
                known.offers.retain(|(d, _), _| *d != deal_id);
                known
                    .offers
                    .extend(crate::waitlist::open_offers(&mut tx, &[deal_id], &buyers).await?);
            }
        }
    }
}

/// The batch's deal rows; `lock` takes their row locks (only when a guarded
/// update failed and the batch is decided again).
async fn read_deals(
    tx: &mut Transaction<'_, Postgres>,
    deal_ids: &[Uuid],
    lock: bool,
) -> Result<Vec<DealRow>> {
    let sql = format!(
        "select deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity, sold,
                per_buyer_cap, status, end_reason, starts_at <= now() as started, ends_at <= now() as over,
                floor_price_minor
           from deal where deal_id = any($1) order by deal_id{}",
        if lock { " for update" } else { "" }
    );
    sqlx::query_as::<_, DealRow>(&sql)
        .bind(deal_ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(deal_row_error)
}

/// A lock wait on a deal row that timed out is another node's doing.
fn deal_row_error(e: sqlx::Error) -> Error {
    let lock_timeout = matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"));
    if lock_timeout {
        metrics::counter!("hawker_settle_failures_total", "kind" => "deal_row_busy").increment(1);
        Error::Unavailable { what: DEAL_ROW_BUSY }
    } else {
        e.into()
    }
}

/// Step 1: reads the batch's deals (without locking them), locks its coupon
/// claims, and reads the orders that already exist for its keys. The
/// buyers' units are read only if the batch finds one over the cap (`commit`).
async fn read(tx: &mut Transaction<'_, Postgres>, requests: &[SettleRequest]) -> Result<Known> {
    let mut deal_ids: Vec<Uuid> = requests
        .iter()
        .map(|r| r.deal_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    deal_ids.sort();
    let deals: HashMap<Uuid, DealRow> = read_deals(tx, &deal_ids, false)
        .await?
        .into_iter()
        .map(|d| (d.deal_id, d))
        .collect();

    let buyers: Vec<&str> = requests.iter().map(|r| r.buyer.as_str()).collect();
    let claim_ids: Vec<Uuid> = requests.iter().filter_map(|r| r.coupon_claim_id).collect();
    let claims: HashMap<Uuid, ClaimRow> = if claim_ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, ClaimRow>(
            "select c.coupon_claim_id, c.viewer_id, c.used_at, d.discount_kind, d.discount_value, d.currency,
                    d.min_spend_minor, d.lineup_item_id, d.deal_id, d.session_id, d.status
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
    // Only a sold-out deal has waitlist offers: the stampede path skips this.
    let sold_out: Vec<Uuid> = deals
        .values()
        .filter(|d| d.end_reason.as_deref() == Some("sold_out"))
        .map(|d| d.deal_id)
        .collect();
    let offers = if sold_out.is_empty() {
        HashMap::new()
    } else {
        crate::waitlist::open_offers(tx, &sold_out, &buyers).await?
    };
    Ok(Known {
        deals,
        held: HashMap::new(),
        existing: HashMap::new(),
        claims,
        offers,
    })
}

/// The orders that already exist for the batch's (buyer, key), with their
/// request hash. Read only when the insert found one (a replay whose key the
/// gate had lost, or a race with another node): the common batch skips the
/// round trip.
async fn read_existing(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[SettleRequest],
) -> Result<HashMap<BuyerKey, (Order, String)>> {
    let buyers: Vec<&str> = requests.iter().map(|r| r.buyer.as_str()).collect();
    let keys: Vec<&str> = requests.iter().map(|r| r.idempotency_key.as_str()).collect();
    Ok(sqlx::query_as::<_, ExistingRow>(&format!(
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
    .collect())
}

/// The units each of the batch's buyers holds of its deal, their rows
/// locked in key order (the order every batch's upsert takes them in). One
/// index lookup per (deal, buyer), whatever the table's statistics say.
async fn read_held(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[SettleRequest],
) -> Result<HashMap<(Uuid, String), i32>> {
    let pairs: BTreeSet<(Uuid, &str)> = requests.iter().map(|r| (r.deal_id, r.buyer.as_str())).collect();
    let (deals, buyers): (Vec<Uuid>, Vec<&str>) = pairs.into_iter().unzip();
    Ok(sqlx::query_as::<_, (Uuid, String, i32)>(
        "select b.deal_id, b.buyer_id, b.units
           from unnest($1::uuid[], $2::text[]) as t(deal_id, buyer_id)
           join deal_buyer b on b.deal_id = t.deal_id and b.buyer_id = t.buyer_id
          order by b.deal_id, b.buyer_id
            for update of b",
    )
    .bind(&deals)
    .bind(&buyers)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(d, b, u)| ((d, b), u))
    .collect())
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    #[sqlx(flatten)]
    order: Order,
    request_hash: String,
    key_again: String,
}

/// Step 3: inserts the accepted orders in one statement; returns them by
/// request index. `None` if a (buyer, key) already has an order; with
/// `skip_taken`, such a key (another node inserted it first) is skipped
/// instead.
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[SettleRequest],
    deals: &HashMap<Uuid, DealRow>,
    decisions: &[Decision],
    order_ttl_secs: i64,
    skip_taken: bool,
) -> Result<Option<HashMap<usize, Order>>> {
    let mut cols = OrderColumns::default();
    for (i, d) in decisions.iter().enumerate() {
        let Decision::Accept(price) = d else {
            continue;
        };
        let r = &requests[i];
        if let Some(deal) = deals.get(&r.deal_id) {
            cols.push(i, r, deal, price);
        }
    }
    if cols.index.is_empty() {
        return Ok(Some(HashMap::new()));
    }
    cols.insert(tx, order_ttl_secs, skip_taken).await
}

/// Step 4: adds the inserted units to each buyer's `deal_buyer` row, in key
/// order, only where the sum stays within the cap. `false` if a buyer's row
/// would have gone over it (nothing is added for that buyer): the batch is
/// then decided again with the buyers' units read.
async fn add_buyer_units(
    tx: &mut Transaction<'_, Postgres>,
    created: &HashMap<usize, Order>,
    deals: &HashMap<Uuid, DealRow>,
) -> Result<bool> {
    let mut buyer_units: BTreeMap<(Uuid, &str), i32> = BTreeMap::new();
    for order in created.values() {
        if let Some(deal_id) = order.deal_id {
            let units = buyer_units.entry((deal_id, order.buyer_id.as_str())).or_default();
            *units = units.saturating_add(order.quantity);
        }
    }
    if buyer_units.is_empty() {
        return Ok(true);
    }
    let (mut d, mut b, mut u, mut cap) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((deal_id, buyer), units) in &buyer_units {
        d.push(*deal_id);
        b.push(*buyer);
        u.push(*units);
        cap.push(deals.get(deal_id).map(|x| x.per_buyer_cap).unwrap_or(0));
    }
    let added = sqlx::query(
        "insert into deal_buyer (deal_id, buyer_id, units, cap)
         select * from unnest($1::uuid[], $2::text[], $3::int[], $4::int[])
         on conflict (deal_id, buyer_id) do update set units = deal_buyer.units + excluded.units
          where deal_buyer.units + excluded.units <= deal_buyer.cap",
    )
    .bind(&d)
    .bind(&b)
    .bind(&u)
    .bind(&cap)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(added == buyer_units.len() as u64)
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

/// What the guarded updates of step 6 did.
enum Taken {
    /// Every deal had the units: their figures after the update.
    All(Vec<DealAfter>),
    /// This deal no longer had them (another node sold, or it ended): the
    /// batch must be decided again against its fresh row.
    Short(Uuid),
}

/// Step 6: takes the inserted units from each deal, once per deal and in id
/// order, with a guarded update: the row lock is taken here, at the end of
/// the transaction, and only if the units are still there. A deal that sells
/// its last unit ends `sold_out` here, its final stock and `deal.ended`
/// queued in the room outbox. The `deal_no_oversell` constraint stays the
/// last line of defence.
async fn take_units(
    tx: &mut Transaction<'_, Postgres>,
    units: &BTreeMap<Uuid, i32>,
    deals: &HashMap<Uuid, DealRow>,
    created: &HashMap<usize, Order>,
) -> Result<Taken> {
    let mut after = Vec::with_capacity(units.len());
    for (deal_id, units) in units {
        if deals.get(deal_id).is_some_and(|d| d.status == "ended") {
            // Only waitlist offers sell from an ended deal (decide).
            match take_offered(tx, *deal_id, *units, created).await? {
                Some(a) => {
                    after.push(a);
                    continue;
                }
                None => return Ok(Taken::Short(*deal_id)),
            }
        }
        let taken: Option<(Uuid, i32, i32, i64, bool)> = sqlx::query_as(
            "update deal set sold = sold + $2, stock_version = stock_version + 1,
                    status = case when sold + $2 = quantity then 'ended' else status end,
                    end_reason = case when sold + $2 = quantity then 'sold_out' else end_reason end,
                    ended_at = case when sold + $2 = quantity then now() else ended_at end
              where deal_id = $1 and status <> 'ended' and sold + $2 <= quantity
          returning session_id, quantity, sold, stock_version, status = 'ended'",
        )
        .bind(deal_id)
        .bind(units)
        .fetch_optional(&mut **tx)
        .await
        .map_err(deal_row_error)?;
        let Some((session_id, quantity, new_sold, version, ended)) = taken else {
            return Ok(Taken::Short(*deal_id));
        };
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
            offers_bought: Vec::new(),
            waitlist_count: None,
        });
    }
    Ok(Taken::All(after))
}

/// Step 6, for a sold-out deal: the units of its waitlist offers' orders
/// come from `held`, and the offers are marked bought, under the deal's row
/// lock (taken by the update, before the entries: the waitlist's lock
/// order). `None` if the held units or an offer are no longer there.
async fn take_offered(
    tx: &mut Transaction<'_, Postgres>,
    deal_id: Uuid,
    units: i32,
    created: &HashMap<usize, Order>,
) -> Result<Option<DealAfter>> {
    let taken: Option<(Uuid, i32, i32, i64)> = sqlx::query_as(
        "update deal set sold = sold + $2, held = held - $2, stock_version = stock_version + 1
          where deal_id = $1 and status = 'ended' and end_reason = 'sold_out' and ends_at > now() and held >= $2
      returning session_id, quantity, sold, stock_version",
    )
    .bind(deal_id)
    .bind(units)
    .fetch_optional(&mut **tx)
    .await
    .map_err(deal_row_error)?;
    let Some((session_id, quantity, _, version)) = taken else {
        return Ok(None);
    };
    let mut bought: HashMap<String, (i32, Uuid)> = HashMap::new();
    for order in created.values().filter(|o| o.deal_id == Some(deal_id)) {
        let entry = bought
            .entry(order.buyer_id.clone())
            .or_insert((0, order.order_id));
        entry.0 = entry.0.saturating_add(order.quantity);
    }
    let Some(count) = crate::waitlist::mark_bought(tx, deal_id, session_id, &bought).await? else {
        return Ok(None);
    };
    Ok(Some(DealAfter {
        deal_id,
        session_id,
        remaining: 0,
        quantity,
        version,
        ended: true,
        offers_bought: bought.into_keys().collect(),
        waitlist_count: Some(count),
    }))
}

/// The settlement's insert (`OrderColumns::insert`): one row per element of
/// the arrays. Attribution: the host on air now in each session, computed
/// once per session of the batch (the `on_air` CTE, materialised: one row per
/// session, so the join keeps one row per order) by the agency's
/// `host_on_shift()`, in the insert's own round trip. Joins, not per-row
/// subqueries, so the planner may hash them.
macro_rules! insert_orders_sql {
    ($conflict:literal) => {
        concat!(
            "with on_air as materialized (
                 select s as session_id, host_on_shift(s, now()) as host_id from unnest($16::uuid[]) as s)
             insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                    unit_price_minor, discount_minor, amount_minor, currency, coupon_claim_id, idempotency_key,
                    request_hash, expires_at, host_id, shipping_address)
             select t.order_id, t.deal_id, t.session_id, t.lineup_item_id, t.sku_id, t.buyer_id, t.quantity,
                    t.unit_price_minor, t.discount_minor, t.amount_minor, t.currency, t.coupon_claim_id,
                    t.idempotency_key, t.request_hash, now() + make_interval(secs => $15),
                    a.host_id, p.shipping_address
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::int[],
                           $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::uuid[], $13::text[],
                           $14::text[])
                    as t(order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                         unit_price_minor, discount_minor, amount_minor, currency, coupon_claim_id,
                         idempotency_key, request_hash)
               join on_air a on a.session_id = t.session_id
               left join viewer_profile p on p.viewer_id = t.buyer_id
             ",
            $conflict,
            " returning order_id, created_at, expires_at, host_id"
        )
    };
}
const INSERT_ORDERS: &str = insert_orders_sql!("");
const INSERT_ORDERS_SKIPPING_TAKEN: &str =
    insert_orders_sql!(" on conflict on constraint customer_order_idempotency do nothing");

/// What the insert returns of each order it wrote.
#[derive(sqlx::FromRow)]
struct Inserted {
    order_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    host_id: Option<Uuid>,
}

/// Column arrays for one multi-row insert.
#[derive(Default)]
struct OrderColumns {
    /// The request each row answers.
    index: Vec<usize>,
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
    fn push(&mut self, index: usize, r: &SettleRequest, deal: &DealRow, price: &Price) {
        self.index.push(index);
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

    /// Inserts ([`insert_orders`] says what `None` and `skip_taken` mean). Only
    /// the times come back from Postgres (`now()` is the transaction's, the
    /// same for every row): the rest of each order is what was sent.
    async fn insert(
        self,
        tx: &mut Transaction<'_, Postgres>,
        ttl_secs: i64,
        skip_taken: bool,
    ) -> Result<Option<HashMap<usize, Order>>> {
        let mut sessions = self.session_id.clone();
        sessions.sort_unstable();
        sessions.dedup();
        let sql = if skip_taken {
            INSERT_ORDERS_SKIPPING_TAKEN
        } else {
            INSERT_ORDERS
        };
        let rows: Vec<Inserted> = match sqlx::query_as(sql)
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
            .bind(&sessions)
            .fetch_all(&mut **tx)
            .await
        {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e))
                if e.constraint() == Some("customer_order_idempotency") && e.is_unique_violation() =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let inserted: HashMap<Uuid, Inserted> = rows.into_iter().map(|row| (row.order_id, row)).collect();
        let mut created = HashMap::with_capacity(inserted.len());
        for (row, order_id) in self.order_id.iter().enumerate() {
            let Some(Inserted {
                created_at,
                expires_at,
                host_id,
                ..
            }) = inserted.get(order_id)
            else {
                continue;
            };
            created.insert(
                self.index[row],
                Order {
                    order_id: *order_id,
                    source: Source::Deal,
                    deal_id: Some(self.deal_id[row]),
                    auction_id: None,
                    giveaway_id: None,
                    group_buy_id: None,
                    session_id: self.session_id[row],
                    lineup_item_id: self.lineup_item_id[row],
                    sku_id: self.sku_id[row],
                    buyer_id: self.buyer_id[row].clone(),
                    quantity: self.quantity[row],
                    unit_price_minor: self.unit_price[row],
                    discount_minor: self.discount[row],
                    amount_minor: self.amount[row],
                    currency: self.currency[row].clone(),
                    coupon_claim_id: self.coupon[row],
                    status: "pending_payment".to_string(),
                    created_at: *created_at,
                    expires_at: *expires_at,
                    paid_at: None,
                    cancelled_at: None,
                    host_id: *host_id,
                },
            );
        }
        Ok(Some(created))
    }
}
