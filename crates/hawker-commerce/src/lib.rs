//! Commerce during a live session: the lineup, flash deals, purchases,
//! payments and coupon drops.
//!
//! A purchase ([`purchase`]) goes through three layers ("The stampede" in the brief):
//! 1. the **admission gate** ([`purchase::gate`]): a Redis Lua script per
//!    deal that answers sold-out, over-cap, not-started, ended and repeated
//!    requests without touching Postgres, and reserves units for the rest;
//! 2. the **settlement** ([`purchase::settle`]): one task per node that
//!    commits many orders in one Postgres transaction (the deal's stock row
//!    is updated once per batch) and answers each request after the commit;
//! 3. **Postgres constraints** (`migrations/0002_commerce.sql`): no oversell,
//!    no buyer over the cap, one order per idempotency key, a coupon used once
//!    — whatever the gate says.
//!
//! Deals and coupon drops start and end on time from a durable schedule in
//! Postgres, claimed row by row (`for update skip locked`), and their room
//! events go through the hub's durable outbox (`hawker_hub::durable`), so
//! each happens once across nodes and survives a restart.
//!
//! Orders also come from auctions and giveaways ([`sourced`]): the live
//! formats (`hawker-live`) create them one at a time in their own
//! transaction; every reader of orders handles each source (an order names
//! its source and exactly that source's id, [`order::Source`]).
//!
//! A deal that sold out keeps a waitlist until its `ends_at` ([`waitlist`]):
//! units that come back are held for it and offered privately, in order,
//! and the offered buyer buys them through the same purchase path.
//!
//! Modules depend one way, with no cycle: [`purchase`] uses [`order`],
//! [`pricing`], [`stock`] and [`deals`]; none of those uses `purchase`.
//! `deals`, `coupons` and `scheduler` reach the gate only through
//! [`Commerce`], which this root assembles.

pub mod access;
pub mod commands;
pub mod config;
pub mod coupons;
pub mod deals;
pub mod discovery;
mod free_text;
pub mod fulfilment;
pub mod journey;
pub mod lapsed;
pub mod order;
pub mod payments;
pub mod pricing;
pub mod profile;
pub mod purchase;
pub mod reports;
pub mod sales;
pub mod scheduler;
pub mod sourced;
pub mod stock;
mod units;
pub mod waitlist;

use std::sync::Arc;

use hawker_hub::Hub;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::CommerceConfig;
pub use hawker_core::error::{Error, Result};

pub(crate) struct Inner {
    pub config: CommerceConfig,
    pub db: PgPool,
    pub hub: Hub,
    pub gate: purchase::gate::Gate,
    pub settler: purchase::settle::Settler,
    pub stock: stock::StockAnnouncer,
    pub webhook_secret: String,
}

/// The node's commerce service. Cheap to clone.
#[derive(Clone)]
pub struct Commerce {
    pub(crate) inner: Arc<Inner>,
}

impl Commerce {
    /// Starts the settlement writer, the stock announcer and the scheduler
    /// (tracked; they stop with `shutdown`, except the settlement writer,
    /// which stops at [`Commerce::close_settlement`]).
    pub fn start(
        config: CommerceConfig,
        db: PgPool,
        redis: hawker_redis::Redis,
        hub: Hub,
        webhook_secret: String,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Commerce {
        let gate = purchase::gate::Gate::new(redis, db.clone(), &hub.config().key_prefix)
            .with_rebuild_delay(config.test_rebuild_delay())
            .with_sold_out_mirror(std::time::Duration::from_millis(config.sold_out_mirror_ms));
        let (stock, stock_task) = stock::StockAnnouncer::new(hub.clone(), config.stock_event_interval_ms);
        let (settler, settle_task) =
            purchase::settle::Settler::new(&config, db.clone(), gate.clone(), stock.clone());
        let commerce = Commerce {
            inner: Arc::new(Inner {
                config,
                db,
                hub,
                gate,
                settler,
                stock,
                webhook_secret,
            }),
        };
        tasks.spawn(settle_task.run());
        tasks.spawn(stock_task.run(shutdown.clone()));
        tasks.spawn(scheduler::run(commerce.clone(), shutdown));
        commerce
    }

    /// Ends the settlement task once what is queued is settled. The server
    /// calls it after its listeners stopped: a purchase admitted during the
    /// drain still finds the task (until then the task outlives shutdown).
    pub fn close_settlement(&self) {
        self.inner.settler.close();
    }

    /// Why this node's own settlement batches cannot commit now, if so:
    /// readiness fails while it says something.
    pub fn settlement_problem(&self) -> Option<String> {
        self.inner.settler.problem()
    }

    /// The `[commerce]` configuration.
    pub fn config(&self) -> &CommerceConfig {
        &self.inner.config
    }

    /// The admission gate (the scheduler reconciles it; tests drive that).
    pub fn gate(&self) -> &purchase::gate::Gate {
        &self.inner.gate
    }

    /// The Postgres pool.
    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }

    /// The node's hub, for room events.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The deployment's Redis key prefix (`redis.key_prefix`), for commerce's own keys.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.inner.hub.config().key_prefix
    }
}
