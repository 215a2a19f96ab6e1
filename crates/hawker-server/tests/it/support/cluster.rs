//! A private Redis Cluster (3 masters, 3 replicas) of `redis-server` child
//! processes, for tests that kill masters, wait for failovers and move slots
//! (the machine's cluster on 7000-7005 is shared by every test).
//!
//! Everything is synchronous std code and the `redis` crate's blocking API;
//! a helper that cannot get what it waits for panics and says what it saw.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a node takes to notice a dead peer (`cluster-node-timeout`).
const NODE_TIMEOUT_MS: u32 = 1000;
/// How long the waits (start, failover, slot move, restart) last at most.
const PATIENCE: Duration = Duration::from_secs(30);
/// How many keys one MIGRATE moves (what `redis-cli --cluster reshard` uses).
const MIGRATE_BATCH: usize = 10;

/// Client ports come from 20000..22768, so the cluster bus ports (+10000)
/// stay in 30000..32768, below Linux's ephemeral range (32768..): no
/// outgoing connection of another test can take a bus port meanwhile.
const PORT_FIRST: u32 = 20000;
const PORT_SPAN: u32 = 2768;

/// Where the next port search starts; spread by the process id so that
/// test binaries running at once do not all try the same ports first.
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

struct Node {
    port: u16,
    child: Option<Child>,
    /// Stopped with SIGSTOP: its process and sockets exist, it answers nothing.
    frozen: bool,
}

