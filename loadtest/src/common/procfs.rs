//! What `/proc` says about the processes of a run (RSS, CPU, run-queue
//! wait) and about the machine (its CPUs' time, load average, model), and
//! how fast a core is right now (`calibrate`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::Serialize;

/// One reading of a process from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub rss_kb: u64,
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    /// Time its threads were runnable but waited for a CPU (schedstat), in
    /// seconds: other work on the same core shows up here.
    pub wait_s: f64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state (3).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14 and stime 15 (1-based); `after` starts at field 3.
    let cpu_ticks = ticks(11) + ticks(12);
    Ok(ProcSample {
        rss_kb: field("VmRSS:"),
        cpu_s: cpu_ticks as f64 / clock_ticks() as f64,
        wait_s: run_queue_wait_ns(pid) as f64 / 1e9,
        threads: field("Threads:"),
    })
}

/// A reading of each process (all zero for one that cannot be read).
pub fn samples(pids: &[u32]) -> Vec<ProcSample> {
    pids.iter().map(|p| sample(*p).unwrap_or_default()).collect()
}

/// CPU seconds of the processes together.
pub fn cpu_s(pids: &[u32]) -> f64 {
    samples(pids).iter().map(|s| s.cpu_s).sum()
}

/// Run-queue wait of the processes together, in seconds.
pub fn wait_s(pids: &[u32]) -> f64 {
    samples(pids).iter().map(|s| s.wait_s).sum()
}

/// Σ over the process' threads of `/proc/PID/task/TID/schedstat`'s second
/// field (nanoseconds spent waiting on a run queue). Threads that ended are
/// not counted, so compare readings of long-lived processes only.
fn run_queue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Every process whose command name (`/proc/PID/comm`) is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

/// The CPUs a process may run on (`Cpus_allowed_list`).
pub fn affinity(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Milliseconds this thread takes for a fixed integer loop (about 100 ms on
/// an idle 2.6 GHz EPYC core). Slower means the core is shared: a hyperthread
/// sibling busy on the host, or other processes.
pub fn calibrate_ms() -> f64 {
    let started = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
    started.elapsed().as_secs_f64() * 1000.0
}

/// [`calibrate_ms`] on the given CPUs (`taskset -c`), in a child process.
pub fn calibrate_on(cpus: &str) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let output = if cpus.is_empty() {
        Command::new(exe).arg("calibrate").output().ok()?
    } else {
        Command::new("taskset")
            .args(["-c", cpus])
            .arg(exe)
            .arg("calibrate")
            .output()
            .ok()?
    };
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_mb: u64,
    pub kernel: String,
    /// `/proc/loadavg` when the run started and when it ended.
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub generator_cpus: String,
    pub server_cpus: BTreeMap<u32, String>,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            mem_total_mb: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            loadavg_start: loadavg(),
            generator_cpus: affinity(std::process::id()),
            ..Machine::default()
        }
    }
}

/// The columns of [`cpu_times`]: `/proc/stat` per CPU, in this order.
const CPU_TIME_NAMES: [&str; 7] = ["user", "nice", "system", "irq", "softirq", "steal", "idle"];
const USER: usize = 0;
const NICE: usize = 1;
const SYSTEM: usize = 2;
const IRQ: usize = 3;
const SOFTIRQ: usize = 4;
const STEAL: usize = 5;

/// Per-CPU time from `/proc/stat` (seconds): user, nice, system, irq,
/// softirq, steal, idle (with iowait). Other engineers' builds run niced, so
/// `nice` during a window is work that was not ours.
pub fn cpu_times() -> BTreeMap<String, [f64; 7]> {
    let ticks = clock_ticks() as f64;
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_string();
            let v: Vec<f64> = fields
                .filter_map(|f| f.parse::<f64>().ok())
                .map(|t| t / ticks)
                .collect();
            // user nice system idle iowait irq softirq steal
            let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
            Some((
                name,
                [get(0), get(1), get(2), get(5), get(6), get(7), get(3) + get(4)],
            ))
        })
        .collect()
}

/// `after − before` of [`cpu_times`], as JSON-friendly maps.
pub fn cpu_window(
    before: &BTreeMap<String, [f64; 7]>,
    after: &BTreeMap<String, [f64; 7]>,
) -> BTreeMap<String, BTreeMap<&'static str, f64>> {
    after
        .iter()
        .map(|(cpu, a)| {
            let b = before.get(cpu).copied().unwrap_or(*a);
            let values = CPU_TIME_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, ((a[i] - b[i]) * 100.0).round() / 100.0))
                .collect();
            (cpu.clone(), values)
        })
        .collect()
}

/// Busy seconds of all CPUs together since boot: user + nice + system + irq
/// + softirq + steal.
pub fn machine_busy_s() -> f64 {
    cpu_times()
        .values()
        .map(|t| t[USER] + t[NICE] + t[SYSTEM] + t[IRQ] + t[SOFTIRQ] + t[STEAL])
        .sum()
}

/// Share of the machine (all CPUs) busy over the next `secs`, in percent.
pub async fn busy_percent(secs: f64) -> f64 {
    let (a, t) = (machine_busy_s(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    100.0 * (machine_busy_s() - a) / (t.elapsed().as_secs_f64() * cpus)
}

/// One second of the run as the machine saw it (percent of one CPU).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecondSample {
    /// Seconds since the first scheduled event (end of the sampled second).
    pub t: f64,
    pub hub_cpu_pct: f64,
    /// Runnable but waiting for a CPU.
    pub hub_wait_pct: f64,
    pub generator_cpu_pct: f64,
    pub generator_wait_pct: f64,
    /// Busy CPU time (all CPUs) not used by the hub, the generator or Redis.
    pub others_pct: f64,
}

/// Samples once a second until `stop`: hub, generator and everyone else.
pub async fn sample_seconds(
    hub: Vec<u32>,
    generator: Vec<u32>,
    redis: Option<u32>,
    start_us: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<SecondSample> {
    let read = || {
        let sum = |pids: &[u32]| {
            pids.iter()
                .filter_map(|p| sample(*p).ok())
                .fold((0.0, 0.0), |(c, w), s| (c + s.cpu_s, w + s.wait_s))
        };
        // Without irq and softirq, unlike [`machine_busy_s`].
        let busy: f64 = cpu_times()
            .values()
            .map(|t| t[USER] + t[NICE] + t[SYSTEM] + t[STEAL])
            .sum();
        let redis = redis.and_then(|p| sample(p).ok()).map_or(0.0, |s| s.cpu_s);
        (sum(&hub), sum(&generator), redis, busy)
    };
    let mut samples = Vec::new();
    let mut previous = (read(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let now = (read(), Instant::now());
        let ((h0, g0, r0, b0), t0) = previous;
        let ((h1, g1, r1, b1), t1) = now;
        let secs = (t1 - t0).as_secs_f64().max(1e-3);
        let pct = |v: f64| (v / secs * 1000.0).round() / 10.0;
        let ours = (h1.0 - h0.0) + (g1.0 - g0.0) + (r1 - r0);
        samples.push(SecondSample {
            t: (super::clock::now_us() as f64 - start_us as f64) / 1e6,
            hub_cpu_pct: pct(h1.0 - h0.0),
            hub_wait_pct: pct(h1.1 - h0.1),
            generator_cpu_pct: pct(g1.0 - g0.0),
            generator_wait_pct: pct(g1.1 - g0.1),
            others_pct: pct((b1 - b0 - ours).max(0.0)),
        });
        previous = now;
    }
    samples
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0 && s.threads >= 1);
    }
}
