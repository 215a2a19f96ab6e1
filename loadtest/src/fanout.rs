//! The `fanout` scenario: V viewers over K hub nodes, host events at Rh/s
//! and chat at Rc/s from C chatters for D seconds; latency from scheduled
//! send time, loss / duplicates / reordering per lane, and what it cost the
//! server (RSS per socket, CPU seconds per million deliveries).
//!
//! With `--notice-rate R` it measures private notices instead: R notices/s
//! to distinct viewers (`notifier`), after a broadcast run with the same
//! deliveries per second, and compares the hub CPU per delivery of the two.
//!
//! With `--reference` it runs the same load against the reference server
//! (`crate::reference`) first, then against hawker, and reports the ratios
//! (`compare`); with `--rooms N` both runs have N rooms, the sockets placed
//! in them alike.
//!
//! - `args`: the options and their limits;
//! - `run`: the run with its nodes up (senders, viewers, the measured window);
//! - `publisher`: the host and chat senders; `viewer`, `worker`: the viewers,
//!   in this process or in `fanout-worker` children; `frame`: the marked event
//!   texts; `recorder`: their latencies; `counters`: the hub's `/metrics`;
//!   `notifier`: the private notices; `rooms`: the sessions of `--rooms`;
//!   `shards`: the Redis Cluster masters of `--redis-cluster`;
//! - `report`: the JSON, the PNG and the text summary; `compare`: hawker
//!   against the reference server.

mod args;
mod compare;
pub(crate) mod counters;
pub(crate) mod frame;
mod notifier;
mod publisher;
mod recorder;
mod report;
mod rooms;
mod run;
mod shards;
mod viewer;
mod worker;

pub use args::FanoutArgs;
use args::Server;
pub use worker::serve as serve_worker;

use crate::common::run::run_with_nodes;

/// Runs the scenario (with --notice-rate or --reference, its two runs) and
/// writes the results.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let args = args.with_room_hosts();
    args.validate()?;
    let (mut baseline, mut reference) = (None, None);
    for phase in args.phases() {
        let scenario = run::Fanout {
            args: &phase.args,
            server: phase.server,
            baseline: baseline.clone(),
            reference: reference.clone(),
            cost: Default::default(),
        };
        run_with_nodes(&scenario).await?;
        match phase.server {
            Server::Hawker => baseline = scenario.cost.take(),
            Server::Reference => reference = scenario.cost.take(),
        }
    }
    Ok(())
}
