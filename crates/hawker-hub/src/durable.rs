//! Durable room events: events that must not be lost are written to the
//! hub's `room_outbox` table in the same Postgres transaction as the change
//! they announce ([`enqueue`]), then published by a relay that every node
//! runs ([`Hub::relay_durable`]; its task first asks whether anything is
//! pending, so an idle tick is one query). Any node may relay; the room's publish
//! script drops a repeated outbox id, so each event reaches the room exactly
//! once across nodes, and survives a node's death between commit and publish.
//!
//! The hub owns `room_outbox`: other crates call [`enqueue`] with their
//! transaction and never name the table.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::{Publication, StateChange};
use crate::Hub;

/// Events relayed per round at most.
const RELAY_BATCH: i64 = 500;

/// Queues `publication` for `room` inside the caller's transaction: it is
/// published after (and only if) that transaction commits.
pub async fn enqueue(conn: &mut PgConnection, room: Uuid, publication: &Publication) -> sqlx::Result<()> {
    sqlx::query("insert into room_outbox (session_id, event_type, data, state) values ($1, $2, $3, $4)")
        .bind(room)
        .bind(&publication.event_type)
        .bind(&publication.data)
        .bind(encode_state(publication))
        .execute(conn)
        .await?;
    Ok(())
}

/// The stored form of a publication's state changes and version guard:
/// `["set", key, value]`, `["remove", key]`, `["version", key, n]`.
fn encode_state(publication: &Publication) -> Value {
    let mut state: Vec<Value> = publication
        .state
        .iter()
        .map(|change| match change {
            StateChange::Set { key, value } => serde_json::json!(["set", key, value]),
            StateChange::Remove { key } => serde_json::json!(["remove", key]),
        })
        .collect();
    if let Some((key, version)) = &publication.version {
        state.push(serde_json::json!(["version", key, version]));
    }
    Value::Array(state)
}

fn decode(outbox_id: i64, event_type: String, data: Value, state: &Value) -> Publication {
    let mut publication = Publication::new(event_type, data).dedupe(format!("outbox:{outbox_id}"));
    for change in state.as_array().into_iter().flatten() {
        match (
            change.get(0).and_then(Value::as_str),
            change.get(1).and_then(Value::as_str),
        ) {
            (Some("set"), Some(key)) => publication.state.push(StateChange::Set {
                key: key.to_string(),
                value: change.get(2).cloned().unwrap_or(Value::Null),
            }),
            (Some("remove"), Some(key)) => publication
                .state
                .push(StateChange::Remove { key: key.to_string() }),
            (Some("version"), Some(key)) => {
                let version = change.get(2).and_then(Value::as_i64).unwrap_or(0);
                publication = publication.versioned(key, version);
            }
            _ => {}
        }
    }
    publication
}

impl Hub {
    /// Publishes pending durable events, oldest first; returns how many.
    /// `skip locked` lets several nodes relay at once without waiting on each
    /// other. Callers that just committed an event may call this to publish
    /// it at once; the relay task does it anyway within `hub.durable_relay_ms`.
    pub async fn relay_durable(&self) -> anyhow::Result<usize> {
        let Some(db) = self.inner.db.as_ref() else {
            return Ok(0);
        };
        // A node that cannot reach Redis must not lock pending rows while its
        // publish times out: the other nodes skip locked rows, so they would
        // wait on it. Check first, then hold the rows only while publishing.
        if !self.inner.store.reachable().await {
            return Ok(0);
        }
        let mut tx = db.begin().await?;
        let rows: Vec<(i64, Uuid, String, Value, Value)> = sqlx::query_as(
            "select outbox_id, session_id, event_type, data, state from room_outbox
              where published_at is null order by outbox_id limit $1 for update skip locked",
        )
        .bind(RELAY_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut published = Vec::with_capacity(rows.len());
        for (id, room, event_type, data, state) in rows {
            // Stop at the first failure: later events of the room must not overtake it.
            if self
                .publish(room, decode(id, event_type, data, &state))
                .await
                .is_err()
            {
                break;
            }
            published.push(id);
        }
        if !published.is_empty() {
            sqlx::query("update room_outbox set published_at = now() where outbox_id = any($1)")
                .bind(&published)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(published.len())
    }
}

/// Whether any durable event waits to be published: one cheap query on
/// `room_outbox_pending_idx`, no transaction, no Redis.
async fn any_pending(db: &sqlx::PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists(select 1 from room_outbox where published_at is null)")
        .fetch_one(db)
        .await
}

/// The relay task: every `every`, asks whether anything is pending (an idle
/// tick is that one query) and, if so, publishes it. If the question fails
/// it relays anyway, so a failed check never leaves an event behind.
pub(crate) async fn run_relay(hub: Hub, every: Duration, shutdown: CancellationToken) {
    let mut interval = hawker_core::ticks::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(db) = hub.inner.db.as_ref() else {
            continue;
        };
        match any_pending(db).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => tracing::debug!(error = %e, "durable relay check failed; relaying anyway"),
        }
        if let Err(e) = hub.relay_durable().await {
            tracing::debug!(error = %e, "durable relay deferred");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_version_survive_the_stored_form() {
        let publication = Publication::new("deal.stock", serde_json::json!({"left": 3}))
            .set_state("deal:1", serde_json::json!({"a": 1}))
            .remove_state("deal:2")
            .versioned("v:stock:1", 7);
        let stored = encode_state(&publication);
        let back = decode(42, "deal.stock".into(), publication.data.clone(), &stored);
        assert_eq!(back.state, publication.state);
        assert_eq!(back.version, Some(("v:stock:1".to_string(), 7)));
        assert_eq!(back.dedupe.as_deref(), Some("outbox:42"));
    }
}
