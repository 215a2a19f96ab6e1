//! Live formats: the ways of selling in a stream beyond a fixed-price flash
//! deal. [`auctions`] (standard with anti-snipe, or sudden death; proxy
//! bids; second-chance offers), [`giveaways`] (provably fair draws from a
//! committed seed and a frozen, published entry list) and [`groupbuys`]
//! (price tiers by participants, settled at the final tier's price).
//!
//! Both run on the hub (room events, private notices) and end in orders
//! created through `hawker_commerce::sourced`, whose order `source` names
//! the auction, giveaway or group buy. This crate owns the tables
//! `auction*`, `giveaway*` and `group_buy*` (and `comment_to_buy`,
//! [`comment_orders`]: keyword orders typed in chat) and the Redis keys
//! `hawker:auction:{<id>}:*`, `hawker:giveaway:{<id>}:*` and
//! `hawker:groupbuy:{<id>}:*`; others call its functions.

pub mod auctions;
pub(crate) mod batch;
pub(crate) mod clock;
pub mod commands;
pub mod comment_orders;
pub mod config;
pub mod giveaways;
pub mod groupbuys;

use std::sync::Arc;

use hawker_commerce::Commerce;
use hawker_hub::Hub;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::LiveConfig;
pub use hawker_core::error::{Error, Result};

/// A host's reason to void or cancel (an auction, a giveaway, a group buy),
/// trimmed: 1 to 500 characters, none of them a control character
/// (`bad_reason`). The room is shown it.
pub(crate) fn host_reason(reason: &str) -> Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "bad_reason",
            "reason must be 1 to 500 characters without control characters",
        ));
    }
    Ok(reason)
}

pub(crate) struct Inner {
    pub config: LiveConfig,
    pub db: PgPool,
    #[allow(dead_code)] // for the auction and giveaway keys, being built
    pub redis: hawker_redis::Redis,
    pub commerce: Commerce,
    /// The node's auction bidding service (batcher queue, cached prices).
    pub auctions: auctions::bidding::Auctions,
    /// The node's group-buy join service (batcher queue, announcer).
    pub group_buys: groupbuys::joining::GroupBuys,
    /// This node's copies of the sessions' comment-to-buy settings.
    pub comment_cache: comment_orders::cache::SettingCache,
    /// Comment-to-buy orders a node places at once (`live.comment_max_in_flight`).
    pub comment_slots: tokio::sync::Semaphore,
    /// Background work that shutdown waits for (comment-to-buy orders).
    pub tasks: TaskTracker,
}

/// The node's live-formats service. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    pub(crate) inner: Arc<Inner>,
}

impl Live {
    /// Starts the service and its background workers (tracked; they stop
    /// with `shutdown`).
    pub fn start(
        config: LiveConfig,
        db: PgPool,
        redis: hawker_redis::Redis,
        commerce: Commerce,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Live {
        let (announcer, announcer_inbox) = auctions::events::announcer();
        let (auctions, batcher_inbox) = auctions::bidding::Auctions::new(announcer);
        let event_interval = std::time::Duration::from_millis(config.bid_event_interval_ms);
        let (progress, progress_inbox) = groupbuys::events::announcer();
        let (group_buys, joins_inbox) = groupbuys::joining::GroupBuys::new(progress);
        let comment_cache = comment_orders::cache::SettingCache::new(std::time::Duration::from_millis(
            config.comment_cache_ms,
        ));
        let comment_slots = tokio::sync::Semaphore::new(config.comment_max_in_flight.max(1));
        let live = Live {
            inner: Arc::new(Inner {
                config,
                db,
                redis,
                commerce,
                auctions,
                group_buys,
                comment_cache,
                comment_slots,
                tasks: tasks.clone(),
            }),
        };
        tasks.spawn(auctions::bidding::run(
            live.clone(),
            batcher_inbox,
            shutdown.clone(),
        ));
        tasks.spawn(auctions::events::run(
            live.hub().clone(),
            announcer_inbox,
            event_interval,
            shutdown.clone(),
        ));
        tasks.spawn(clock::run(live.clone(), shutdown.clone()));
        tasks.spawn(comment_orders::cache::run_refresher(
            live.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(groupbuys::joining::run(
            live.clone(),
            joins_inbox,
            shutdown.clone(),
        ));
        tasks.spawn(groupbuys::events::run(
            live.hub().clone(),
            progress_inbox,
            event_interval,
            shutdown.clone(),
        ));
        live
    }

    /// The `[live]` configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.inner.config
    }

    /// The Postgres pool.
    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }

    /// The node's commerce service (orders).
    pub fn commerce(&self) -> &Commerce {
        &self.inner.commerce
    }

    /// The node's hub, for room events and private notices.
    pub fn hub(&self) -> &Hub {
        self.inner.commerce.hub()
    }

    /// The multiplexed Redis connection.
    #[allow(dead_code)] // for the auction and giveaway keys, being built
    pub(crate) fn redis(&self) -> hawker_redis::Redis {
        self.inner.redis.clone()
    }

    /// The deployment's Redis key prefix (`redis.key_prefix`).
    #[allow(dead_code)] // for the auction and giveaway keys, being built
    pub(crate) fn key_prefix(&self) -> &str {
        &self.hub().config().key_prefix
    }
}
