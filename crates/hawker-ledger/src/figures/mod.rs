//! Live session figures: sales (gross, net of refunds), orders, units,
//! buyers, viewers (current, peak, unique), chat messages, likes and
//! conversion, for the session and per deal and per shift — while it runs
//! and after.
//!
//! Sales come straight from Postgres on every request. The room's counters
//! live in the hub (`viewers` and `likes` in the room's state, every event
//! in its capped history), and the hub forgets a room after it ends, so a
//! small worker ([`sampler`]) copies them into
//! Postgres about once a second while a session is live: a running tally per
//! session (`session_room_tally`: chat messages counted from the stream,
//! peak viewers) and cumulative samples over time (`session_sample`), which
//! give the per-shift and per-deal figures. While the session is live the
//! figures read the current viewers and likes from the hub directly, so they
//! are at most a second or two old; afterwards they come from the samples.
//!
//! Unique viewers: the hub records no viewer identities, so this is the
//! larger of the peak concurrent viewers and the identified users (those
//! seen joining — the hub announces joins in rooms under
//! `hub.presence_below` — chatting or buying). It is a lower bound, and the
//! conversion (buyers / unique viewers) an upper bound, in large rooms.
//!
//! By job: [`report`] assembles the figures a caller may see, [`sampler`]
//! copies the room's counters from the hub, and `samples` reads what the
//! sampler stored. Sales and deals come from `hawker_commerce::sales`,
//! shifts from `hawker_agency::schedule`.

pub mod report;
pub mod sampler;
mod samples;

use chrono::{DateTime, Utc};
use hawker_agency::SessionStatus;
use serde::Serialize;
use uuid::Uuid;

pub use report::session_figures;

/// Money in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Amounts {
    pub currency: String,
    /// Paid orders, after coupon discounts.
    pub gross_minor: i64,
    pub refunds_minor: i64,
    pub net_minor: i64,
}

/// Paid orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sales {
    pub orders: i64,
    pub units: i64,
    pub buyers: i64,
    /// Per currency.
    pub amounts: Vec<Amounts>,
}

/// The room's counters over the whole session.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Audience {
    /// Connected now (0 once the session is over).
    pub viewers_now: i64,
    pub peak_viewers: i64,
    /// max(peak viewers, identified users); see the module docs.
    pub unique_viewers: i64,
    pub chat_messages: i64,
    pub likes: i64,
    /// When the room's counters were last copied from Redis.
    pub sampled_at: Option<DateTime<Utc>>,
    /// Times the room's stream moved on faster than the sampler read it:
    /// chat counts are then lower bounds.
    pub stream_gaps: i32,
}

/// The room's counters within a time window (a deal, a shift), from samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WindowAudience {
    pub peak_viewers: i64,
    pub chat_messages: i64,
    pub likes: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DealFigures {
    pub deal_id: Uuid,
    pub sku_id: Uuid,
    pub product_name: String,
    /// `scheduled`, `live` or `ended`.
    pub status: String,
    pub starts_at: DateTime<Utc>,
    /// When it ended, or will end.
    pub ends_at: DateTime<Utc>,
    pub quantity: i32,
    pub sales: Sales,
    pub audience: WindowAudience,
    /// Buyers / peak viewers during the deal.
    pub conversion: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShiftFigures {
    pub shift_id: Uuid,
    pub host_id: Uuid,
    pub host_handle: String,
    /// The window sales are counted in: on air (or planned, before anyone went on air).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub sales: Sales,
    pub audience: WindowAudience,
    /// Buyers / peak viewers during the shift.
    pub conversion: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionFigures {
    pub session_id: Uuid,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: SessionStatus,
    pub as_of: DateTime<Utc>,
    /// Set when a brand reads: sales of its products only.
    pub brand_id: Option<Uuid>,
    pub sales: Sales,
    pub audience: Audience,
    /// Buyers / unique viewers.
    pub conversion: Option<f64>,
    pub deals: Vec<DealFigures>,
    pub shifts: Vec<ShiftFigures>,
}

pub(crate) fn ratio(buyers: i64, viewers: i64) -> Option<f64> {
    (viewers > 0).then(|| {
        let r = buyers as f64 / viewers as f64;
        (r * 10_000.0).round() / 10_000.0
    })
}
