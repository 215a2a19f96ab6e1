//! Live auctions: a host (or its agency) auctions one unit of a lineup item
//! with a start price, an increment table, a duration, anti-snipe or sudden
//! death, and a reserve (the campaign floor when none is given).
//!
//! The path of a bid (entry → batcher → rules → events):
//! - [`place_bid`] (HTTP and the socket's `auction.bid`): who may bid, the
//!   at-risk rule, then the node's [`bidding::Bidder`], which refuses a
//!   hopeless bid from its cached price without Postgres;
//! - `bidding.rs` gathers a node's bids per auction and commits them in one
//!   transaction under the auction row's lock: the database clock after the
//!   lock decides lateness and anti-snipe, [`rules::resolve`] decides each bid
//!   in arrival order, `bid_seq` numbers the accepted ones (the global order);
//! - `events.rs` publishes `auction.bid` (coalesced, versioned by `bid_seq`)
//!   and `auction.extended`, and the outbid notices;
//! - `ticker.rs` ends due auctions once across nodes and creates the
//!   winner's order in the same transaction (`source.rs`).

pub(crate) mod bidding;
pub(crate) mod events;
pub mod rules;
pub(crate) mod source;
pub(crate) mod ticker;

use chrono::{DateTime, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_core::{Claims, Role};
use hawker_hub::{Bid, BidReply, CommandContext, Notice, Publication};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Error, Live, Result};
use rules::{Increment, Increments};

/// How an auction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AuctionMode {
    /// A bid in the last `snipe_window_secs` moves the end to that long after it.
    AntiSnipe,
    /// The clock ends it; no extension.
    SuddenDeath,
}

/// An auction's life: `running` → `ended`, or `voided`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AuctionStatus {
    Running,
    Ended,
    Voided,
}

/// How an ended auction came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AuctionOutcome {
    Sold,
    NoBids,
    ReserveNotMet,
}

/// An auction as stored, without its secrets (the leader's maximum).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Auction {
    pub auction_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub currency: String,
    pub start_price_minor: i64,
    #[schema(value_type = Vec<Increment>)]
    pub increments: sqlx::types::Json<Vec<Increment>>,
    /// The lowest hammer price that sells; shown only once the auction is over
    /// (while it runs, `reserve_met` says whether the price reached it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve_minor: Option<i64>,
    /// The reserve is the campaign's floor (none was given).
    pub reserve_is_floor: bool,
    pub mode: AuctionMode,
    pub snipe_window_secs: Option<i32>,
    pub duration_secs: i32,
    pub status: AuctionStatus,
    pub starts_at: DateTime<Utc>,
    /// The end, moved by anti-snipe extensions.
    pub ends_at: DateTime<Utc>,
    /// Accepted bids so far (the last bid's `seq`).
    pub bid_seq: i64,
    /// The current (or hammer) price; null before the first bid.
    pub price_minor: Option<i64>,
    /// The leader's display name (their token's `name`, else a pseudonym).
    pub leader_name: Option<String>,
    pub outcome: Option<AuctionOutcome>,
    /// The winner's user id (shown to the host side and the winner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner_id: Option<String>,
    pub hammer_minor: Option<i64>,
    /// The winner's order (host side and winner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    pub void_reason: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Whether the price meets the reserve.
    #[sqlx(skip)]
    pub reserve_met: bool,
    /// The minimum acceptable bid now (null once over).
    #[sqlx(skip)]
    pub min_bid_minor: Option<i64>,
    #[serde(skip)]
    #[sqlx(default)]
    pub(crate) leader_id: Option<String>,
}

pub(crate) const AUCTION_COLUMNS: &str = "auction_id, session_id, lineup_item_id, sku_id, currency::text as currency, \
    start_price_minor, increments, reserve_minor, reserve_is_floor, mode, snipe_window_secs, duration_secs, status, \
    starts_at, ends_at, bid_seq, price_minor, leader_name, outcome, winner_id, hammer_minor, order_id, void_reason, \
    ended_at, created_at";

