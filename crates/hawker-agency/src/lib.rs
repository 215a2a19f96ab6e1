//! The agency side of hawker: MCN agencies, their rosters of hosts, brands'
//! campaigns and the commission terms agreed in them, scheduling (sessions,
//! shifts, go-live, handoffs, end), attribution of orders to the host on
//! shift, the append-only commission ledger with its statements, and live
//! session figures.
//!
//! Everything here is a database function of the caller's [`Claims`]: the
//! HTTP layer (`hawker-server`) only parses, calls and maps errors. Two
//! workers run on every node ([`start`]): the commission accrual
//! ([`ledger`]) and the room sampler behind live figures ([`figures`]).
//! The SQL side — constraints, `host_on_shift()`, `terms_in_force()`, the
//! append-only triggers — is in `migrations/0003_agency.sql`.
//!
//! [`Claims`]: hawker_core::Claims

pub mod access;
pub mod campaigns;
pub mod commission;
pub mod figures;
pub mod ledger;
pub mod roster;
pub mod schedule;
pub mod statements;
pub mod time;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use hawker_core::error::{Error, Result};

/// How often the workers run.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    /// Commission accrual.
    pub accrual_every: Duration,
    /// Copying live rooms' counters from Redis.
    pub sample_every: Duration,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            accrual_every: Duration::from_secs(1),
            sample_every: Duration::from_secs(1),
        }
    }
}

/// Starts the accrual worker and the room sampler (tracked; they stop with
/// `shutdown`). They get a small pool of their own, made from `db`'s
/// settings, so they never wait for — or hold — a connection a request needs.
pub fn start(
    workers: Workers,
    db: &PgPool,
    redis: redis::aio::ConnectionManager,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let own = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*db.connect_options()).clone());
    tasks.spawn(ledger::run(own.clone(), workers.accrual_every, shutdown.clone()));
    tasks.spawn(figures::run_sampler(own, redis, workers.sample_every, shutdown));
}
