//! The `[live]` section of the configuration.

use serde::Deserialize;

/// Settings of auctions and giveaways.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// How often each node looks for auctions and giveaways due to end or draw (ms).
    pub tick_ms: u64,
    /// Bids a node commits in one transaction per auction at most.
    pub bid_batch_max: usize,
    /// How long a node's bid batcher gathers bids after the first (µs).
    pub bid_batch_window_us: u64,
    /// A bid batch's transaction is abandoned (503, nothing recorded) after this (ms).
    pub bid_commit_timeout_ms: u64,
    /// At most one `auction.bid` room event per auction per node per this (ms).
    pub bid_event_interval_ms: u64,
    /// A buyer with more than this many unpaid (lapsed) auction orders in the
    /// last `at_risk_days` days may not bid; 0 turns the rule off.
    pub at_risk_unpaid_wins: i64,
    /// The look-back of `at_risk_unpaid_wins`, days.
    pub at_risk_days: i64,
    /// The anti-snipe window when an auction does not name one (s).
    pub snipe_window_secs: i32,
    /// How long a node trusts its copy of a session's comment-to-buy setting
    /// (ms): a change made on another node applies here within this time.
    pub comment_cache_ms: u64,
    /// Comment-to-buy orders a node places at once; more wait their turn.
    pub comment_max_in_flight: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            tick_ms: 250,
            bid_batch_max: 512,
            bid_batch_window_us: 2000,
            bid_commit_timeout_ms: 3000,
            bid_event_interval_ms: 250,
            at_risk_unpaid_wins: 2,
            at_risk_days: 30,
            snipe_window_secs: 10,
            comment_cache_ms: 1000,
            comment_max_in_flight: 64,
        }
    }
}
