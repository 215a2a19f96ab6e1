//! Commerce during a live session: the lineup, flash deals, purchases,
//! payments and coupon drops.
//!
//! A purchase goes through three layers ("The stampede" in the brief):
//! 1. the **admission gate** ([`gate`]): a Redis Lua script per deal that
//!    answers sold-out, over-cap, not-started, ended and repeated requests
//!    without touching Postgres, and reserves units for the rest;
//! 2. the **settlement writer** ([`settle`]): one task per node that commits
//!    many orders in one Postgres transaction (the deal's stock row is
//!    updated once per batch) and answers each request after the commit;
//! 3. **Postgres constraints** (`migrations/0002_commerce.sql`): no oversell,
//!    no buyer over the cap, one order per idempotency key, a coupon used once
//!    — whatever the gate says.
//!
//! Deals and coupon drops start and end on time from a durable schedule in
//! Postgres, claimed row by row (`for update skip locked`), and their room
//! events go through a transactional [`outbox`], so each happens once across
//! nodes and survives a restart.

pub mod access;
pub mod commands;
pub mod config;
pub mod coupons;
pub mod deals;
pub mod gate;
pub mod orders;
pub mod payments;
pub mod sales;
pub mod scheduler;
pub mod settle;
pub mod stock;

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
    pub gate: gate::Gate,
    pub settler: settle::Settler,
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
    /// (tracked; they stop with `shutdown`).
    pub fn start(
        config: CommerceConfig,
        db: PgPool,
        redis: redis::aio::ConnectionManager,
        hub: Hub,
        webhook_secret: String,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Commerce {
        let gate = gate::Gate::new(redis, db.clone());
        let (settler, settle_task) = settle::Settler::new(&config, db.clone());
        let (stock, stock_task) = stock::StockAnnouncer::new(hub.clone(), config.stock_event_interval_ms);
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
        let settle_task = settle_task.with_gate(commerce.inner.gate.clone(), commerce.inner.stock.clone());
        tasks.spawn(settle_task.run(shutdown.clone()));
        tasks.spawn(stock_task.run(shutdown.clone()));
        tasks.spawn(scheduler::run(commerce.clone(), shutdown));
        commerce
    }

    pub fn config(&self) -> &CommerceConfig {
        &self.inner.config
    }

    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }
}