/// A private Redis Cluster of 6 `redis-server` children (3 masters with a
/// replica each), in its own temporary directory; dropped, it kills them
/// and removes the directory.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// 3 masters + 3 replicas on free ports, `cluster-node-timeout` 1000 ms,
    /// created with `redis-cli --cluster create … --cluster-replicas 1`;
    /// returns once every node says `cluster_state:ok` and every replica's
    /// link to its master is up (a replica that never synced would refuse
    /// to fail over).
    pub fn start() -> Self {
        let ports = free_cluster_ports(6);
        let dir = std::env::temp_dir().join(format!(
            "hawker-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = RedisCluster {
            nodes: ports
                .iter()
                .map(|&port| Node {
                    port,
                    child: None,
                    frozen: false,
                })
                .collect(),
            dir,
        };
        for port in ports.iter().copied() {
            cluster.spawn(port);
        }
        for port in ports.iter().copied() {
            cluster.wait_answers(port);
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed (make test installs it)");
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create {} failed:\n{}{}",
                addresses.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_settled("the new cluster to settle");
        cluster
    }

    /// Seed URLs of all six nodes, comma separated.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's port, live or not, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The hash slot of `key` (CLUSTER KEYSLOT, asked of a live node).
    pub fn slot_of(&self, key: &str) -> u16 {
        let mut con = connect(self.any_live());
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .expect("CLUSTER KEYSLOT");
        u16::try_from(slot).expect("a slot is below 16384")
    }

    /// The port of the master owning `slot`, as the first live node that
    /// answers sees it (CLUSTER SLOTS); a master that was just killed still
    /// owns its slots until a replica takes over.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        for port in self.live() {
            if let Some(owner) = try_connect(port).and_then(|mut con| owner_of(&mut con, slot)) {
                return owner;
            }
        }
        panic!("no live node of the cluster names an owner of slot {slot}");
    }

    /// The ports of the live masters (by CLUSTER NODES of a live node, with
    /// or without slots), sorted.
    pub fn masters(&self) -> Vec<u16> {
        let live = self.live();
        for &port in &live {
            let Some(mut con) = try_connect(port) else {
                continue;
            };
            let Ok(nodes) = redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut con) else {
                continue;
            };
            let mut masters: Vec<u16> = parse_nodes(&nodes)
                .into_iter()
                .filter(|n| n.master && !n.failed && live.contains(&n.port))
                .map(|n| n.port)
                .collect();
            masters.sort_unstable();
            return masters;
        }
        panic!("no live node of the cluster answers CLUSTER NODES");
    }

    /// SIGKILLs the node on `port`; it stays dead until [`Self::restart`].
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        let Some(mut child) = node.child.take() else {
            panic!("the cluster node on port {port} is already dead");
        };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the node on `port` with SIGSTOP: its connections stay open and
    /// silent (a frozen process, or a partition that drops packets). It
    /// counts as dead for the waits below; dropping the cluster kills it.
    pub fn freeze(&mut self, port: u16) {
        let node = self.node_mut(port);
        let Some(child) = node.child.as_ref() else {
            panic!("the cluster node on port {port} is dead");
        };
        let status = std::process::Command::new("kill")
            .args(["-STOP", &child.id().to_string()])
            .status()
            .expect("kill -STOP");
        assert!(status.success(), "kill -STOP of the node on {port}");
        node.frozen = true;
    }

    /// Starts the node on `port` again with its nodes.conf, so it rejoins
    /// (a killed master comes back as a replica of whoever took over);
    /// returns once the cluster has settled again.
    pub fn restart(&mut self, port: u16) {
        if self.node_mut(port).child.is_some() {
            panic!("the cluster node on port {port} is still running");
        }
        self.spawn(port);
        self.wait_answers(port);
        self.wait_settled(&format!("the cluster to settle after restarting {port}"));
    }

    /// Waits (at most 30 s) until every live node sees `slot` owned by one
    /// live master other than `old_master` and says `cluster_state:ok`;
    /// returns the new master's port.
    pub fn wait_failover(&self, slot: u16, old_master: u16) -> u16 {
        let started = Instant::now();
        loop {
            let views = self.owner_views(slot);
            let agreed = views.first().copied().flatten();
            if let Some(owner) = agreed {
                if owner != old_master
                    && self.live().contains(&owner)
                    && views.iter().all(|v| *v == Some(owner))
                    && self.all_ok()
                {
                    return owner;
                }
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "slot {slot} did not fail over from {old_master} within {PATIENCE:?}: the live nodes {:?} see owners {views:?}; {}",
                    self.live(),
                    self.states()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `slot` and its keys from its master to the master on `to_port`
    /// the way `redis-cli --cluster reshard` does: SETSLOT IMPORTING on the
    /// target, MIGRATING on the source, GETKEYSINSLOT + MIGRATE in batches of
    /// 10 keys, then SETSLOT NODE on the target, the source and the other
    /// masters. Sleeps `pause` once between MIGRATING and the first MIGRATE
    /// and again between batches, so a test can act while the slot is half
    /// moved; returns once every live node sees the new owner and says
    /// `cluster_state:ok`.
    pub fn move_slot(&self, slot: u16, to_port: u16, pause: Duration) {
        let from_port = self.master_of_slot(slot);
        if from_port == to_port {
            panic!("slot {slot} is already on {to_port}");
        }
        let mut from = connect(from_port);
        let mut to = connect(to_port);
        let from_id = my_id(&mut from);
        let to_id = my_id(&mut to);
        let setslot = |con: &mut redis::Connection, port: u16, state: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query::<()>(con)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state} {id} on {port}: {e}"));
        };
        setslot(&mut to, to_port, "IMPORTING", &from_id);
        setslot(&mut from, from_port, "MIGRATING", &to_id);
        std::thread::sleep(pause);
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(MIGRATE_BATCH)
                .query(&mut from)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut from)
                .unwrap_or_else(|e| {
                    panic!(
                        "MIGRATE of {} keys of slot {slot} from {from_port} to {to_port}: {e}",
                        keys.len()
                    )
                });
            if !pause.is_zero() {
                let left: i64 = redis::cmd("CLUSTER")
                    .arg("COUNTKEYSINSLOT")
                    .arg(slot)
                    .query(&mut from)
                    .expect("CLUSTER COUNTKEYSINSLOT");
                if left > 0 {
                    std::thread::sleep(pause);
                }
            }
        }
        setslot(&mut to, to_port, "NODE", &to_id);
        setslot(&mut from, from_port, "NODE", &to_id);
        for port in self.masters() {
            if port != from_port && port != to_port {
                setslot(&mut connect(port), port, "NODE", &to_id);
            }
        }
        let started = Instant::now();
        loop {
            let views = self.owner_views(slot);
            if views.iter().all(|v| *v == Some(to_port)) && self.all_ok() {
                return;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "slot {slot} did not settle on {to_port} within {PATIENCE:?}: the live nodes {:?} see owners {views:?}; {}",
                    self.live(),
                    self.states()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is no node of this cluster"))
    }

    fn live(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.frozen)
            .map(|n| n.port)
            .collect()
    }

    fn any_live(&self) -> u16 {
        *self.live().first().expect("a live node in the cluster")
    }

    fn node_dir(&self, port: u16) -> PathBuf {
        self.dir.join(port.to_string())
    }

    fn spawn(&mut self, port: u16) {
        let dir = self.node_dir(port);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // A replica's first sync (at start, and when a killed master
            // rejoins) would otherwise wait 5 s for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        self.node_mut(port).child = Some(child);
    }

    /// Waits until the node on `port` answers PING; panics (with the end of
    /// its log) if it exits or stays silent.
    fn wait_answers(&mut self, port: u16) {
        let log = self.node_dir(port).join("redis.log");
        let started = Instant::now();
        loop {
            if let Some(mut con) = try_connect(port) {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return;
                }
            }
            let node = self.node_mut(port);
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                node.child = None;
                panic!(
                    "cluster node redis-server on port {port} exited ({status}):\n{}",
                    tail(&log)
                );
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!(
                    "cluster node redis-server did not answer on port {port}:\n{}",
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every live node says cluster_state:ok, they all see the
    /// same slot owners, and every live replica's link to its master is up.
    fn wait_settled(&self, what: &str) {
        let started = Instant::now();
        loop {
            if self.all_ok() && self.slot_maps_agree() && self.replicas_linked() && self.roles_agree() {
                return;
            }
            if started.elapsed() > PATIENCE {
                panic!("waited {PATIENCE:?} for {what}: {}", self.states());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all_ok(&self) -> bool {
        self.live()
            .into_iter()
            .all(|port| cluster_state(port).as_deref() == Some("ok"))
    }

    fn slot_maps_agree(&self) -> bool {
        let maps: Vec<Option<Vec<(u16, u16, u16)>>> = self
            .live()
            .into_iter()
            .map(|port| try_connect(port).and_then(|mut con| slot_map(&mut con)))
            .collect();
        maps.first()
            .is_some_and(|first| first.is_some() && maps.iter().all(|m| m == first))
    }

    /// Every live node names the same live masters, three of six (gossip
    /// about who became a replica lags behind `cluster_state:ok` on a
    /// loaded machine).
    fn roles_agree(&self) -> bool {
        let live = self.live();
        let views: Vec<Option<Vec<u16>>> = live
            .iter()
            .map(|&port| {
                let mut con = try_connect(port)?;
                let nodes = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut con)
                    .ok()?;
                let mut masters: Vec<u16> = parse_nodes(&nodes)
                    .into_iter()
                    .filter(|n| n.master && !n.failed && live.contains(&n.port))
                    .map(|n| n.port)
                    .collect();
                masters.sort_unstable();
                Some(masters)
            })
            .collect();
        views.first().is_some_and(|first| {
            first.as_ref().is_some_and(|m| m.len() * 2 <= live.len().max(6))
                && views.iter().all(|v| v == first)
        })
    }

    fn replicas_linked(&self) -> bool {
        self.live().into_iter().all(|port| {
            let Some(info) = info(port, "replication") else {
                return false;
            };
            match field(&info, "role") {
                Some("master") => true,
                Some("slave") => field(&info, "master_link_status") == Some("up"),
                _ => false,
            }
        })
    }

    /// Each live node's view of who owns `slot` (None: no answer/no owner).
    fn owner_views(&self, slot: u16) -> Vec<Option<u16>> {
        self.live()
            .into_iter()
            .map(|port| try_connect(port).and_then(|mut con| owner_of(&mut con, slot)))
            .collect()
    }

    /// For panic messages: every node's port, liveness, role and state.
    fn states(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                if n.child.is_none() {
                    return format!("{} dead", n.port);
                }
                let role = info(n.port, "replication")
                    .and_then(|i| field(&i, "role").map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                let state = cluster_state(n.port).unwrap_or_else(|| "no answer".into());
                format!("{} {role} cluster_state:{state}", n.port)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` ports whose bus port (+10000) is free as well.
fn free_cluster_ports(count: usize) -> Vec<u16> {
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % PORT_SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut ports = Vec::with_capacity(count);
    for _ in 0..PORT_SPAN {
        let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % PORT_SPAN;
        let port = u16::try_from(PORT_FIRST + offset).expect("ports fit u16");
        let client = StdListener::bind(("127.0.0.1", port));
        let bus = StdListener::bind(("127.0.0.1", port + 10000));
        if client.is_ok() && bus.is_ok() {
            ports.push(port);
            if ports.len() == count {
                return ports;
            }
        }
    }
    panic!(
        "no {count} free port pairs (p, p+10000) in {PORT_FIRST}..{}",
        PORT_FIRST + PORT_SPAN
    );
}

fn try_connect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    con.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

fn connect(port: u16) -> redis::Connection {
    try_connect(port).unwrap_or_else(|| panic!("cannot connect to the cluster node on port {port}"))
}

fn my_id(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(con)
        .expect("CLUSTER MYID")
}

fn info(port: u16, section: &str) -> Option<String> {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut try_connect(port)?)
        .ok()
}

fn cluster_state(port: u16) -> Option<String> {
    let text: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut try_connect(port)?)
        .ok()?;
    field(&text, "cluster_state").map(str::to_owned)
}

/// The value of `name:value` in an INFO-style reply.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
}

/// This node's CLUSTER SLOTS as sorted `(first, last, master port)`; the
/// reply's entries are `[start, end, [ip, port, id, …], replicas…]`.
fn slot_map(con: &mut redis::Connection) -> Option<Vec<(u16, u16, u16)>> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(con).ok()?;
    let number = |v: &redis::Value| match v {
        redis::Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut map = ranges
        .iter()
        .map(|range| {
            let redis::Value::Array(parts) = range else {
                return None;
            };
            let redis::Value::Array(master) = parts.get(2)? else {
                return None;
            };
            Some((
                number(parts.first()?)?,
                number(parts.get(1)?)?,
                number(master.get(1)?)?,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    map.sort_unstable();
    Some(map)
}

/// The master port owning `slot` by this node's CLUSTER SLOTS.
fn owner_of(con: &mut redis::Connection, slot: u16) -> Option<u16> {
    slot_map(con)?
        .into_iter()
        .find(|(first, last, _)| (*first..=*last).contains(&slot))
        .map(|(_, _, master)| master)
}

struct NodeLine {
    port: u16,
    master: bool,
    failed: bool,
}

/// CLUSTER NODES lines: `id ip:port@bus flags master-id ping pong epoch link slots…`.
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let address = words.nth(1)?;
            let flags = words.next()?;
            let port = address.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = flags.split(',').collect();
            Some(NodeLine {
                port,
                master: flags.contains(&"master"),
                failed: flags
                    .iter()
                    .any(|f| *f == "fail" || *f == "fail?" || *f == "noaddr"),
            })
        })
        .collect()
}

/// The last lines of a node's log, for panic messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