impl Auction {
    /// Fills the derived fields.
    fn derive(mut self, leader_id: Option<String>) -> Auction {
        let increments = Increments::parse(self.increments.0.clone()).unwrap_or_else(|_| Increments::flat(1));
        let price = self.price_minor;
        self.reserve_met = match (self.reserve_minor, price) {
            (None, _) => true,
            (Some(r), Some(p)) => p >= r,
            (Some(_), None) => false,
        };
        self.min_bid_minor = (self.status == AuctionStatus::Running).then(|| match price {
            None => self.start_price_minor,
            Some(p) => p.saturating_add(increments.step_at(p)),
        });
        self.leader_id = leader_id;
        self
    }

    /// The auction as a viewer sees it: no reserve amount while it runs, no
    /// user ids, no order.
    pub fn public(mut self) -> Auction {
        if self.status == AuctionStatus::Running {
            self.reserve_minor = None;
        }
        self.winner_id = None;
        self.order_id = None;
        self
    }

    /// The room's `auction:<id>` snapshot field and the data of its events.
    pub fn room_view(&self) -> Value {
        json!({
            "auction_id": self.auction_id,
            "lineup_item_id": self.lineup_item_id,
            "sku_id": self.sku_id,
            "status": self.status,
            "mode": self.mode,
            "snipe_window_secs": self.snipe_window_secs,
            "currency": self.currency,
            "start_price_minor": self.start_price_minor,
            "increments": self.increments.0,
            "price_minor": self.price_minor,
            "leader_name": self.leader_name,
            "bids": self.bid_seq,
            "min_bid_minor": self.min_bid_minor,
            "reserve_met": self.reserve_met,
            "ends_at": self.ends_at,
            "version": self.bid_seq,
        })
    }
}

/// The room snapshot field of an auction.
pub(crate) fn state_key(auction_id: Uuid) -> String {
    format!("auction:{auction_id}")
}

/// Its version guard: `bid_seq` (the end events use `i64::MAX`).
pub(crate) fn version_key(auction_id: Uuid) -> String {
    format!("v:auction:{auction_id}")
}

/// A display name for a bidder without one: stable per auction, and not
/// their user id.
pub(crate) fn pseudonym(auction_id: Uuid, user: &str) -> String {
    let digest = Sha256::digest(format!("{auction_id}:{user}").as_bytes());
    format!("bidder-{}", &hex::encode(digest)[..12])
}

/// A new auction.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"link_number": 1, "start_price_minor": 1000,
    "increments": [{"below_minor": 2000, "step_minor": 100}, {"below_minor": 5000, "step_minor": 200},
                   {"step_minor": 500}],
    "duration_secs": 60, "mode": "anti_snipe", "snipe_window_secs": 10, "reserve_minor": 2500}))]
pub struct NewAuction {
    /// The lineup item's link number.
    #[schema(minimum = 1, maximum = 9999)]
    pub link_number: i32,
    /// The first bid's minimum, minor units of the item's currency.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub start_price_minor: i64,
    /// Ascending thresholds; the last line has no `below_minor`.
    #[schema(min_items = 1, max_items = 20)]
    pub increments: Vec<Increment>,
    /// 5 to 300.
    #[schema(minimum = 5, maximum = 300)]
    pub duration_secs: i32,
    pub mode: AuctionMode,
    /// anti_snipe only: 1 to 60 (default `live.snipe_window_secs`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 60)]
    pub snipe_window_secs: Option<i32>,
    /// The lowest hammer price that sells; at least the campaign's floor.
    /// Without one, the floor is the reserve.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub reserve_minor: Option<i64>,
    /// 1 (the only quantity for now); absent means 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    pub quantity: Option<i32>,
}

