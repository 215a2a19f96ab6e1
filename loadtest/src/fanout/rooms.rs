//! The rooms of `--rooms N`: `--session` and N − 1 sessions scheduled for
//! the agency through the API (`POST /v1/agencies/{agency}/sessions`, the
//! agency's token), as an agency would; a room is a session's socket room.
//! Each run schedules its own (title `hawker-loadtest <run> room <k>`,
//! planned for the next two hours), so their ids, and so their Redis Cluster
//! slots, differ from run to run.

use std::time::Duration;

use anyhow::{bail, Context as _};
use hawker_core::Role;
use serde_json::json;
use uuid::Uuid;

use super::args::FanoutArgs;
use crate::common::http1::{string_field, Conn};
use crate::common::run::Run;
use crate::common::ws::Minter;
use crate::common::{clock, note};

/// The sessions of the run's rooms, `--session` first.
pub async fn prepare(args: &FanoutArgs, run: &Run) -> anyhow::Result<Vec<Uuid>> {
    let mut rooms = vec![args.session];
    if args.rooms <= 1 {
        return Ok(rooms);
    }
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
