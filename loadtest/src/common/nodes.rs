//! Hub nodes this tool starts (`--spawn`): `hawker seed` before them,
//! `hawker serve` processes (or the reference server, `fanout --reference`)
//! on free ports, stopping them, and `perf record` of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::probe::http_get;

/// Which server a node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// `hawker serve` (`hawker_bin`).
    Hawker,
    /// This tool's `reference-server` (the bare fan-out of `fanout --reference`).
    Reference {
        /// This program.
        exe: PathBuf,
        /// Frames of each room's ring (`reference-server --ring-frames`):
        /// smaller with more rooms, so that all rooms fit.
        ring_frames: usize,
    },
}

/// How to start hub nodes.
pub struct SpawnConfig {
    pub count: usize,
    pub server: ServerKind,
    pub hawker_bin: PathBuf,
    pub config_dir: PathBuf,
    /// `taskset -c` list for the nodes; empty = not pinned.
    pub cpus: String,
    pub base_port: u16,
    pub admin_base_port: u16,
    /// Environment for every node, after the tool's own (`--server-env` last).
    pub env: Vec<(String, String)>,
    /// `hawker seed` before the nodes start; `None`: not seeded.
    pub seed: Option<Seed>,
}

/// `hawker seed` (idempotent): the demo session and agency the runs use.
pub struct Seed {
    /// What is seeded, for the progress line (`seeding <what> (hawker seed)`).
    pub what: String,
    /// The database to seed (created and migrated if need be); `None`: the configuration's.
    pub database_url: Option<String>,
}

/// A node this tool started.
pub struct SpawnedNode {
    child: Child,
    pub pid: u32,
    /// `127.0.0.1:port` of its public listener.
    pub addr: String,
    pub admin_url: String,
    pub log: PathBuf,
}