/// Starts an auction on a lineup item (the session's host, its agency, an
/// admin): takes the unit from the campaign allocation, and the room gets
/// `auction.started`.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub), err)]
pub async fn create_auction(
    live: &Live,
    claims: &Claims,
    session_id: Uuid,
    new: NewAuction,
) -> Result<Auction> {
    let commerce = live.commerce();
    let access = hawker_commerce::access::require_host(live.db(), claims, session_id).await?;
    let max_price = commerce.config().max_price_minor;
    if !(1..=max_price).contains(&new.start_price_minor) {
        return Err(Error::invalid(
            "bad_price",
            format!("start_price_minor must be 1 to {max_price}"),
        ));
    }
    if new.reserve_minor.is_some_and(|r| !(1..=max_price).contains(&r)) {
        return Err(Error::invalid(
            "bad_reserve",
            format!("reserve_minor must be 1 to {max_price}"),
        ));
    }
    if new.quantity.is_some_and(|q| q != 1) {
        return Err(Error::invalid("bad_quantity", "an auction sells a quantity of 1"));
    }
    if !(5..=300).contains(&new.duration_secs) {
        return Err(Error::invalid("bad_duration", "duration_secs must be 5 to 300"));
    }
    let window = match new.mode {
        AuctionMode::AntiSnipe => {
            let w = new.snipe_window_secs.unwrap_or(live.config().snipe_window_secs);
            if !(1..=60).contains(&w) {
                return Err(Error::invalid(
                    "bad_snipe_window",
                    "snipe_window_secs must be 1 to 60",
                ));
            }
            Some(w)
        }
        AuctionMode::SuddenDeath if new.snipe_window_secs.is_some() => {
            return Err(Error::invalid(
                "bad_snipe_window",
                "sudden_death takes no snipe_window_secs",
            ));
        }
        AuctionMode::SuddenDeath => None,
    };
    if new
        .increments
        .iter()
        .any(|l| l.step_minor > max_price || l.below_minor.is_some_and(|b| b > max_price))
    {
        return Err(Error::invalid(
            "bad_increments",
            format!("below_minor and step_minor are at most {max_price}"),
        ));
    }
    let increments =
        Increments::parse(new.increments).map_err(|e| Error::invalid("bad_increments", e.0.to_string()))?;
    let item = hawker_commerce::deals::by_link(commerce, session_id, new.link_number).await?;
    let sellable = hawker_catalog::campaign_skus::sellable(live.db(), access.agency_id, item.sku_id).await?;
    let auction_id = Uuid::now_v7();
    let mut tx = live.db().begin().await?;
    let took = source::take_unit(
        &mut tx,
        auction_id,
        item.campaign_id,
        item.sku_id,
        new.reserve_minor,
        &claims.sub,
    )
    .await?;
    let (reserve, reserve_is_floor) = match new.reserve_minor {
        Some(r) => (Some(r), false),
        None => (took.floor_minor, took.floor_minor.is_some()),
    };
    let row = sqlx::query_as::<_, Auction>(&format!(
        "insert into auction (auction_id, session_id, lineup_item_id, sku_id, campaign_id, brand_id, currency,
                start_price_minor, increments, reserve_minor, reserve_is_floor, mode, snipe_window_secs,
                duration_secs, starts_at, ends_at, created_by)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                 now.t, now.t + make_interval(secs => $14), $15
           from (select clock_timestamp() as t) as now
         returning {AUCTION_COLUMNS}"
    ))
    .bind(auction_id)
    .bind(session_id)
    .bind(item.lineup_item_id)
    .bind(item.sku_id)
    .bind(took.campaign_id)
    .bind(sellable.brand_id)
    .bind(&item.currency)
    .bind(new.start_price_minor)
    .bind(sqlx::types::Json(increments.lines()))
    .bind(reserve)
    .bind(reserve_is_floor)
    .bind(new.mode)
    .bind(window)
    .bind(new.duration_secs)
    .bind(&claims.sub)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match hawker_core::error::violated_constraint(&e).as_deref() {
        Some("auction_one_running_per_item") => Error::conflict(
            "auction_running",
            "an auction of this lineup item is already running",
        ),
        _ => e.into(),
    })?;
    let auction = row.derive(None);
    let view = auction.room_view();
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new("auction.started", view.clone())
            .set_state(state_key(auction_id), view)
            .versioned(version_key(auction_id), 0),
    )
    .await?;
    tx.commit().await?;
    relay_now(live).await;
    Ok(auction)
}

