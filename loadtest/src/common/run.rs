//! One run of a scenario: [`run_with_nodes`] checks the settings every
//! scenario has, names the run, starts the hub nodes (`--spawn`) or takes the
//! running ones, measures through the scenario's hooks, and stops what it
//! started, whatever happened on the way.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use uuid::Uuid;

use super::nodes::{self, SpawnConfig, SpawnedNode};
use super::procfs::{self, Machine};
use super::{probe, ws};

/// The settings every scenario has.
pub struct Settings<'a> {
    /// `--scenario`: the start of the result files' names.
    pub scenario: &'a str,
    /// `--out-dir`: where the results go.
    pub out_dir: &'a Path,
    /// `--redis`: for its CPU time (host:port on 127.0.0.1).
    pub redis: &'a str,
}

/// Where the hub nodes of a run come from.
pub enum NodePlan {
    /// Start them (after `hawker seed`, if asked) and stop them after the run.
    Spawn(SpawnConfig),
    /// Nodes already running, as given on the command line.
    Given {
        /// `127.0.0.1:port` of each public listener.
        addrs: Vec<String>,
        /// Admin listeners (`http://…`), for `/metrics`.
        admins: Vec<String>,
        /// Process ids, for RSS and CPU.
        pids: Vec<u32>,
    },
}

/// A scenario, as [`run_with_nodes`] drives it.
pub trait Scenario {
    /// What [`Scenario::before_nodes`] measured, handed on to [`Scenario::measure`].
    type Before;

    fn settings(&self) -> Settings<'_>;

    /// Says what is about to run (stderr) and measures what must be measured
    /// before any node starts.
    async fn before_nodes(&self, run: &Run) -> anyhow::Result<Self::Before>;

    /// The nodes to start or to use.
    fn nodes(&self) -> anyhow::Result<NodePlan>;

    /// The load, its measurements and the result files, with the nodes up.
    async fn measure(&self, run: &mut Run, before: Self::Before) -> anyhow::Result<()>;
}

/// A run in progress: its name, the machine, and the nodes it uses.
pub struct Run {
    /// Six hex digits: in user names, keys and log file names of this run.
    pub id: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub machine: Machine,
    /// `127.0.0.1:port` of each node's public listener.
    pub addrs: Vec<String>,
    /// The nodes' admin listeners.
    pub admins: Vec<String>,
    /// The nodes' process ids.
    pub pids: Vec<u32>,
    /// The nodes this run started (empty with given nodes, and once stopped).
    pub spawned: Vec<SpawnedNode>,
    pub redis_pid: Option<u32>,
}

impl Run {
    fn new() -> Run {
        Run {
            id: Uuid::new_v4().simple().to_string()[..6].to_string(),
            started_at: chrono::Utc::now(),
            machine: Machine::read(),
            addrs: Vec::new(),
            admins: Vec::new(),
            pids: Vec::new(),
            spawned: Vec::new(),
            redis_pid: None,
        }
    }

    async fn start_nodes(&mut self, plan: NodePlan, redis: &str) -> anyhow::Result<()> {
        match plan {
            NodePlan::Spawn(config) => {
                if let Some(seed) = &config.seed {
                    note!("seeding {} (hawker seed)", seed.what);
                    nodes::seed(
                        &config.hawker_bin,
                        &config.config_dir,
                        seed.database_url.as_deref(),
                    )?;
                }
                if config.cpus.is_empty() {
                    note!("starting {} node(s), not pinned", config.count);
                } else {
                    note!(
                        "starting {} node(s) pinned to CPUs `{}`",
                        config.count,
                        config.cpus
                    );
                }
                self.spawned = nodes::spawn(&config, &self.id).await?;
                self.addrs = self.spawned.iter().map(|n| n.addr.clone()).collect();
                self.admins = self.spawned.iter().map(|n| n.admin_url.clone()).collect();
                self.pids = self.spawned.iter().map(|n| n.pid).collect();
            }
            NodePlan::Given { addrs, admins, pids } => {
                self.addrs = addrs;
                self.admins = admins;
                self.pids = pids;
            }
        }
        if self.addrs.is_empty() {
            bail!("no nodes");
        }
        for pid in &self.pids {
            self.machine.server_cpus.insert(*pid, procfs::affinity(*pid));
        }
        self.redis_pid = probe::redis_pid(redis).await;
        Ok(())
    }

    /// Stops the nodes this run started (SIGTERM, then SIGKILL after 15 s).
    pub fn stop_nodes(&mut self) {
        if !self.spawned.is_empty() {
            note!("stopping the spawned nodes");
            nodes::stop(&mut self.spawned);
            self.spawned.clear();
        }
    }

    /// `<out_dir>/<scenario>-<UTC start>`: the result files are this with
    /// `.json`, `.png` and `.perf.txt`.
    pub fn result_base(&self, out_dir: &Path, scenario: &str) -> PathBuf {
        let stamp = self.started_at.format("%Y%m%dT%H%M%SZ");
        out_dir.join(format!("{scenario}-{stamp}"))
    }
}

/// Writes a result file, creating its directory if it is missing.
pub fn write_result(path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// `--scenario` goes into file names: letters, digits, `-` and `_` only.
fn check_scenario_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--scenario: letters, digits, - and _ only");
    }
    Ok(())
}

/// Runs a scenario: settings checked, the output directory created, the
/// nodes started or found, the scenario's hooks run, and the nodes this run
/// started stopped, whether it succeeded or not.
pub async fn run_with_nodes<S: Scenario>(scenario: &S) -> anyhow::Result<()> {
    let settings = scenario.settings();
    check_scenario_name(settings.scenario)?;
    let redis_host = settings.redis.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
    if !ws::is_loopback(redis_host) {
        bail!("--redis must be on 127.0.0.1");
    }
    std::fs::create_dir_all(settings.out_dir)
        .with_context(|| format!("creating {}", settings.out_dir.display()))?;
    let mut run = Run::new();
    let outcome = async {
        let before = scenario.before_nodes(&run).await?;
        run.start_nodes(scenario.nodes()?, settings.redis).await?;
        scenario.measure(&mut run, before).await
    }
    .await;
    run.stop_nodes();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_safe_in_file_names() {
        assert!(check_scenario_name("budget1-10k_x10").is_ok());
        assert!(check_scenario_name("").is_err());
        assert!(check_scenario_name("../x").is_err());
        assert!(check_scenario_name("a b").is_err());
    }

    #[test]
    fn result_files_are_named_after_the_scenario_and_the_start() {
        let mut run = Run::new();
        run.started_at = chrono::DateTime::parse_from_rfc3339("2026-11-21T00:41:41Z")
            .unwrap()
            .into();
        assert_eq!(
            run.result_base(Path::new("loadtest/results"), "smoke")
                .with_extension("json"),
            Path::new("loadtest/results/smoke-20261121T004141Z.json")
        );
    }

    #[test]
    fn result_files_create_their_directory() {
        let dir = std::env::temp_dir().join(format!("hawker-loadtest-test-{}", Uuid::new_v4().simple()));
        let path = dir.join("results").join("x.json");
        write_result(&path, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