impl Drop for SpawnedNode {
    /// A node outlives nothing: if [`stop`] did not run (an error or a
    /// panic on the way), it is killed here.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `hawker seed` and fails with its stderr if it fails.
pub fn seed(hawker_bin: &Path, config_dir: &Path, database_url: Option<&str>) -> anyhow::Result<()> {
    let output = seed_command(hawker_bin, config_dir, database_url)
        .output()
        .with_context(|| format!("running {} seed", hawker_bin.display()))?;
    if !output.status.success() {
        bail!(
            "`hawker seed` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn seed_command(hawker_bin: &Path, config_dir: &Path, database_url: Option<&str>) -> Command {
    let mut command = Command::new(hawker_bin);
    command
        .arg("seed")
        .env("HAWKER_ENV", "development")
        .env("HAWKER_CONFIG_DIR", config_dir)
        .env("HAWKER__LOG__FILTER", "warn");
    if let Some(url) = database_url {
        command.env("HAWKER__DATABASE__URL", url);
    }
    command
}

/// `hawker serve` (or the reference server) on the given ports, under
/// `taskset -c` when pinned. Both get the same environment (`--server-env`).
fn serve_command(config: &SpawnConfig, port: u16, admin: u16) -> Command {
    let program = config.program();
    let mut command = if config.cpus.is_empty() {
        Command::new(program)
    } else {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(&config.cpus).arg(program);
        c
    };
    match config.server {
        ServerKind::Hawker => command.arg("serve"),
        ServerKind::Reference { ring_frames, .. } => command
            .arg("reference-server")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!("--ring-frames={ring_frames}")),
    };
    command
        // hawker refuses to guess its environment; every load generator
        // connects from 127.0.0.1, so the per-address cap is lifted.
        .env("HAWKER_ENV", "development")
        .env("HAWKER__SERVER__MAX_CONNECTIONS_PER_IP", "1000000")
        .env("HAWKER_CONFIG_DIR", &config.config_dir)
        .env("HAWKER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("HAWKER__SERVER__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("HAWKER__SERVER__PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("HAWKER__LOG__FILTER", "warn")
        .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

impl SpawnConfig {
    /// The binary the nodes run.
    fn program(&self) -> &Path {
        match &self.server {
            ServerKind::Hawker => &self.hawker_bin,
            ServerKind::Reference { exe, .. } => exe,
        }
    }
}

/// Starts the nodes, logging to `$TMPDIR/hawker-loadtest-<run>-node<i>.log`,
/// and waits until each answers `/readyz`.
pub async fn spawn(config: &SpawnConfig, run: &str) -> anyhow::Result<Vec<SpawnedNode>> {
    if !config.program().exists() {
        bail!(
            "{} does not exist: build it (cargo build --release -p hawker-server) or pass --hawker-bin",
            config.program().display()
        );
    }
    let mut nodes = Vec::new();
    let (mut next_port, mut next_admin) = (config.base_port, config.admin_base_port);
    for i in 0..config.count {
        // Other people's servers may hold some ports: take the next free ones.
        let port = free_port(&mut next_port)?;
        let admin = free_port(&mut next_admin)?;
        let log = std::env::temp_dir().join(format!("hawker-loadtest-{run}-node{i}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = serve_command(config, port, admin)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", config.program().display()))?;
        // `taskset` execs the server, so the child's pid is the server's.
        let pid = child.id();
        nodes.push(SpawnedNode {
            child,
            pid,
            addr: format!("127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin}"),
            log,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &mut nodes {
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!(
                    "node {} exited at start ({status}); see {}",
                    node.addr,
                    node.log.display()
                );
            }
            if matches!(http_get(&node.admin_url, "/readyz").await, Ok((200, _))) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not ready after 60 s; see {}",
                    node.addr,
                    node.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(nodes)
}

/// The first port from `*next` that can be bound on 127.0.0.1 now; moves `*next` past it.
fn free_port(next: &mut u16) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = *next;
        *next = next.checked_add(1).ok_or_else(|| anyhow!("ran out of ports"))?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port near {next}")
}

/// Stops the nodes: SIGTERM (graceful), then SIGKILL after 15 s.
pub fn stop(nodes: &mut [SpawnedNode]) {
    for node in nodes.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &node.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in nodes.iter_mut() {
        while Instant::now() < deadline {
            if !matches!(node.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(node.child.try_wait(), Ok(None)) {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// `perf record` (software clock, so it works in VMs without hardware
/// counters) of the nodes over the measured window.
pub struct Profiler {
    child: Child,
    data: PathBuf,
}

impl Profiler {
    /// Records the given processes for `seconds`, into a file of the run in `$TMPDIR`.
    pub fn start(pids: &[u32], run: &str, seconds: f64) -> anyhow::Result<Profiler> {
        let data = std::env::temp_dir().join(format!("hawker-loadtest-{run}.perf.data"));
        let pids = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "999", "-e", "cpu-clock", "-p", &pids, "-o"])
            .arg(&data)
            .args(["--", "sleep", &format!("{seconds:.1}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `perf record` (is perf installed?)")?;
        Ok(Profiler { child, data })
    }

    /// Waits for `perf record` and summarises it: share of samples by
    /// binary, then the hottest symbols.
    pub fn finish(mut self) -> anyhow::Result<String> {
        let _ = self.child.wait();
        let report = |sort: &str| -> anyhow::Result<String> {
            let output = Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "--percent-limit",
                    "0.5",
                    "--sort",
                    sort,
                    "-i",
                ])
                .arg(&self.data)
                .stderr(Stdio::null())
                .output()
                .context("running `perf report`")?;
            let text = String::from_utf8_lossy(&output.stdout);
            Ok(text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| l.trim_end().to_string())
                .collect::<Vec<_>>()
                .join("\n"))
        };
        let summary = format!(
            "perf record -F 999 -e cpu-clock of the hub node(s) over the sending window\n\n\
             by binary:\n{}\n\nby symbol (≥ 0.5%):\n{}\n",
            report("dso")?,
            report("dso,symbol")?
        );
        let _ = std::fs::remove_file(&self.data);
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn env_of<'a>(command: &'a Command, key: &str) -> Option<&'a OsStr> {
        command
            .get_envs()
            .find(|(k, _)| *k == OsStr::new(key))
            .and_then(|(_, v)| v)
    }

    #[test]
    fn seed_targets_the_given_database_or_the_configured_one() {
        let bin = Path::new("/opt/hawker");
        let with = seed_command(bin, Path::new("/cfg"), Some("postgres://postgres@127.0.0.1/x"));
        assert_eq!(with.get_program(), "/opt/hawker");
        assert_eq!(with.get_args().collect::<Vec<_>>(), ["seed"]);
        assert_eq!(env_of(&with, "HAWKER_CONFIG_DIR"), Some(OsStr::new("/cfg")));
        assert_eq!(env_of(&with, "HAWKER__LOG__FILTER"), Some(OsStr::new("warn")));
        assert_eq!(
            env_of(&with, "HAWKER__DATABASE__URL"),
            Some(OsStr::new("postgres://postgres@127.0.0.1/x"))
        );
        let without = seed_command(bin, Path::new("/cfg"), None);
        assert_eq!(env_of(&without, "HAWKER__DATABASE__URL"), None);
    }

    #[test]
    fn nodes_are_pinned_with_taskset_and_get_the_extra_environment_last() {
        let mut config = SpawnConfig {
            count: 1,
            server: ServerKind::Hawker,
            hawker_bin: PathBuf::from("/opt/hawker"),
            config_dir: PathBuf::from("/cfg"),
            cpus: "0".to_string(),
            base_port: 28080,
            admin_base_port: 29080,
            env: vec![("HAWKER__LOG__FILTER".to_string(), "debug".to_string())],
            seed: None,
        };
        let pinned = serve_command(&config, 28081, 29081);
        assert_eq!(pinned.get_program(), "taskset");
        assert_eq!(
            pinned.get_args().collect::<Vec<_>>(),
            ["-c", "0", "/opt/hawker", "serve"]
        );
        assert_eq!(
            env_of(&pinned, "HAWKER__SERVER__LISTEN"),
            Some(OsStr::new("127.0.0.1:28081"))
        );
        // --server-env comes after the tool's own settings, so it wins.
        assert_eq!(env_of(&pinned, "HAWKER__LOG__FILTER"), Some(OsStr::new("debug")));
        config.cpus.clear();
        let free = serve_command(&config, 28081, 29081);
        assert_eq!(free.get_program(), "/opt/hawker");
        assert_eq!(free.get_args().collect::<Vec<_>>(), ["serve"]);
    }

    #[test]
    fn the_reference_server_is_this_tool_pinned_and_configured_like_hawker() {
        let config = SpawnConfig {
            count: 1,
            server: ServerKind::Reference {
                exe: PathBuf::from("/opt/hawker-loadtest"),
                ring_frames: 256,
            },
            hawker_bin: PathBuf::from("/opt/hawker"),
            config_dir: PathBuf::from("/cfg"),
            cpus: "0".to_string(),
            base_port: 28080,
            admin_base_port: 29080,
            env: vec![("TOKIO_WORKER_THREADS".to_string(), "1".to_string())],
            seed: None,
        };
        let command = serve_command(&config, 28081, 29081);
        assert_eq!(command.get_program(), "taskset");
        assert_eq!(
            command.get_args().collect::<Vec<_>>(),
            [
                "-c",
                "0",
                "/opt/hawker-loadtest",
                "reference-server",
                "--listen=127.0.0.1:28081",
                "--admin-listen=127.0.0.1:29081",
                "--ring-frames=256"
            ]
        );
        assert_eq!(env_of(&command, "TOKIO_WORKER_THREADS"), Some(OsStr::new("1")));
    }
}