/// Publishes the events just queued now rather than at the relay's next
/// round, so `auction.started` reaches the room before the first bids.
pub(crate) async fn relay_now(live: &Live) {
    if let Err(e) = live.hub().relay_durable().await {
        tracing::debug!(error = %e, "durable relay deferred");
    }
}

pub(crate) async fn load(live: &Live, auction_id: Uuid) -> Result<Auction> {
    let auction = sqlx::query_as::<_, Auction>(&format!(
        "select {AUCTION_COLUMNS}, leader_id from auction where auction_id = $1"
    ))
    .bind(auction_id)
    .fetch_optional(live.db())
    .await?
    .ok_or(Error::NotFound("auction"))?;
    let leader = auction.leader_id.clone();
    Ok(auction.derive(leader))
}

/// Whether `claims` runs the auction's session (host side: sees the reserve,
/// the winner and the order).
async fn host_side(live: &Live, claims: &Claims, session_id: Uuid) -> Result<bool> {
    Ok(
        hawker_commerce::access::session_access(live.db(), claims, session_id)
            .await?
            .can_host,
    )
}

/// One auction: the host side sees it whole, the winner their order, others
/// the public view.
pub async fn get_auction(live: &Live, claims: &Claims, auction_id: Uuid) -> Result<Auction> {
    let auction = load(live, auction_id).await?;
    if host_side(live, claims, auction.session_id).await? {
        return Ok(auction);
    }
    if auction.winner_id.as_deref() == Some(claims.sub.as_str()) {
        let mut a = auction.clone().public();
        a.winner_id = auction.winner_id;
        a.order_id = auction.order_id;
        return Ok(a);
    }
    Ok(auction.public())
}

/// A page of a session's auctions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuctionPage {
    pub items: Vec<Auction>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// The session's auctions, oldest first, a page at a time.
pub async fn session_auctions(
    live: &Live,
    claims: &Claims,
    session_id: Uuid,
    page: &PageQuery,
) -> Result<AuctionPage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Auction>(&format!(
        "select {AUCTION_COLUMNS} from auction
          where session_id = $1 and ($2::timestamptz is null or (created_at, auction_id) > ($2, $3))
          order by created_at, auction_id limit $4"
    ))
    .bind(session_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(live.db())
    .await?;
    let host = host_side(live, claims, session_id).await?;
    let rows: Vec<Auction> = rows
        .into_iter()
        .map(|a| {
            let a = a.derive(None);
            if host {
                a
            } else {
                a.public()
            }
        })
        .collect();
    let (items, next_cursor) = page::split(rows, limit, |a| page::time_id(a.created_at, a.auction_id));
    Ok(AuctionPage { items, next_cursor })
}

/// A bid over HTTP: an exact amount, a maximum (proxy) bid, or both.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"max_minor": 4500}))]
pub struct PlaceBid {
    /// Bid exactly this (at least the minimum acceptable bid).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub amount_minor: Option<i64>,
    /// The most the server may bid for you, by the increment, as others bid.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub max_minor: Option<i64>,
}

/// Who bids.
#[derive(Debug, Clone)]
pub struct Bidder {
    pub user: String,
    pub role: Role,
    /// Their display name, if their token has one.
    pub name: Option<String>,
}

impl Bidder {
    pub fn of(claims: &Claims) -> Bidder {
        Bidder {
            user: claims.sub.clone(),
            role: claims.role,
            name: claims.name.clone(),
        }
    }
}

/// An accepted bid, as its bidder gets it back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BidAccepted {
    pub auction_id: Uuid,
    /// The bid's place in the auction's global order.
    pub seq: i64,
    pub amount_minor: i64,
    pub max_minor: i64,
    /// You lead after it (otherwise another bidder's maximum answered it).
    pub leading: bool,
    /// The price after it.
    pub price_minor: i64,
    pub leader_name: String,
    /// The minimum acceptable next bid.
    pub min_bid_minor: i64,
    pub ends_at: DateTime<Utc>,
    /// The database clock when it was accepted.
    pub accepted_at: DateTime<Utc>,
}

