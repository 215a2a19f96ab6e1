//! Time, on every node: the coalesced entry count, closing windows and
//! drawing winners, at the ticks of the crate's clock ([`crate::clock`])
//! whose one query found work for them. Each step is claimed by one node at a time (an
//! exclusive advisory lock and a conditional update to close; `for update
//! skip locked` to draw), and changes its row in the same transaction that
//! queues its room events (`hawker_hub::durable`), so each happens exactly
//! once across nodes and survives a node's restart.
//!
//! Redis (all under the `{<id>}` hash tag, expiring after a day):
//! - `<prefix>:giveaway:{<id>}:entries` — entries counted so far (INCR per entry);
//! - `:entries_announced` — the count the room last got;
//! - `:entries_gate` — held for an interval by the node announcing, so the
//!   room gets at most one `giveaway.entries` per interval across nodes.

use std::collections::HashSet;
use std::time::Duration;

use hawker_hub::{Notice, Publication};
use redis::Script;
use serde_json::json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{entry, fair, prizes, state_key, PrizeKind};
use crate::Live;

/// How long after the list is frozen the draw happens: the room hears the
/// list's hash (`giveaway.closed`) before the seed (`giveaway.drawn`).
pub const DRAW_AFTER_CLOSE_MS: i64 = 1000;
/// At most one `giveaway.entries` per giveaway per this long.
const ENTRIES_EVERY_MS: u64 = 1000;
const KEY_TTL_SECS: u64 = 86_400;

const ANNOUNCE_LUA: &str = r#"
local n = redis.call('GET', KEYS[1]) or '0'
local last = redis.call('GET', KEYS[2])
if n == last then return -1 end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return -1 end
redis.call('SET', KEYS[2], n, 'EX', ARGV[2])
return tonumber(n)
"#;

fn key(live: &Live, giveaway_id: Uuid, what: &str) -> String {
    format!("{}:giveaway:{{{giveaway_id}}}:{what}", live.key_prefix())
}

/// The snapshot key of a giveaway's live count.
pub(crate) fn entries_state_key(giveaway_id: Uuid) -> String {
    format!("giveaway:{giveaway_id}:entries")
}

/// Counts one entry toward the room's figure (best effort: the frozen
/// list's count is the one that matters).
pub(crate) async fn count_entry(live: &Live, giveaway_id: Uuid) {
    let mut conn = live.redis();
    let k = key(live, giveaway_id, "entries");
    let mut pipe = redis::pipe();
    pipe.incr(&k, 1).ignore().expire(&k, KEY_TTL_SECS as i64).ignore();
    let done = tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(&mut conn)).await;
    if !matches!(done, Ok(Ok(()))) {
        tracing::debug!(%giveaway_id, "entry not counted in Redis");
    }
}

/// One tick of the crate's clock ([`crate::clock`]): the steps its check
/// found due. `open`: some giveaway is open (its entry count may be
/// announced); `to_close`: an open giveaway's window has closed;
/// `to_draw`: a giveaway closed at least [`DRAW_AFTER_CLOSE_MS`] ago.
pub(crate) async fn tick(live: &Live, open: bool, to_close: bool, to_draw: bool) {
    if open {
        if let Err(e) = announce_counts(live).await {
            tracing::debug!(error = %e, "giveaway counts deferred");
        }
    }
    if to_close {
        if let Err(e) = close_due(live).await {
            tracing::debug!(error = %e, "closing giveaways deferred");
        }
    }
    if to_draw {
        if let Err(e) = draw_due(live).await {
            tracing::warn!(error = %e, "giveaway draw deferred");
        }
    }
}

async fn announce_counts(live: &Live) -> anyhow::Result<()> {
    let open: Vec<(Uuid, Uuid)> =
        sqlx::query_as("select giveaway_id, session_id from giveaway where status = 'open' limit 200")
            .fetch_all(live.db())
            .await?;
    let script = Script::new(ANNOUNCE_LUA);
    for (giveaway_id, session_id) in open {
        let mut conn = live.redis();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(key(live, giveaway_id, "entries"))
            .key(key(live, giveaway_id, "entries_announced"))
            .key(key(live, giveaway_id, "entries_gate"))
            .arg(ENTRIES_EVERY_MS)
            .arg(KEY_TTL_SECS);
        let count: i64 =
            tokio::time::timeout(Duration::from_secs(2), invocation.invoke_async(&mut conn)).await??;
        if count < 0 {
            continue;
        }
        let data = json!({ "giveaway_id": giveaway_id, "count": count });
        live.hub()
            .publish(
                session_id,
                Publication::new("giveaway.entries", data.clone())
                    .set_state(entries_state_key(giveaway_id), data)
                    .versioned(format!("v:{}", entries_state_key(giveaway_id)), count),
            )
            .await?;
    }
    Ok(())
}

/// Freezes the entry list of each giveaway whose window has closed.
async fn close_due(live: &Live) -> anyhow::Result<()> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "select giveaway_id from giveaway where status = 'open' and closes_at <= now() order by closes_at limit 20",
    )
    .fetch_all(live.db())
    .await?;
    let mut any = false;
    for giveaway_id in due {
        any |= close(live, giveaway_id).await?;
    }
    if any {
        super::relay(live).await;
    }
    Ok(())
}

