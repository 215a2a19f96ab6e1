//! The node's bid path after the entry checks: a cheap pre-check from the
//! cached minimum, then one batcher task per node that commits the bids it
//! gathered per auction in one transaction.
//!
//! **The global order of an auction's bids** is decided in Postgres: a batch
//! locks the auction row (`for update`), reads the database clock
//! (`clock_timestamp()`) after the lock, refuses every bid of the batch if
//! the auction is not running or that clock is at or past `ends_at`, and
//! applies [`rules::resolve`] to the batch's bids in the order this node
//! received them, numbering the accepted ones from `auction.bid_seq`. Batches
//! of different nodes take turns on the row lock, so the sequence numbers of
//! all nodes form one order, and each batch sees every earlier batch's
//! outcome. An anti-snipe extension is decided by the same clock.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hawker_core::error::{Error, Result};
use hawker_hub::Notice;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::rules::{self, Ask, Increment, Increments, Leader, Resolution, Standing, Terms};
use super::{AuctionMode, AuctionStatus, BidAccepted};
use crate::Live;

/// Requests waiting for the batcher at most (a full queue answers 503).
const QUEUE: usize = 20_000;
/// How long a bidder's at-risk answer is reused.
const RISK_TTL: Duration = Duration::from_secs(30);

/// A bid waiting for its batch.
struct Request {
    auction_id: Uuid,
    ask: Ask,
    name: String,
    reply: oneshot::Sender<Result<BidAccepted>>,
}

/// What this node knows of an auction without asking Postgres: prices only
/// rise and an ended auction never runs again, so a bid below `min_bid` or
/// on a closed auction is hopeless.
#[derive(Debug, Clone, Copy)]
struct Cached {
    min_bid: i64,
    closed: bool,
}

/// The node's auction bidding service.
pub(crate) struct Auctions {
    queue: mpsc::Sender<Request>,
    cache: Mutex<HashMap<Uuid, Cached>>,
    risk: Mutex<HashMap<String, (Instant, bool)>>,
    events: super::events::Announcer,
}

impl Auctions {
    /// The service and the receiving end its task runs on.
    pub(crate) fn new(events: super::events::Announcer) -> (Auctions, BatcherInbox) {
        let (queue, inbox) = mpsc::channel(QUEUE);
        (
            Auctions {
                queue,
                cache: Mutex::new(HashMap::new()),
                risk: Mutex::new(HashMap::new()),
                events,
            },
            BatcherInbox(inbox),
        )
    }

    pub(crate) fn events(&self) -> &super::events::Announcer {
        &self.events
    }

    /// Marks an auction closed on this node (ended or voided here).
    pub(crate) fn forget(&self, auction_id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                auction_id,
                Cached {
                    min_bid: i64::MAX,
                    closed: true,
                },
            );
        }
    }

    fn cached(&self, auction_id: Uuid) -> Option<Cached> {
        self.cache.lock().ok().and_then(|c| c.get(&auction_id).copied())
    }

    fn remember(&self, auction_id: Uuid, fresh: Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            let entry = cache.entry(auction_id).or_insert(fresh);
            // Never backwards: a slower batch's answer must not lower the minimum.
            entry.min_bid = entry.min_bid.max(fresh.min_bid);
            entry.closed |= fresh.closed;
        }
    }

    /// Refuses a buyer with more than `live.at_risk_unpaid_wins` lapsed
    /// auction orders in the last `live.at_risk_days` days (403).
    pub(crate) async fn at_risk_check(&self, live: &Live, user: &str) -> Result<()> {
        let config = live.config();
        if config.at_risk_unpaid_wins <= 0 {
            return Ok(());
        }
        let known = self
            .risk
            .lock()
            .ok()
            .and_then(|r| r.get(user).copied())
            .filter(|(at, _)| at.elapsed() < RISK_TTL);
        let at_risk = match known {
            Some((_, at_risk)) => at_risk,
            None => {
                let since = Utc::now() - chrono::Duration::days(config.at_risk_days.max(0));
                let lapsed =
                    hawker_commerce::lapsed::lapsed_orders_of(live.db(), user, "auction", since).await?;
                let at_risk = lapsed > config.at_risk_unpaid_wins;
                if let Ok(mut r) = self.risk.lock() {
                    if r.len() > 100_000 {
                        r.clear();
                    }
                    r.insert(user.to_string(), (Instant::now(), at_risk));
                }
                at_risk
            }
        };
        if at_risk {
            return Err(Error::forbidden(format!(
                "bidding is closed to buyers with more than {} unpaid auction wins in the last {} days",
                config.at_risk_unpaid_wins, config.at_risk_days
            )));
        }
        Ok(())
    }

    /// Queues a bid for this node's batcher and waits for its answer.
    pub(crate) async fn bid(
        &self,
        live: &Live,
        auction_id: Uuid,
        ask: Ask,
        name: String,
    ) -> Result<BidAccepted> {
        if let Some(cached) = self.cached(auction_id) {
            if cached.closed {
                return Err(ended());
            }
            let offered = ask
                .amount_minor
                .or(ask.max_minor)
                .unwrap_or(0)
                .max(ask.max_minor.unwrap_or(0));
            let too_low = match ask.amount_minor {
                Some(amount) => amount < cached.min_bid,
                None => offered < cached.min_bid,
            };
            if too_low {
                metrics::counter!("hawker_auction_bids_refused_total", "why" => "precheck").increment(1);
                return Err(too_low_error(cached.min_bid));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Request {
                auction_id,
                ask,
                name,
                reply,
            })
            .map_err(|_| Error::Unavailable {
                what: "the bid queue",
            })?;
        let wait = Duration::from_millis(live.config().bid_commit_timeout_ms.saturating_mul(3));
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(answer)) => answer,
            _ => Err(Error::Unavailable {
                what: "the bid batcher",
            }),
        }
    }
}