/// Places a bid (HTTP and socket). Refused: 403 for the host side, brands
/// and buyers at risk; 409 `bid_too_low` (the message names the minimum),
/// `auction_ended`, `already_leading`; 400 `bad_bid`.
#[tracing::instrument(skip_all, fields(%auction_id, bidder = %bidder.user), err(level = "debug"))]
pub async fn place_bid(live: &Live, bidder: &Bidder, auction_id: Uuid, bid: PlaceBid) -> Result<BidAccepted> {
    if bidder.role != Role::Viewer {
        return Err(Error::forbidden(
            "only buyers bid: hosts, agencies, brands and admins cannot bid",
        ));
    }
    let limit = live.commerce().config().max_price_minor;
    for v in [bid.amount_minor, bid.max_minor].into_iter().flatten() {
        if !(1..=limit).contains(&v) {
            return Err(Error::invalid("bad_bid", format!("amounts are 1 to {limit}")));
        }
    }
    if bid.amount_minor.is_none() && bid.max_minor.is_none() {
        return Err(Error::invalid("bad_bid", "amount_minor or max_minor is required"));
    }
    live.inner.auctions.at_risk_check(live, &bidder.user).await?;
    let name = bidder
        .name
        .clone()
        .unwrap_or_else(|| pseudonym(auction_id, &bidder.user));
    live.inner
        .auctions
        .bid(
            live,
            auction_id,
            rules::Ask {
                bidder: bidder.user.clone(),
                amount_minor: bid.amount_minor,
                max_minor: bid.max_minor,
            },
            name,
        )
        .await
}

/// `auction.bid` from a socket.
pub(crate) async fn socket_bid(live: &Live, ctx: &CommandContext, bid: Bid) -> Result<BidReply> {
    let bidder = Bidder {
        user: ctx.member.user.clone(),
        role: ctx.member.role,
        name: ctx.member.name.clone(),
    };
    let accepted = place_bid(
        live,
        &bidder,
        bid.auction_id,
        PlaceBid {
            amount_minor: bid.amount_minor,
            max_minor: bid.max_minor,
        },
    )
    .await?;
    Ok(BidReply {
        bid: serde_json::to_value(&accepted).map_err(anyhow::Error::from)?,
    })
}

/// One line of the public bid log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LoggedBid {
    pub seq: i64,
    /// The bidder's display name or pseudonym (never their user id).
    pub bidder: String,
    /// Whether the bidder named the amount (else it was the minimum then).
    pub exact: bool,
    pub amount_minor: i64,
    /// The bid's maximum: shown once the auction is over (null while it runs).
    pub max_minor: Option<i64>,
    /// The minimum acceptable bid when it was accepted.
    pub min_minor: i64,
    pub price_after: i64,
    /// The leader after it (display name or pseudonym).
    pub leader_after: String,
    pub accepted_at: DateTime<Utc>,
    /// The new end this bid caused (anti-snipe), if any.
    pub extended_to: Option<DateTime<Utc>>,
}

/// The bid log with what a replay needs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BidLog {
    pub auction_id: Uuid,
    pub status: AuctionStatus,
    pub start_price_minor: i64,
    pub increments: Vec<Increment>,
    /// Shown once the auction is over.
    pub reserve_minor: Option<i64>,
    pub mode: AuctionMode,
    pub snipe_window_secs: Option<i32>,
    pub starts_at: DateTime<Utc>,
    /// The end before any extension.
    pub scheduled_end: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub hammer_minor: Option<i64>,
    pub bids: Vec<LoggedBid>,
}

