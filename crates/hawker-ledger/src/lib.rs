//! hawker's money and figures after the fact: the commission accrual worker
//! and the append-only ledger it writes ([`ledger`]), statements over it
//! ([`statements`]), the commission arithmetic ([`commission`]) and live
//! session figures ([`figures`]).
//!
//! It owns `commission_accrual`, `commission_entry`, `session_room_tally`,
//! `session_sample` and `session_viewer` (`migrations/0003_agency.sql`) and
//! `commission_accrual_cursor` (`0004_accrual_cursor.sql`), and reads the
//! agency side's, commerce's and the hub's data through their functions only. Two workers run on every node ([`start`]): the commission
//! accrual and the room sampler behind live figures; a third deletes
//! `session_sample` rows past their retention (money records are never deleted).

pub mod commission;
pub mod figures;
pub mod ledger;
pub mod statements;

use std::time::Duration;

use hawker_hub::Hub;
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
    /// How far behind the database's clock the accrual re-reads its sources
    /// once more, for transactions that committed after newer ones
    /// ([`ledger::MARGIN`]).
    pub accrual_margin: Duration,
    /// Copying live rooms' counters from the hub.
    pub sample_every: Duration,
    /// `session_sample` rows older than this are deleted.
    pub sample_retention: Duration,
    /// How often the retention sweeper runs, and rows it deletes per statement.
    pub sweep_every: Duration,
    pub sweep_batch: i64,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            accrual_every: Duration::from_secs(1),
            accrual_margin: ledger::MARGIN,
            sample_every: Duration::from_secs(1),
            sample_retention: Duration::from_secs(30 * 86_400),
            sweep_every: Duration::from_secs(60),
            sweep_batch: 1000,
        }
    }
}

/// Starts the accrual worker, the room sampler and the samples' retention sweeper (tracked; they stop with
/// `shutdown`). They get a small pool of their own, made from `db`'s
/// settings, so they never wait for — or hold — a connection a request needs.
pub fn start(workers: Workers, db: &PgPool, hub: Hub, shutdown: CancellationToken, tasks: &TaskTracker) {
    let own = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*db.connect_options()).clone());
    tasks.spawn(ledger::run(
        own.clone(),
        workers.accrual_every,
        workers.accrual_margin,
        shutdown.clone(),
    ));
    tasks.spawn(figures::sampler::run(
        own.clone(),
        hub,
        workers.sample_every,
        shutdown.clone(),
    ));
    let (older_than, batch) = (workers.sample_retention, workers.sweep_batch);
    tasks.spawn(hawker_hub::retention::run_sweeper(
        "session_sample",
        workers.sweep_every,
        batch,
        shutdown,
        move || {
            let db = own.clone();
            async move { Ok(figures::sampler::sweep_samples(&db, older_than, batch).await?) }
        },
    ));
}