pub(crate) fn ended() -> Error {
    Error::conflict("auction_ended", "the auction has ended")
}

fn too_low_error(min_minor: i64) -> Error {
    Error::conflict(
        "bid_too_low",
        format!("the minimum acceptable bid is {min_minor} minor units"),
    )
}

/// The batcher's end of the queue.
pub(crate) struct BatcherInbox(mpsc::Receiver<Request>);

/// The batcher task: gathers up to `live.bid_batch_max` bids within
/// `live.bid_batch_window_us` of the first, then commits each auction's in
/// one transaction (auctions one after another), until `shutdown`.
pub(crate) async fn run(live: Live, inbox: BatcherInbox, shutdown: CancellationToken) {
    let mut inbox = inbox.0;
    let max = live.config().bid_batch_max.max(1);
    let window = Duration::from_micros(live.config().bid_batch_window_us);
    while let Some(batch) = crate::batch::next(&mut inbox, max, window, &shutdown).await {
        // Per auction, in arrival order.
        for (auction_id, group) in crate::batch::per_key(batch, |r| r.auction_id) {
            settle(&live, auction_id, group).await;
        }
    }
}

/// One auction's batch: commit, answer, announce.
async fn settle(live: &Live, auction_id: Uuid, group: Vec<Request>) {
    let started = Instant::now();
    let n = group.len();
    let (asks, replies): (Vec<(Ask, String)>, Vec<_>) =
        group.into_iter().map(|r| ((r.ask, r.name), r.reply)).unzip();
    let timeout = Duration::from_millis(live.config().bid_commit_timeout_ms);
    let committed = match tokio::time::timeout(timeout, commit(live, auction_id, &asks)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable { what: "the database" }),
    };
    metrics::histogram!("hawker_auction_batch_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("hawker_auction_batch_size").record(n as f64);
    match committed {
        Err(e) => {
            let unavailable = e.is_unavailable();
            let code = e.code();
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(match (unavailable, code) {
                    (true, _) => Error::Unavailable { what: "the database" },
                    (_, "not_found") => Error::NotFound("auction"),
                    (_, "auction_ended") => ended(),
                    _ => Error::Internal(anyhow::anyhow!("bid batch failed: {message}")),
                }));
            }
        }
        Ok(batch) => {
            let auctions = &live.inner.auctions;
            auctions.remember(
                auction_id,
                Cached {
                    min_bid: batch.min_bid,
                    closed: batch.closed,
                },
            );
            for (reply, answer) in replies.into_iter().zip(batch.answers) {
                let _ = reply.send(answer);
            }
            if let Some(view) = batch.view {
                auctions
                    .events()
                    .bid(batch.session_id, auction_id, view, batch.bid_seq);
            }
            if let Some(ends_at) = batch.extended_to {
                auctions
                    .events()
                    .extended(batch.session_id, auction_id, ends_at, batch.bid_seq);
            }
            if !batch.outbid.is_empty() {
                let notices: Vec<Notice> = batch
                    .outbid
                    .into_iter()
                    .map(|user| {
                        Notice::new(
                            user,
                            "auction.outbid",
                            json!({ "auction_id": auction_id, "price_minor": batch.price,
                                    "min_bid_minor": batch.min_bid, "ends_at": batch.ends_at }),
                        )
                        .in_session(batch.session_id)
                    })
                    .collect();
                let hub = live.hub().clone();
                tokio::spawn(async move {
                    if let Err(e) = hub.publish_notices(&notices).await {
                        tracing::debug!(error = %e, "outbid notices not sent");
                    }
                });
            }
        }
    }
}