/// The auction's accepted bids in their global order (public; maxima once
/// it is over), `after` a `seq`, up to 1,000 at a time.
pub async fn bid_log(
    live: &Live,
    auction_id: Uuid,
    after: Option<i64>,
    limit: Option<i64>,
) -> Result<BidLog> {
    let auction = load(live, auction_id).await?;
    let over = auction.status != AuctionStatus::Running;
    if after.is_some_and(|a| a < 0) {
        return Err(Error::invalid("bad_after", "after is a seq, 0 or more"));
    }
    let limit = limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("bad_limit", "limit must be 1 to 1000"));
    }
    let mut bids = sqlx::query_as::<_, LoggedBid>(
        "select seq, bidder_name as bidder, exact, amount_minor, max_minor, min_minor, price_after,
                leader_after, accepted_at, extended_to
           from auction_bid where auction_id = $1 and seq > $2 order by seq limit $3",
    )
    .bind(auction_id)
    .bind(after.unwrap_or(0))
    .bind(limit)
    .fetch_all(live.db())
    .await?;
    if !over {
        for b in &mut bids {
            b.max_minor = None;
        }
    }
    Ok(BidLog {
        auction_id,
        status: auction.status,
        start_price_minor: auction.start_price_minor,
        increments: auction.increments.0.clone(),
        reserve_minor: if over { auction.reserve_minor } else { None },
        mode: auction.mode,
        snipe_window_secs: auction.snipe_window_secs,
        starts_at: auction.starts_at,
        scheduled_end: auction.starts_at + chrono::Duration::seconds(i64::from(auction.duration_secs)),
        ends_at: auction.ends_at,
        hammer_minor: auction.hammer_minor,
        bids,
    })
}

/// Why the host voids an auction.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "wrong item shown on camera"}))]
pub struct VoidAuction {
    /// 1 to 500 characters, shown to the room (not only spaces, no control characters).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

/// Voids a running auction (the session's host, its agency, an admin): the
/// unit goes back, nobody wins, the room gets `auction.voided` with the reason.
#[tracing::instrument(skip_all, fields(%auction_id, caller = %claims.sub), err)]
pub async fn void_auction(
    live: &Live,
    claims: &Claims,
    auction_id: Uuid,
    void: VoidAuction,
) -> Result<Auction> {
    let reason = crate::host_reason(&void.reason)?;
    let auction = load(live, auction_id).await?;
    hawker_commerce::access::require_host(live.db(), claims, auction.session_id).await?;
    let mut tx = live.db().begin().await?;
    if !void_in(&mut tx, auction_id, reason, Some(&claims.sub)).await? {
        return Err(Error::conflict(
            "auction_over",
            "the auction has already ended or was voided",
        ));
    }
    tx.commit().await?;
    live.inner.auctions.forget(auction_id);
    relay_now(live).await;
    load(live, auction_id).await
}

/// Voids a running auction in `tx`: the reason recorded (`by` the user who
/// voided it; `None` for the server itself), the unit back to the SKU,
/// `auction.voided` to the room. False if it was not running.
pub(crate) async fn void_in(
    tx: &mut sqlx::PgConnection,
    auction_id: Uuid,
    reason: &str,
    by: Option<&str>,
) -> Result<bool> {
    let row: Option<(Uuid, Option<Uuid>, Uuid)> = sqlx::query_as(
        "update auction set status = 'voided', void_reason = $2, voided_by = $3, ended_at = clock_timestamp()
          where auction_id = $1 and status = 'running'
      returning sku_id, campaign_id, session_id",
    )
    .bind(auction_id)
    .bind(reason)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((sku_id, campaign_id, session_id)) = row else {
        return Ok(false);
    };
    source::give_back_unit(&mut *tx, auction_id, campaign_id, sku_id, "auction_voided").await?;
    hawker_hub::durable::enqueue(
        &mut *tx,
        session_id,
        &Publication::new(
            "auction.voided",
            json!({ "auction_id": auction_id, "reason": reason }),
        )
        .remove_state(state_key(auction_id))
        .versioned(version_key(auction_id), i64::MAX),
    )
    .await?;
    Ok(true)
}

/// A second-chance offer as recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SecondChance {
    pub auction_id: Uuid,
    /// The runner-up's user id.
    pub bidder_id: String,
    /// Their last (highest) bid, which the order is at.
    pub amount_minor: i64,
    /// The winner's order that lapsed.
    pub lapsed_order_id: Uuid,
    /// The runner-up's order.
    pub order_id: Uuid,
    pub offered_by: String,
    pub offered_at: DateTime<Utc>,
}

/// What a second-chance offer reads of the auction, under its lock.
#[derive(sqlx::FromRow)]
struct Ended {
    status: AuctionStatus,
    outcome: Option<AuctionOutcome>,
    winner_id: Option<String>,
    order_id: Option<Uuid>,
    campaign_id: Option<Uuid>,
    reserve_minor: Option<i64>,
}

