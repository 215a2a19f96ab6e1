//! Room events that must not be lost: written to `room_outbox` in the same
//! transaction as the change they announce, then published by a relay. Any
//! node may relay; the room's publish script drops a repeated outbox id, so
//! each event reaches the room once.

use hawker_hub::{Hub, Publication, StateChange};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A state change carried with an outbox event (`["set", key, value]` or `["remove", key]`).
pub fn set(key: impl Into<String>, value: Value) -> Value {
    serde_json::json!(["set", key.into(), value])
}

pub fn remove(key: impl Into<String>) -> Value {
    serde_json::json!(["remove", key.into()])
}

/// Publish only if no newer version of this figure (a `stock::Figure` key) went out.
pub fn version(figure_key: &str, version: i64) -> Value {
    serde_json::json!(["version", format!("v:{figure_key}"), version])
}

/// Queues a room event inside `tx`.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    session_id: Uuid,
    event_type: &str,
    data: Value,
    state: Vec<Value>,
) -> sqlx::Result<()> {
    sqlx::query("insert into room_outbox (session_id, event_type, data, state) values ($1, $2, $3, $4)")
        .bind(session_id)
        .bind(event_type)
        .bind(data)
        .bind(Value::Array(state))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Publishes pending outbox events, oldest first; returns how many.
/// `skip locked` lets several nodes relay at once without waiting on each other.
pub async fn relay(db: &PgPool, hub: &Hub, limit: i64) -> anyhow::Result<usize> {
    let mut tx = db.begin().await?;
    let rows: Vec<(i64, Uuid, String, Value, Value)> = sqlx::query_as(
        "select outbox_id, session_id, event_type, data, state from room_outbox
          where published_at is null order by outbox_id limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut published = Vec::with_capacity(rows.len());
    for (id, session_id, event_type, data, state) in rows {
        let mut publication = Publication::new(event_type, data).dedupe(format!("outbox:{id}"));
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
        // Stop at the first failure: later events of the room must not overtake it.
        if hub.publish(session_id, publication).await.is_err() {
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