/// What a committed batch changed.
struct Batch {
    session_id: Uuid,
    answers: Vec<Result<BidAccepted>>,
    min_bid: i64,
    closed: bool,
    bid_seq: i64,
    price: Option<i64>,
    ends_at: DateTime<Utc>,
    /// The new room view, if any bid was accepted.
    view: Option<serde_json::Value>,
    extended_to: Option<DateTime<Utc>>,
    /// Users who lost the lead in this batch and do not hold it at its end.
    outbid: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Locked {
    session_id: Uuid,
    lineup_item_id: Uuid,
    sku_id: Uuid,
    currency: String,
    status: AuctionStatus,
    mode: AuctionMode,
    snipe_window_secs: Option<i32>,
    start_price_minor: i64,
    increments: sqlx::types::Json<Vec<Increment>>,
    reserve_minor: Option<i64>,
    ends_at: DateTime<Utc>,
    bid_seq: i64,
    price_minor: Option<i64>,
    leader_id: Option<String>,
    leader_name: Option<String>,
    leader_max_minor: Option<i64>,
}

/// The columns of one accepted bid, for the batch's insert.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    bidder: Vec<String>,
    name: Vec<String>,
    amount: Vec<i64>,
    max: Vec<i64>,
    min: Vec<i64>,
    exact: Vec<bool>,
    price_after: Vec<i64>,
    leader_after: Vec<String>,
    extended_to: Vec<Option<DateTime<Utc>>>,
}

