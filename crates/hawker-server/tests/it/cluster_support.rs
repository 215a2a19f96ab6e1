//! The private Redis Cluster of `support::cluster` does what the failover
//! and slot-move tests rely on: it starts whole, fails over when a master
//! dies, takes a killed node back as a replica, and moves a slot with its
//! keys (redirecting with ASK while the move is under way).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind};

use crate::support::RedisCluster;

fn con(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

fn role(port: u16) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut con(port))
        .unwrap();
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix("role:").map(str::to_owned))
        .unwrap()
}

#[test]
fn a_private_cluster_starts_with_three_masters_covering_every_slot() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("private cluster started in {:?}", started.elapsed());

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    assert_eq!(cluster.ports().len(), 6);
    let seeds: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    assert_eq!(cluster.seeds(), seeds.join(","));
    assert_eq!(cluster.slot_of("foo"), 12182, "CRC16 slot of foo");
    assert_eq!(cluster.slot_of("{room:7}:events"), cluster.slot_of("room:7"));
    for slot in [0, 5460, 5461, 10922, 10923, 16383] {
        assert!(masters.contains(&cluster.master_of_slot(slot)), "slot {slot}");
    }
    let owners: std::collections::BTreeSet<u16> = [0, 8000, 16383].map(|s| cluster.master_of_slot(s)).into();
    assert_eq!(owners.len(), 3, "each master owns a third of the slots");
}

#[test]
fn a_private_cluster_fails_over_when_a_master_is_killed() {
    let mut cluster = RedisCluster::start();
    let slot = cluster.slot_of("failover:key");
    let old = cluster.master_of_slot(slot);
    let mut master = con(old);
    redis::cmd("SET")
        .arg("failover:key")
        .arg("kept")
        .query::<()>(&mut master)
        .unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(1000).query(&mut master).unwrap();
    assert_eq!(acked, 1, "the replica acknowledged the write");

    cluster.kill(old);
    let killed = Instant::now();
    let new = cluster.wait_failover(slot, old);
    eprintln!(
        "failover of slot {slot} from {old} to {new} took {:?}",
        killed.elapsed()
    );

    assert_ne!(new, old);
    assert_eq!(cluster.master_of_slot(slot), new);
    let value: String = redis::cmd("GET")
        .arg("failover:key")
        .query(&mut con(new))
        .unwrap();
    assert_eq!(value, "kept", "the new master has the replicated key");
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters after failover: {masters:?}");
    assert!(!masters.contains(&old));

    let restarting = Instant::now();
    cluster.restart(old);
    eprintln!("the killed master rejoined in {:?}", restarting.elapsed());
    assert_eq!(role(old), "slave", "the old master came back as a replica");
    assert_eq!(cluster.master_of_slot(slot), new);
    assert_eq!(cluster.masters().len(), 3);
}

#[test]
fn a_slot_moves_with_its_keys() {
    let cluster = RedisCluster::start();
    let keys: Vec<String> = (0..25).map(|i| format!("{{moving}}:{i}")).collect();
    let slot = cluster.slot_of(&keys[0]);
    let from = cluster.master_of_slot(slot);
    let to = *cluster.masters().iter().find(|&&p| p != from).unwrap();
    let mut source = con(from);
    for key in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg(format!("value of {key}"))
            .query::<()>(&mut source)
            .unwrap();
    }

    let asked = std::thread::scope(|scope| {
        let mover = scope.spawn(|| cluster.move_slot(slot, to, Duration::from_millis(300)));
        // While the slot is migrating, the source redirects a key it does
        // not hold to the target with ASK.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut asked = None;
        while asked.is_none() && Instant::now() < deadline {
            let reply = redis::cmd("GET")
                .arg("{moving}:absent")
                .query::<Option<String>>(&mut source);
            if let Err(e) = reply {
                asked = Some(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        mover.join().unwrap();
        asked
    });
    let asked = asked.expect("the source answered an error while the slot moved");
    assert_eq!(asked.kind(), ErrorKind::Server(ServerErrorKind::Ask), "{asked}");
    assert_eq!(
        asked.redirect_node(),
        Some((format!("127.0.0.1:{to}").as_str(), slot))
    );

    assert_eq!(cluster.master_of_slot(slot), to);
    let mut target = con(to);
    for key in &keys {
        let value: String = redis::cmd("GET").arg(key).query(&mut target).unwrap();
        assert_eq!(value, format!("value of {key}"));
    }
    let moved = redis::cmd("GET")
        .arg(&keys[0])
        .query::<Option<String>>(&mut con(from))
        .unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::Server(ServerErrorKind::Moved), "{moved}");
    assert_eq!(
        moved.redirect_node(),
        Some((format!("127.0.0.1:{to}").as_str(), slot))
    );
}

/// What Redis 7.0 does to sharded pub/sub when a slot moves, which the
/// cluster publisher has to live with: while the slot is MIGRATING the
/// source still takes SPUBLISH itself (a channel is no key, so no ASK), and
/// once the source learns the new owner it ends its subscribers'
/// subscriptions with a pushed `sunsubscribe`.
#[test]
fn a_shard_channel_subscriber_is_unsubscribed_when_its_slot_moves() {
    let cluster = RedisCluster::start();
    let channel = "room:42:events";
    let slot = cluster.slot_of(channel);
    let from = cluster.master_of_slot(slot);
    let to = *cluster.masters().iter().find(|&&p| p != from).unwrap();
    let mut subscriber = TcpStream::connect(("127.0.0.1", from)).unwrap();
    subscriber
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        subscriber,
        "*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{channel}\r\n",
        channel.len()
    )
    .unwrap();

    std::thread::scope(|scope| {
        let mover = scope.spawn(|| cluster.move_slot(slot, to, Duration::from_millis(500)));
        std::thread::sleep(Duration::from_millis(250));
        let during: i64 = redis::cmd("SPUBLISH")
            .arg(channel)
            .arg("during")
            .query(&mut con(from))
            .unwrap();
        assert_eq!(during, 1, "the migrating source delivered to its subscriber");
        mover.join().unwrap();
    });

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains("sunsubscribe") {
        let mut buf = [0; 1024];
        match subscriber.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    let seen = String::from_utf8_lossy(&seen).replace("\r\n", " ");
    assert!(seen.contains("smessage") && seen.contains("during"), "{seen}");
    assert!(
        seen.contains(&format!("sunsubscribe ${} {channel} :0", channel.len())),
        "{seen}"
    );

    let moved = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg("after")
        .query::<i64>(&mut con(from))
        .unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::Server(ServerErrorKind::Moved), "{moved}");
}
