//! The `stampede` scenario: buyers press "buy" on a flash deal — one, or
//! with `--deals N` N deals selling at once, each in its own session (so its
//! own room), connection c selling deal c mod N. Three modes, one per budget
//! of the commerce issue (with N deals each deal has the mode's quantity and
//! cap, and the rates are the sum over the deals):
//!
//! - `commit`: a deal too big to sell out (1,000,000 units, cap 2, a fresh
//!   buyer every two attempts), as fast as C connections go: committed orders/s.
//! - `soldout`: a 1,000-unit deal sold out by a burst of 5,000 buyers (the
//!   stampede itself; 5,000 buyers per deal), then hammered: sold-out rejections/s.
//! - `rate`: open loop at a fixed attempt rate (10,000/s) on a deal that does
//!   not sell out, latency from the scheduled send time: p99.
//!
//! Afterwards the invariants are checked in Postgres, deal by deal (Σ order
//! units = deal.sold ≤ quantity, nobody over the cap, every 201's order
//! exists in the deal it was for); the run passes only if every deal passes. Then
//! the baseline — pgbench, one transaction per order on one hot row — runs
//! against the same Postgres. See loadtest/README.md and docs/benchmarks.md.
//!
//! - `args`: the options and the plan of a run; `deals`: the sessions of the
//!   deals and which connection sells which;
//! - `run`: the run with its node up; `setup`: the database, the sessions, the
//!   deals, the invariants and the settlement metrics; `load`: one phase of
//!   purchase attempts over `common::http1` connections or room sockets; `cpu`: CPU of
//!   each process; `baseline`: pgbench;
//! - `report`: the budgets, the JSON, the PNG and the text summary.

mod args;
mod baseline;
mod cpu;
mod deals;
mod load;
mod report;
mod run;
pub(crate) mod setup;

pub use args::StampedeArgs;

use self::baseline::PgTarget;
use crate::common::run::run_with_nodes;

/// Runs the scenario and writes its results; fails if an invariant does not hold.
pub async fn run(args: StampedeArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let scenario = args.scenario();
    let pg_target = PgTarget::parse(&args.database_url)?;
    run_with_nodes(&run::Stampede {
        args: &args,
        plan,
        scenario,
        pg_target,
    })
    .await
}
