//! The rooms of `--rooms N`: `--session` and N − 1 more; a room is a
//! session's socket room. On hawker the N − 1 are sessions scheduled for the
//! agency through the API (`POST /v1/agencies/{agency}/sessions`, the
//! agency's token), as an agency would. Each run schedules its own (title
//! `hawker-loadtest <run> room <k>`, planned for the next two hours), so
//! their ids, and so their Redis Cluster slots, differ from run to run. The
//! reference server has no API and opens a room for any session id, so its
//! run derives the N − 1 from its run id instead ([`derived_sessions`]).
//!
//! Either way room k is the k-th of the list, and which socket is in which
//! room depends on k only (`viewer::room_of`, host and chatter `j % N`), so
//! both servers of a `--reference` invocation get the same rooms.

use std::time::Duration;

use anyhow::{bail, Context as _};
use hawker_core::Role;
use serde_json::json;
use uuid::{Builder, Uuid};

use super::args::{FanoutArgs, Server};
use crate::common::http1::{string_field, Conn};
use crate::common::run::Run;
use crate::common::ws::Minter;
use crate::common::{clock, note};

/// The sessions of the run's rooms, `--session` first.
pub async fn prepare(args: &FanoutArgs, server: Server, run: &Run) -> anyhow::Result<Vec<Uuid>> {
    if args.rooms <= 1 {
        return Ok(vec![args.session]);
    }
    match server {
        Server::Hawker => schedule(args, run).await,
        Server::Reference => {
            let rooms = derived_sessions(args.session, &run.id, args.rooms as usize);
            note!(
                "{} rooms: {} and {} derived from run {} (the reference server opens any room)",
                rooms.len(),
                args.session,
                rooms.len() - 1,
                run.id
            );
            Ok(rooms)
        }
    }
}

/// `session` and `n − 1` session ids derived from it, the run id and their
/// index: distinct, version-4 shaped, and new in every run (as scheduled
/// sessions are).
pub fn derived_sessions(session: Uuid, run: &str, n: usize) -> Vec<Uuid> {
    // FNV-1a of the run id, then SplitMix64 over the session's halves and k.
    let seed = run.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let (hi, lo) = session.as_u64_pair();
    let mut rooms = Vec::with_capacity(n.max(1));
    rooms.push(session);
    for k in 1..n as u64 {
        let a = mix(hi ^ mix(seed ^ k));
        let b = mix(lo ^ mix(a ^ seed.rotate_left(32) ^ k));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        rooms.push(Builder::from_random_bytes(bytes).into_uuid());
    }
    rooms
}

/// SplitMix64's finaliser: a fixed, well-spread 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `--session` and N − 1 sessions scheduled on hawker for this run.
async fn schedule(args: &FanoutArgs, run: &Run) -> anyhow::Result<Vec<Uuid>> {
    let mut rooms = vec![args.session];
    let addr = run.addrs.first().context("no node to schedule sessions on")?;
    let token =
        Minter::new(&args.jwt_secret).token(&format!("lt{}a", run.id), Role::Agency, Some(args.agency))?;
    let mut conn = Conn::new(addr);
    let now = chrono::DateTime::from_timestamp_micros(clock::now_us() as i64).unwrap_or_default();
    let (start, end) = (now.to_rfc3339(), (now + chrono::Duration::hours(2)).to_rfc3339());
    for k in 1..args.rooms {
        let body = json!({
            "title": format!("hawker-loadtest {} room {k}", run.id),
            "planned_start": start,
            "planned_end": end,
        })
        .to_string();
        let request = format!(
            "POST /v1/agencies/{}/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            args.agency,
            body.len()
        );
        let answer = conn
            .exchange(request.as_bytes(), Duration::from_secs(10))
            .await
            .with_context(|| format!("scheduling room {k} on {addr}"))?;
        if answer.status != 201 {
            bail!(
                "scheduling room {k}: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(answer.body)
            );
        }
        let id = string_field(answer.body, "session_id")
            .and_then(|s| s.parse::<Uuid>().ok())
            .context("scheduling a room: no session_id in the answer")?;
        rooms.push(id);
    }
    note!(
        "{} rooms: {} and {} scheduled for this run",
        rooms.len(),
        args.session,
        rooms.len() - 1
    );
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn derived_rooms_are_distinct_per_run_and_start_with_the_session() {
        let session = Uuid::parse_str("00000000-0000-4000-8000-00000000d001").unwrap();
        let rooms = derived_sessions(session, "a1b2c3", 5000);
        assert_eq!(rooms.len(), 5000);
        assert_eq!(rooms[0], session);
        assert_eq!(rooms.iter().collect::<HashSet<_>>().len(), 5000);
        for room in &rooms[1..] {
            assert_eq!(room.get_version_num(), 4);
            assert_eq!(room.get_variant(), uuid::Variant::RFC4122);
        }
        // The same run derives the same rooms; another run other ones.
        assert_eq!(derived_sessions(session, "a1b2c3", 5000), rooms);
        let other = derived_sessions(session, "a1b2c4", 5000);
        assert!(other[1..].iter().all(|r| !rooms.contains(r)));
        assert_eq!(derived_sessions(session, "x", 1), [session]);
        assert_eq!(derived_sessions(session, "x", 0), [session]);
    }
}