/// The winner did not pay (their order expired or was cancelled): the host
/// side offers the unit to the runner-up at their last bid, which creates
/// their order (payment window as usual). Once per auction.
#[tracing::instrument(skip_all, fields(%auction_id, caller = %claims.sub), err)]
pub async fn second_chance(live: &Live, claims: &Claims, auction_id: Uuid) -> Result<SecondChance> {
    let auction = load(live, auction_id).await?;
    hawker_commerce::access::require_host(live.db(), claims, auction.session_id).await?;
    let mut tx = live.db().begin().await?;
    let row = sqlx::query_as::<_, Ended>(
        "select status, outcome, winner_id, order_id, campaign_id, reserve_minor from auction
          where auction_id = $1 for update",
    )
    .bind(auction_id)
    .fetch_one(&mut *tx)
    .await?;
    let Ended {
        status,
        outcome,
        winner_id: winner,
        order_id: lapsed,
        campaign_id,
        reserve_minor: reserve,
    } = row;
    let (Some(winner), Some(lapsed)) = (winner, lapsed) else {
        return Err(Error::conflict(
            "no_winner",
            format!("the auction has no winner's order (status {status:?}, outcome {outcome:?})"),
        ));
    };
    let taken: bool =
        sqlx::query_scalar("select exists(select 1 from auction_second_chance where auction_id = $1)")
            .bind(auction_id)
            .fetch_one(&mut *tx)
            .await?;
    if taken {
        return Err(Error::conflict(
            "second_chance_made",
            "a second-chance offer was already made",
        ));
    }
    if !hawker_commerce::lapsed::order_lapsed(&mut tx, lapsed).await? {
        return Err(Error::conflict(
            "winner_order_open",
            "the winner's order is paid or still within its payment window",
        ));
    }
    let runner_up: Option<(String, i64)> = sqlx::query_as(
        "select bidder_id, max(max_minor) from auction_bid where auction_id = $1 and bidder_id <> $2
          group by bidder_id order by max(max_minor) desc, min(seq) limit 1",
    )
    .bind(auction_id)
    .bind(&winner)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((runner_up, amount)) = runner_up else {
        return Err(Error::conflict("no_runner_up", "nobody else bid"));
    };
    if reserve.is_some_and(|r| amount < r) {
        return Err(Error::conflict(
            "runner_up_below_reserve",
            "the runner-up's last bid is below the reserve",
        ));
    }
    // The lapsed order gave its unit back; the offer takes one again.
    source::take_unit(
        &mut tx,
        auction_id,
        campaign_id,
        auction.sku_id,
        None,
        &claims.sub,
    )
    .await?;
    let order_id = source::create_order(
        live.commerce(),
        &mut tx,
        source::AuctionOrder {
            auction_id,
            session_id: auction.session_id,
            lineup_item_id: auction.lineup_item_id,
            sku_id: auction.sku_id,
            buyer_id: &runner_up,
            price_minor: amount,
            currency: &auction.currency,
            idempotency_key: format!("auction:{auction_id}:second_chance"),
        },
    )
    .await?;
    let offer = sqlx::query_as::<_, SecondChance>(
        "insert into auction_second_chance (auction_id, bidder_id, amount_minor, lapsed_order_id, order_id, offered_by)
         values ($1, $2, $3, $4, $5, $6)
      returning auction_id, bidder_id, amount_minor, lapsed_order_id, order_id, offered_by, offered_at",
    )
    .bind(auction_id)
    .bind(&runner_up)
    .bind(amount)
    .bind(lapsed)
    .bind(order_id)
    .bind(&claims.sub)
    .fetch_one(&mut *tx)
    .await?;
    live.hub()
        .enqueue_notice(
            &mut tx,
            &Notice::new(
                runner_up.as_str(),
                "auction.second_chance",
                json!({ "auction_id": auction_id, "order_id": order_id, "amount_minor": amount,
                        "currency": auction.currency }),
            )
            .in_session(auction.session_id),
        )
        .await?;
    tx.commit().await?;
    Ok(offer)
}
