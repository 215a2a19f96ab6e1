//! The `[commerce]` configuration section.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommerceConfig {
    /// How long a pending order waits for payment before it expires.
    pub order_ttl_secs: u64,
    /// Bounds of a flash deal's duration.
    pub deal_min_secs: u64,
    pub deal_max_secs: u64,
    /// Longest countdown before a deal starts.
    pub countdown_max_secs: u64,
    /// Most orders settled in one Postgres transaction.
    pub batch_max: usize,
    /// How long the settlement writer waits to fill a batch after the first request.
    pub batch_window_us: u64,
    /// Batches a node commits at once (each on its own connection): while
    /// one waits for its commit, the next one writes its orders.
    #[serde(default = "default_settle_parallel")]
    pub settle_parallel: usize,
    /// `deal.stock` and `coupon.remaining` are announced at most this often per deal/drop.
    pub stock_event_interval_ms: u64,
    /// How often each node looks for due deals, drops, expired orders and unpublished events.
    pub scheduler_tick_ms: u64,
    /// A gate reservation with no order after this long is released.
    pub reservation_timeout_secs: u64,
    /// Admitted requests waiting for the settlement; past this a purchase
    /// answers 503 and its reservation is released at once.
    #[serde(default = "default_settle_queue_max")]
    pub settle_queue_max: usize,
    /// A batch whose commit has not answered after this long is given up
    /// (503, outcome unknown, reservations left to the reconciler): a
    /// Postgres path that drops packets holds the settlement this long at most.
    #[serde(default = "default_commit_timeout_ms")]
    pub commit_timeout_ms: u64,
    /// Highest unit price a deal may have, in minor units. With at most
    /// `MAX_QUANTITY` units per order, no order's amount comes near `i64::MAX`.
    #[serde(default = "default_max_price_minor")]
    pub max_price_minor: i64,
    /// How long after delivery a buyer may ask for a return (30 days by default).
    #[serde(default = "default_return_window_secs")]
    pub return_window_secs: u64,
    /// How long a waitlist offer holds its units for the buyer before it
    /// passes to the next in line.
    #[serde(default = "default_waitlist_hold_secs")]
    pub waitlist_hold_secs: u64,
    /// How long a node trusts its copy of a sold-out deal's gate after a
    /// check found it unchanged (it then refuses attempts itself, without
    /// Redis); 0 turns the copies off.
    #[serde(default = "default_sold_out_mirror_ms")]
    pub sold_out_mirror_ms: u64,
    /// Test only: a batch sleeps this long between taking its deal rows and
    /// committing, so a test can freeze a node while it holds them. Honoured
    /// only when `HAWKER_ENV=test`; 0 (the default) everywhere else.
    #[serde(default)]
    pub test_hold_after_take_ms: u64,
    /// Test only: a gate rebuild waits this long between its Postgres read
    /// and its Redis write. Honoured only when `HAWKER_ENV=test`.
    #[serde(default)]
    pub test_rebuild_delay_ms: u64,
}