async fn close(live: &Live, giveaway_id: Uuid) -> anyhow::Result<bool> {
    let mut tx = live.db().begin().await?;
    // Another node closing it holds the row: skip. (`no key update` does not
    // conflict with the key-share locks entries' foreign keys take.)
    let row: Option<Uuid> = sqlx::query_scalar(
        "select session_id from giveaway where giveaway_id = $1 and status = 'open'
            for no key update skip locked",
    )
    .bind(giveaway_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(session_id) = row else {
        return Ok(false);
    };
    // Entries in flight finish first; later ones wait, then see it closed.
    sqlx::query("set local lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let (class, k) = entry::lock_keys(giveaway_id);
    sqlx::query("select pg_advisory_xact_lock($1, $2)")
        .bind(class)
        .bind(k)
        .execute(&mut *tx)
        .await?;
    let mut ids: Vec<String> =
        sqlx::query_scalar("select entry_id from giveaway_entry where giveaway_id = $1")
            .bind(giveaway_id)
            .fetch_all(&mut *tx)
            .await?;
    ids.sort_unstable();
    let hash = hex::encode(fair::list_hash(&ids));
    let count = i32::try_from(ids.len())?;
    sqlx::query(
        "update giveaway set status = 'closed', entry_count = $2, entries_hash = $3, closed_at = now()
          where giveaway_id = $1",
    )
    .bind(giveaway_id)
    .bind(count)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    let giveaway = super::fetch(&mut tx, giveaway_id).await?;
    let view = giveaway.room_view();
    let data = json!({ "giveaway_id": giveaway_id, "count": count });
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new("giveaway.entries", data.clone())
            .set_state(entries_state_key(giveaway_id), data)
            .versioned(format!("v:{}", entries_state_key(giveaway_id)), i64::MAX),
    )
    .await?;
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new(
            "giveaway.closed",
            json!({ "giveaway_id": giveaway_id, "entry_count": count, "entries_hash": hash,
                    "seed_hash": giveaway.seed_hash }),
        )
        .set_state(state_key(giveaway_id), view),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct Due {
    giveaway_id: Uuid,
    session_id: Uuid,
    prize_kind: PrizeKind,
    lineup_item_id: Option<Uuid>,
    sku_id: Option<Uuid>,
    campaign_id: Option<Uuid>,
    coupon_drop_id: Option<Uuid>,
    winners: i32,
    must_be_present: bool,
    seed: Vec<u8>,
    entries_hash: Option<String>,
}

/// Draws each giveaway whose list has been frozen for a moment.
async fn draw_due(live: &Live) -> anyhow::Result<()> {
    let mut drew = false;
    loop {
        let mut tx = live.db().begin().await?;
        let due: Option<Due> = sqlx::query_as(
            "select giveaway_id, session_id, prize_kind, lineup_item_id, sku_id, campaign_id, coupon_drop_id,
                    winners, must_be_present, seed, entries_hash
               from giveaway
              where status = 'closed' and closed_at <= now() - $1 * interval '1 millisecond'
              order by closed_at limit 1 for update skip locked",
        )
        .bind(DRAW_AFTER_CLOSE_MS as f64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = due else {
            break;
        };
        draw(live, &mut tx, &due).await?;
        tx.commit().await?;
        drew = true;
    }
    if drew {
        super::relay(live).await;
    }
    Ok(())
}

/// The entries of the frozen list: (entry id, user), sorted by entry id.
async fn frozen(conn: &mut PgConnection, giveaway_id: Uuid) -> anyhow::Result<Vec<(String, String)>> {
    let mut rows: Vec<(String, String)> =
        sqlx::query_as("select entry_id, user_id from giveaway_entry where giveaway_id = $1")
            .bind(giveaway_id)
            .fetch_all(conn)
            .await?;
    rows.sort_unstable();
    Ok(rows)
}

async fn draw(live: &Live, tx: &mut Transaction<'_, Postgres>, due: &Due) -> anyhow::Result<()> {
    let giveaway_id = due.giveaway_id;
    let entries = frozen(tx, giveaway_id).await?;
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let list_hash = fair::list_hash(&ids);
    // The list cannot change once closed; a mismatch is a bug, never drawn over.
    anyhow::ensure!(
        due.entries_hash.as_deref() == Some(hex::encode(list_hash).as_str()),
        "giveaway {giveaway_id}: the frozen list no longer matches its hash"
    );
    let seed: [u8; 32] = due
        .seed
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("giveaway {giveaway_id}: bad seed"))?;
    let wanted = usize::try_from(due.winners)?;
    // Draw; if winners must be present, ask the hub about the ones not yet
    // checked, mark the absent and draw again: the candidate sequence is
    // the same, absentees are skipped, so this ends with the same result as
    // one pass that knew every answer.
    let mut absent: HashSet<usize> = HashSet::new();
    let mut checked: HashSet<usize> = HashSet::new();
    let result = loop {
        let result = fair::draw(&seed, &list_hash, entries.len(), wanted, &absent);
        if !due.must_be_present {
            break result;
        }
        let unchecked: Vec<usize> = result
            .winners
            .iter()
            .copied()
            .filter(|i| !checked.contains(i))
            .collect();
        if unchecked.is_empty() {
            break result;
        }
        let users: Vec<String> = unchecked.iter().map(|&i| entries[i].1.clone()).collect();
        let here = live.hub().present(due.session_id, &users).await?;
        for (&i, present) in unchecked.iter().zip(here) {
            checked.insert(i);
            if !present {
                absent.insert(i);
            }
        }
    };
    let winner_ids: Vec<&str> = result.winners.iter().map(|&i| ids[i]).collect();
    let absent_ids: Vec<&str> = result
        .trace
        .iter()
        .filter(|c| c.outcome == fair::Outcome::Absent)
        .map(|c| ids[c.index])
        .collect();
    let trace: Vec<serde_json::Value> = result
        .trace
        .iter()
        .map(|c| {
            json!({ "i": c.i, "entry_id": ids[c.index],
                    "outcome": if c.outcome == fair::Outcome::Winner { "winner" } else { "absent" } })
        })
        .collect();
    sqlx::query(
        "insert into giveaway_draw (giveaway_id, seed, entries_hash, entry_count, winners_wanted, must_be_present,
                absent, winners, trace, algorithm, node)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(giveaway_id)
    .bind(seed.as_slice())
    .bind(hex::encode(list_hash))
    .bind(i32::try_from(entries.len())?)
    .bind(due.winners)
    .bind(due.must_be_present)
    .bind(json!(absent_ids))
    .bind(json!(winner_ids))
    .bind(json!(trace))
    .bind(fair::ALGORITHM)
    .bind(live.hub().node_id())
    .execute(&mut **tx)
    .await?;
    // Prizes, in the same transaction.
    let currency: Option<String> = match due.sku_id {
        Some(sku) => {
            sqlx::query_scalar("select currency::text from sku where sku_id = $1")
                .bind(sku)
                .fetch_optional(&mut **tx)
                .await?
        }
        None => None,
    };
    let mut handed = 0;
    let mut notices = Vec::new();
    for (rank, &index) in result.winners.iter().enumerate() {
        let (entry_id, user) = &entries[index];
        let (order_id, claim_id) = match (due.prize_kind, due.lineup_item_id, due.sku_id, &currency) {
            (PrizeKind::Item, Some(item), Some(sku), Some(currency)) => {
                let order = prizes::winner_order(
                    live,
                    tx,
                    giveaway_id,
                    due.session_id,
                    item,
                    sku,
                    currency,
                    user,
                    entry_id,
                )
                .await?;
                handed += 1;
                (Some(order), None)
            }
            _ => match due.coupon_drop_id {
                Some(drop) => (None, prizes::winner_coupon(tx, drop, user).await?),
                None => (None, None),
            },
        };
        sqlx::query(
            "insert into giveaway_winner (giveaway_id, entry_id, user_id, rank, order_id, coupon_claim_id)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(giveaway_id)
        .bind(entry_id)
        .bind(user)
        .bind(i32::try_from(rank + 1)?)
        .bind(order_id)
        .bind(claim_id)
        .execute(&mut **tx)
        .await?;
        notices.push(
            Notice::new(
                user.clone(),
                "giveaway.won",
                json!({ "giveaway_id": giveaway_id, "entry_id": entry_id, "order_id": order_id,
                        "coupon_claim_id": claim_id }),
            )
            .in_session(due.session_id),
        );
    }
    if let Some(sku) = due.sku_id {
        prizes::give_back(
            tx,
            giveaway_id,
            due.campaign_id,
            sku,
            due.winners - handed,
            "giveaway",
        )
        .await?;
    }
    sqlx::query("update giveaway set status = 'drawn', drawn_at = now() where giveaway_id = $1")
        .bind(giveaway_id)
        .execute(&mut **tx)
        .await?;
    notices.sort_by(|a, b| a.user.cmp(&b.user));
    for notice in &notices {
        live.hub().enqueue_notice(tx, notice).await?;
    }
    hawker_hub::durable::enqueue(
        tx,
        due.session_id,
        &Publication::new(
            "giveaway.drawn",
            json!({
                "giveaway_id": giveaway_id,
                "seed": hex::encode(seed),
                "seed_hash": fair::seed_hash(&seed),
                "entries_hash": hex::encode(list_hash),
                "entry_count": entries.len(),
                "winners": winner_ids,
                "absent": absent_ids,
                "algorithm": fair::ALGORITHM,
            }),
        )
        .remove_state(state_key(giveaway_id))
        .remove_state(entries_state_key(giveaway_id)),
    )
    .await?;
    tracing::info!(%giveaway_id, entries = entries.len(), winners = winner_ids.len(), absent = absent_ids.len(), "giveaway drawn");
    Ok(())
}
