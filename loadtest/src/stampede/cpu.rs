//! CPU seconds of the processes a purchase goes through — the node, Redis,
//! every Postgres process, this generator — and of the whole machine.

use std::time::Instant;

use serde::Serialize;

use crate::common::procfs;

/// CPU seconds of the processes that matter, read together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSample {
    pub server: f64,
    pub redis: f64,
    pub postgres: f64,
    /// Each Postgres process (backends come and go: a delta counts only what
    /// ran inside the window).
    #[serde(skip)]
    postgres_by_pid: Vec<(u32, f64)>,
    pub generator: f64,
    /// All CPUs, busy (non-idle) seconds, from /proc/stat.
    pub machine_busy: f64,
    /// Seconds since the measured phase's clock started.
    pub at: f64,
}

/// The processes whose CPU is read besides Postgres' and this one's.
pub struct Pids {
    pub server: Option<u32>,
    pub redis: Option<u32>,
}

impl CpuSample {
    pub fn read(pids: &Pids, started: Instant) -> CpuSample {
        let cpu = |pid: Option<u32>| {
            pid.and_then(|p| procfs::sample(p).ok())
                .map(|s| s.cpu_s)
                .unwrap_or(0.0)
        };
        let postgres: Vec<(u32, f64)> = procfs::pids_named("postgres")
            .into_iter()
            .map(|p| (p, cpu(Some(p))))
            .collect();
        CpuSample {
            server: cpu(pids.server),
            redis: cpu(pids.redis),
            postgres: postgres.iter().map(|(_, c)| c).sum(),
            postgres_by_pid: postgres,
            generator: cpu(Some(std::process::id())),
            machine_busy: procfs::machine_busy_s(),
            at: started.elapsed().as_secs_f64(),
        }
    }

    /// `self − before`.
    pub fn since(&self, before: &CpuSample) -> CpuSample {
        CpuSample {
            server: self.server - before.server,
            redis: self.redis - before.redis,
            postgres: self
                .postgres_by_pid
                .iter()
                .map(|(pid, after)| {
                    let earlier = before
                        .postgres_by_pid
                        .iter()
                        .find(|(p, _)| p == pid)
                        .map(|(_, c)| *c);
                    after - earlier.unwrap_or(0.0)
                })
                .sum(),
            postgres_by_pid: Vec::new(),
            generator: self.generator - before.generator,
            machine_busy: self.machine_busy - before.machine_busy,
            at: self.at - before.at,
        }
    }
}