async fn commit(live: &Live, auction_id: Uuid, asks: &[(Ask, String)]) -> Result<Batch> {
    let mut tx = live.db().begin().await?;
    let row = sqlx::query_as::<_, Locked>(
        "select session_id, lineup_item_id, sku_id, currency::text as currency, status, mode, snipe_window_secs,
                start_price_minor, increments, reserve_minor, ends_at, bid_seq, price_minor, leader_id, leader_name,
                leader_max_minor
           from auction where auction_id = $1 for update",
    )
    .bind(auction_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("auction"))?;
    // The clock that decides: read after the lock, so a batch that waited
    // for another is judged by when it got its turn.
    let now: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&mut *tx)
        .await?;
    let increments = Increments::parse(row.increments.0.clone()).unwrap_or_else(|_| Increments::flat(1));
    let terms = Terms {
        start_minor: row.start_price_minor,
        increments,
        reserve_minor: row.reserve_minor,
    };
    let mut standing = Standing {
        leader: match (&row.leader_id, row.price_minor, row.leader_max_minor) {
            (Some(bidder), Some(price_minor), Some(max_minor)) => Some(Leader {
                bidder: bidder.clone(),
                price_minor,
                max_minor,
            }),
            _ => None,
        },
    };
    let mut leader_name = row.leader_name.clone();
    let open = row.status == AuctionStatus::Running && now < row.ends_at;
    let mut ends_at = row.ends_at;
    let mut seq = row.bid_seq;
    let mut rows = Rows::default();
    let mut answers = Vec::with_capacity(asks.len());
    let mut extended_to = None;
    let mut lost_lead: HashSet<String> = HashSet::new();
    for (ask, name) in asks {
        if !open {
            answers.push(Err(ended()));
            continue;
        }
        let resolution = rules::resolve(&terms, &mut standing, ask);
        let Resolution::Accepted {
            amount_minor,
            max_minor,
            min_minor,
            leading,
            outbid,
        } = resolution
        else {
            answers.push(Err(match resolution {
                Resolution::TooLow { min_minor } => too_low_error(min_minor),
                Resolution::AlreadyLeading { max_minor } => Error::conflict(
                    "already_leading",
                    format!("you lead; raise your maximum above {max_minor} minor units to change it"),
                ),
                Resolution::Malformed(why) => Error::invalid("bad_bid", why),
                Resolution::Accepted { .. } => Error::Internal(anyhow::anyhow!("unreachable")),
            }));
            continue;
        };
        if leading {
            leader_name = Some(name.clone());
        }
        if let Some(user) = outbid {
            lost_lead.insert(user);
        }
        seq += 1;
        let mut extended = None;
        if let (AuctionMode::AntiSnipe, Some(window)) = (row.mode, row.snipe_window_secs) {
            let window = chrono::Duration::seconds(i64::from(window));
            if now > ends_at - window {
                ends_at = now + window;
                extended = Some(ends_at);
                extended_to = Some(ends_at);
            }
        }
        let leader = standing
            .leader
            .as_ref()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("an accepted bid leaves a leader")))?;
        let leader_display = leader_name.clone().unwrap_or_default();
        rows.seq.push(seq);
        rows.bidder.push(ask.bidder.clone());
        rows.name.push(name.clone());
        rows.amount.push(amount_minor);
        rows.max.push(max_minor);
        rows.min.push(min_minor);
        rows.exact.push(ask.amount_minor.is_some());
        rows.price_after.push(leader.price_minor);
        rows.leader_after.push(leader_display.clone());
        rows.extended_to.push(extended);
        answers.push(Ok(BidAccepted {
            auction_id,
            seq,
            amount_minor,
            max_minor,
            leading,
            price_minor: leader.price_minor,
            leader_name: leader_display,
            min_bid_minor: terms.min_bid(&standing),
            ends_at,
            accepted_at: now,
        }));
    }
    let accepted = !rows.seq.is_empty();
    if accepted {
        sqlx::query(
            "insert into auction_bid (auction_id, seq, bidder_id, bidder_name, amount_minor, max_minor, min_minor,
                    exact, price_after, leader_after, accepted_at, extended_to)
             select $1, b.seq, b.bidder_id, b.bidder_name, b.amount_minor, b.max_minor, b.min_minor, b.exact,
                    b.price_after, b.leader_after, $11, b.extended_to
               from unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
                           $8::bool[], $9::bigint[], $10::text[], $12::timestamptz[])
                    as b(seq, bidder_id, bidder_name, amount_minor, max_minor, min_minor, exact, price_after,
                         leader_after, extended_to)",
        )
        .bind(auction_id)
        .bind(&rows.seq)
        .bind(&rows.bidder)
        .bind(&rows.name)
        .bind(&rows.amount)
        .bind(&rows.max)
        .bind(&rows.min)
        .bind(&rows.exact)
        .bind(&rows.price_after)
        .bind(&rows.leader_after)
        .bind(now)
        .bind(&rows.extended_to)
        .execute(&mut *tx)
        .await?;
        let leader = standing
            .leader
            .as_ref()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("an accepted bid leaves a leader")))?;
        sqlx::query(
            "update auction set bid_seq = $2, price_minor = $3, leader_id = $4, leader_name = $5,
                    leader_max_minor = $6, ends_at = $7
              where auction_id = $1",
        )
        .bind(auction_id)
        .bind(seq)
        .bind(leader.price_minor)
        .bind(&leader.bidder)
        .bind(&leader_name)
        .bind(leader.max_minor)
        .bind(ends_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("hawker_auction_bids_accepted_total").increment(rows.seq.len() as u64);
    } else {
        tx.rollback().await?;
    }
    let final_leader = standing.leader.as_ref().map(|l| l.bidder.clone());
    let outbid: Vec<String> = lost_lead
        .into_iter()
        .filter(|u| Some(u) != final_leader.as_ref())
        .collect();
    let price = standing.leader.as_ref().map(|l| l.price_minor);
    let min_bid = terms.min_bid(&standing);
    let view = accepted.then(|| {
        let mut a = super::Auction {
            auction_id,
            session_id: row.session_id,
            lineup_item_id: row.lineup_item_id,
            sku_id: row.sku_id,
            currency: row.currency.clone(),
            start_price_minor: row.start_price_minor,
            increments: row.increments.clone(),
            reserve_minor: row.reserve_minor,
            reserve_is_floor: false,
            mode: row.mode,
            snipe_window_secs: row.snipe_window_secs,
            duration_secs: 0,
            status: AuctionStatus::Running,
            starts_at: now,
            ends_at,
            bid_seq: seq,
            price_minor: price,
            leader_name: leader_name.clone(),
            outcome: None,
            winner_id: None,
            hammer_minor: None,
            order_id: None,
            void_reason: None,
            ended_at: None,
            created_at: now,
            reserve_met: false,
            min_bid_minor: None,
            leader_id: None,
        };
        a = a.derive(None);
        a.room_view()
    });
    Ok(Batch {
        session_id: row.session_id,
        answers,
        min_bid,
        closed: !open && row.status != AuctionStatus::Running,
        bid_seq: seq,
        price,
        ends_at,
        view,
        extended_to,
        outbid,
    })
}