/// A test hook's duration: zero unless set and `HAWKER_ENV=test`.
fn test_hook(key: &str, ms: u64) -> std::time::Duration {
    if ms == 0 {
        return std::time::Duration::ZERO;
    }
    if std::env::var("HAWKER_ENV").as_deref() != Ok("test") {
        tracing::warn!(key, "test hook ignored: HAWKER_ENV is not test");
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_millis(ms)
}

fn default_settle_parallel() -> usize {
    2
}

fn default_settle_queue_max() -> usize {
    65_536
}

fn default_waitlist_hold_secs() -> u64 {
    60
}

fn default_sold_out_mirror_ms() -> u64 {
    50
}

/// The longest `commerce.sold_out_mirror_ms` accepted: a new waitlist offer
/// waits this long before its buyer is told.
pub const MAX_SOLD_OUT_MIRROR_MS: u64 = 1000;

fn default_commit_timeout_ms() -> u64 {
    6000
}

/// The most batches a node commits at once (`commerce.settle_parallel`).
pub const MAX_SETTLE_PARALLEL: usize = 16;

/// The longest `commerce.return_window_secs` accepted: ten years.
pub const MAX_RETURN_WINDOW_SECS: u64 = 10 * 366 * 24 * 3600;

/// The default `commerce.max_price_minor`: 1 000 000.00 in a two-decimal currency.
pub const DEFAULT_MAX_PRICE_MINOR: i64 = 100_000_000;

/// The largest `commerce.max_price_minor` accepted: a whole order of
/// `MAX_QUANTITY` units at this price still fits in an `i64`.
pub const MAX_PRICE_MINOR_LIMIT: i64 = i64::MAX / crate::purchase::MAX_QUANTITY as i64;

fn default_return_window_secs() -> u64 {
    30 * 24 * 3600
}

fn default_max_price_minor() -> i64 {
    DEFAULT_MAX_PRICE_MINOR
}

impl Default for CommerceConfig {
    fn default() -> Self {
        CommerceConfig {
            order_ttl_secs: 600,
            deal_min_secs: 60,
            deal_max_secs: 1200,
            countdown_max_secs: 300,
            batch_max: 512,
            batch_window_us: 1000,
            settle_parallel: default_settle_parallel(),
            stock_event_interval_ms: 100,
            scheduler_tick_ms: 200,
            reservation_timeout_secs: 30,
            settle_queue_max: default_settle_queue_max(),
            commit_timeout_ms: default_commit_timeout_ms(),
            max_price_minor: default_max_price_minor(),
            return_window_secs: default_return_window_secs(),
            waitlist_hold_secs: default_waitlist_hold_secs(),
            sold_out_mirror_ms: default_sold_out_mirror_ms(),
            test_hold_after_take_ms: 0,
            test_rebuild_delay_ms: 0,
        }
    }
}

impl CommerceConfig {
    /// The test hook's hold, if this process runs with `HAWKER_ENV=test`.
    pub fn test_hold_after_take(&self) -> std::time::Duration {
        test_hook("commerce.test_hold_after_take_ms", self.test_hold_after_take_ms)
    }

    /// The test hook's rebuild delay, if this process runs with `HAWKER_ENV=test`.
    pub fn test_rebuild_delay(&self) -> std::time::Duration {
        test_hook("commerce.test_rebuild_delay_ms", self.test_rebuild_delay_ms)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("commerce.order_ttl_secs", self.order_ttl_secs),
            ("commerce.deal_min_secs", self.deal_min_secs),
            ("commerce.batch_max", self.batch_max as u64),
            ("commerce.stock_event_interval_ms", self.stock_event_interval_ms),
            ("commerce.scheduler_tick_ms", self.scheduler_tick_ms),
            ("commerce.reservation_timeout_secs", self.reservation_timeout_secs),
            ("commerce.settle_queue_max", self.settle_queue_max as u64),
            ("commerce.settle_parallel", self.settle_parallel as u64),
            ("commerce.commit_timeout_ms", self.commit_timeout_ms),
            ("commerce.return_window_secs", self.return_window_secs),
            ("commerce.waitlist_hold_secs", self.waitlist_hold_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.sold_out_mirror_ms > MAX_SOLD_OUT_MIRROR_MS {
            return Err((
                "commerce.sold_out_mirror_ms",
                format!("must be 0 to {MAX_SOLD_OUT_MIRROR_MS}"),
            ));
        }
        if self.settle_parallel > MAX_SETTLE_PARALLEL {
            return Err((
                "commerce.settle_parallel",
                format!("must be 1 to {MAX_SETTLE_PARALLEL}"),
            ));
        }
        if !(1..=MAX_PRICE_MINOR_LIMIT).contains(&self.max_price_minor) {
            return Err((
                "commerce.max_price_minor",
                format!("must be 1 to {MAX_PRICE_MINOR_LIMIT}"),
            ));
        }
        if self.return_window_secs > MAX_RETURN_WINDOW_SECS {
            return Err((
                "commerce.return_window_secs",
                format!("must be 1 to {MAX_RETURN_WINDOW_SECS} (10 years)"),
            ));
        }
        if self.deal_max_secs < self.deal_min_secs {
            return Err((
                "commerce.deal_max_secs",
                "must be at least commerce.deal_min_secs".into(),
            ));
        }
        Ok(())
    }
}
