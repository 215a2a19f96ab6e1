//! The node's join path after the gate: one batcher task per node commits
//! the joins it gathered, one transaction per group buy under its row lock.
//! Postgres decides: the batch reads the row's status, the database clock,
//! the stock left and each buyer's units after the lock, and [`decide`]s
//! each join in arrival order. The gate is then told (confirm the joined,
//! release the refused) and clamped to what Postgres has left.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hawker_core::error::{Error, Result};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::gate::{self, Admission, Settled};
use super::tiers::{Tier, Tiers};
use super::{invite_code, GroupBuy, JoinGroupBuy, Joined, GROUP_BUY_COLUMNS};
use crate::Live;

/// Joins waiting for the batcher at most (a full queue answers 503).
const QUEUE: usize = 20_000;
/// Most joins in one batch.
const BATCH_MAX: usize = 512;
/// How long a batch waits for more joins.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// A join waiting for its batch.
struct Request {
    group_buy_id: Uuid,
    ask: Ask,
    reply: oneshot::Sender<Result<Joined>>,
}

/// What one join asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    pub buyer: String,
    pub key: String,
    pub quantity: i32,
    pub hash: String,
    pub invite: Option<String>,
}

/// The node's group-buy service: the batcher's queue and the announcer.
pub(crate) struct GroupBuys {
    queue: mpsc::Sender<Request>,
    pub(crate) events: super::events::Announcer,
}

/// The batcher task's end of the queue.
pub(crate) struct BatcherInbox(mpsc::Receiver<Request>);

impl GroupBuys {
    pub(crate) fn new(events: super::events::Announcer) -> (GroupBuys, BatcherInbox) {
        let (queue, inbox) = mpsc::channel(QUEUE);
        (GroupBuys { queue, events }, BatcherInbox(inbox))
    }
}

/// What a join asks for, hashed: a retry with the same key must ask the same.
fn request_hash(id: Uuid, quantity: i32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(id.as_bytes());
    hasher.update(quantity.to_be_bytes());
    hex::encode(&hasher.finalize()[..12])
}

fn ended() -> Error {
    Error::conflict("group_buy_ended", "the group buy is over")
}

fn sold_out() -> Error {
    Error::conflict("sold_out", "the group buy has no units left for this quantity")
}

fn cap_exceeded(cap: i32, held: i32) -> Error {
    Error::conflict(
        "cap_exceeded",
        format!("at most {cap} units per buyer; you hold {held}"),
    )
}

fn reused() -> Error {
    Error::conflict(
        "idempotency_key_reused",
        "this idempotency key was used for another join",
    )
}

/// The gate, then the batch; answers after the commit.
pub(crate) async fn join(
    live: &Live,
    buyer: &str,
    id: Uuid,
    idempotency_key: &str,
    request: JoinGroupBuy,
) -> Result<Joined> {
    let hash = request_hash(id, request.quantity);
    match gate::admit(live, id, buyer, idempotency_key, request.quantity, &hash).await? {
        Admission::Reserved => {}
        Admission::Ended => return Err(ended()),
        Admission::SoldOut => return Err(sold_out()),
        // The cap comes with the gate's answer: a refusal costs no Postgres query.
        Admission::CapExceeded { held, cap } => return Err(cap_exceeded(cap, held)),
        Admission::Repeat { joined: Some((_, h)) } if h != hash => return Err(reused()),
        Admission::Repeat { joined: Some(_) } => return replay(live, buyer, id, idempotency_key).await,
        Admission::Repeat { joined: None } => {
            return Err(Error::conflict(
                "duplicate_request",
                "a join with this idempotency key is being settled; retry shortly",
            ))
        }
    }
    let (tx, rx) = oneshot::channel();
    let ask = Ask {
        buyer: buyer.to_string(),
        key: idempotency_key.to_string(),
        quantity: request.quantity,
        hash,
        invite: request.invite,
    };
    let queued = live.inner.group_buys.queue.try_send(Request {
        group_buy_id: id,
        ask: ask.clone(),
        reply: tx,
    });
    if queued.is_err() {
        let _ = gate::release(live, id, buyer, idempotency_key, ask.quantity).await;
        return Err(Error::Unavailable {
            what: "the join queue",
        });
    }
    rx.await.unwrap_or(Err(Error::Unavailable {
        what: "the join batch",
    }))
}

/// The answer to a join already in Postgres.
async fn replay(live: &Live, buyer: &str, id: Uuid, key: &str) -> Result<Joined> {
    type Row = (i32, i32, i32, DateTime<Utc>, String, sqlx::types::Json<Vec<Tier>>);
    let row: Option<Row> = sqlx::query_as(
        "select j.quantity, p.units, g.participants, g.ends_at, p.invite_code, g.tiers
           from group_buy_join j
           join group_buy g on g.group_buy_id = j.group_buy_id
           join group_buy_participant p on p.group_buy_id = j.group_buy_id and p.buyer_id = j.buyer_id
          where j.group_buy_id = $1 and j.buyer_id = $2 and j.idempotency_key = $3",
    )
    .bind(id)
    .bind(buyer)
    .bind(key)
    .fetch_optional(live.db())
    .await?;
    let (quantity, units, participants, ends_at, invite_code, tiers) = row.ok_or(Error::Unavailable {
        what: "the join (retry with the same key)",
    })?;
    let price_minor = Tiers::parse(tiers.0, i64::MAX).map_or(0, |t| t.tier_for(participants).price_minor);
    Ok(Joined {
        group_buy_id: id,
        quantity,
        units,
        participants,
        price_minor,
        ends_at,
        invite_code,
        replayed: true,
    })
}

/// Runs until `shutdown`: gathers joins, settles them per group buy.
pub(crate) async fn run(live: Live, inbox: BatcherInbox, shutdown: CancellationToken) {
    let mut inbox = inbox.0;
    while let Some(batch) = crate::batch::next(&mut inbox, BATCH_MAX, BATCH_WINDOW, &shutdown).await {
        for (id, group) in crate::batch::per_key(batch, |r| r.group_buy_id) {
            settle(&live, id, group).await;
        }
    }
}

/// One group buy's batch: commit, answer, tell the gate, announce.
async fn settle(live: &Live, id: Uuid, group: Vec<Request>) {
    let started = Instant::now();
    let (asks, replies): (Vec<Ask>, Vec<_>) = group.into_iter().map(|r| (r.ask, r.reply)).unzip();
    let timeout = Duration::from_millis(live.config().bid_commit_timeout_ms);
    let committed = tokio::time::timeout(timeout, commit(live, id, &asks)).await;
    metrics::histogram!("hawker_group_buy_batch_seconds").record(started.elapsed().as_secs_f64());
    let (outcomes, group_buy) = match committed {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            // Nothing was written: every reservation goes back.
            for (ask, reply) in asks.iter().zip(replies) {
                let _ = gate::release(live, id, &ask.buyer, &ask.key, ask.quantity).await;
                let _ = reply.send(Err(match e.code() {
                    "not_found" => Error::NotFound("group buy"),
                    _ if e.is_unavailable() => Error::Unavailable { what: "the database" },
                    _ => Error::Internal(anyhow::anyhow!("join batch failed: {e}")),
                }));
            }
            return;
        }
        Err(_) => {
            // The outcome is unknown: the reservations stay for the
            // reconciler, which settles or releases them by what Postgres holds.
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable { what: "the database" }));
            }
            return;
        }
    };
    for ((ask, outcome), reply) in asks.iter().zip(outcomes).zip(replies) {
        let settled = match &outcome {
            Outcome::Joined(_) => Some(Settled::Joined),
            Outcome::Replay(_) => Some(Settled::Replay),
            Outcome::Refused(_) => None,
        };
        let told = match settled {
            Some(settled) => {
                gate::confirm(live, id, &ask.buyer, &ask.key, ask.quantity, &ask.hash, settled).await
            }
            None => gate::release(live, id, &ask.buyer, &ask.key, ask.quantity).await,
        };
        if let Err(e) = told {
            tracing::debug!(error = %e, "group buy gate not told; the reconciler will");
        }
        let _ = reply.send(match outcome {
            Outcome::Joined(j) | Outcome::Replay(j) => Ok(j),
            Outcome::Refused(r) => Err(r.error()),
        });
    }
    if let Err(e) = gate::clamp(live, id, group_buy.stock - group_buy.units).await {
        tracing::debug!(error = %e, "group buy gate not clamped");
    }
    let view = group_buy.room_view();
    live.inner
        .group_buys
        .events
        .progress(group_buy.session_id, id, view, group_buy.version);
}

/// What happened to one join of a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    Joined(Joined),
    Replay(Joined),
    Refused(Refusal),
}

/// Why a batch refused a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Ended,
    SoldOut,
    /// (cap, units held)
    Cap(i32, i32),
    Reused,
}

impl Refusal {
    fn error(self) -> Error {
        match self {
            Refusal::Ended => ended(),
            Refusal::SoldOut => sold_out(),
            Refusal::Cap(cap, held) => cap_exceeded(cap, held),
            Refusal::Reused => reused(),
        }
    }
}

/// The row and what Postgres knows of the batch's buyers, under the lock.
pub(crate) struct Known {
    pub open: bool,
    pub stock: i32,
    pub units: i32,
    pub participants: i32,
    pub cap: i32,
    pub ends_at: DateTime<Utc>,
    pub tiers: Tiers,
    /// (buyer, key) → (quantity, hash) of joins already committed.
    pub joins: HashMap<(String, String), (i32, String)>,
    /// buyer → (units, invite code) of participants.
    pub participants_of: HashMap<String, (i32, String)>,
    /// invite code → participant.
    pub inviters: HashMap<String, String>,
}

/// A new participant or more units for one: what the batch writes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writes {
    /// (buyer, key, quantity, hash)
    pub joins: Vec<(String, String, i32, String)>,
    /// buyer → (units added, invite code, invited by), first join first.
    pub participants: Vec<(String, i32, String, Option<String>)>,
    pub units: i32,
    pub new_participants: i32,
    /// New participants who came through an invite.
    pub invited: i32,
}

/// Who gets what in a batch, in arrival order: pure, so each rule has a
/// unit test. A replayed key answers its join; the same key twice in one
/// batch answers the first; then ended, the cap, the stock.
pub(crate) fn decide(id: Uuid, known: &Known, asks: &[Ask]) -> (Vec<Outcome>, Writes) {
    let mut writes = Writes::default();
    let mut units_of: HashMap<&str, i32> = known
        .participants_of
        .iter()
        .map(|(b, (u, _))| (b.as_str(), *u))
        .collect();
    let mut codes: HashMap<&str, String> = known
        .participants_of
        .iter()
        .map(|(b, (_, c))| (b.as_str(), c.clone()))
        .collect();
    let mut left = known.stock - known.units;
    let mut participants = known.participants;
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(asks.len());
    for (i, ask) in asks.iter().enumerate() {
        let joined = |units: i32, participants: i32, code: String, quantity: i32, replayed: bool| Joined {
            group_buy_id: id,
            quantity,
            units,
            participants,
            price_minor: known.tiers.tier_for(participants).price_minor,
            ends_at: known.ends_at,
            invite_code: code,
            replayed,
        };
        if let Some((qty, hash)) = known.joins.get(&(ask.buyer.clone(), ask.key.clone())) {
            outcomes.push(if *hash == ask.hash {
                let units = units_of.get(ask.buyer.as_str()).copied().unwrap_or(*qty);
                let code = codes.get(ask.buyer.as_str()).cloned().unwrap_or_default();
                Outcome::Replay(joined(units, participants, code, *qty, true))
            } else {
                Outcome::Refused(Refusal::Reused)
            });
            continue;
        }
        if let Some(&first) = seen.get(&(ask.buyer.as_str(), ask.key.as_str())) {
            let same = asks[first].hash == ask.hash;
            outcomes.push(match (&outcomes[first], same) {
                (Outcome::Joined(j) | Outcome::Replay(j), true) => {
                    let mut j = j.clone();
                    j.replayed = true;
                    Outcome::Replay(j)
                }
                (Outcome::Refused(r), true) => Outcome::Refused(*r),
                (_, false) => Outcome::Refused(Refusal::Reused),
            });
            continue;
        }
        seen.insert((ask.buyer.as_str(), ask.key.as_str()), i);
        if !known.open {
            outcomes.push(Outcome::Refused(Refusal::Ended));
            continue;
        }
        let held = units_of.get(ask.buyer.as_str()).copied().unwrap_or(0);
        if held + ask.quantity > known.cap {
            outcomes.push(Outcome::Refused(Refusal::Cap(known.cap, held)));
            continue;
        }
        if left < ask.quantity {
            outcomes.push(Outcome::Refused(Refusal::SoldOut));
            continue;
        }
        left -= ask.quantity;
        writes.units += ask.quantity;
        let first_join = held == 0 && !codes.contains_key(ask.buyer.as_str());
        if first_join {
            participants += 1;
            writes.new_participants += 1;
            let code = invite_code(id, &ask.buyer);
            let inviter = ask
                .invite
                .as_ref()
                .and_then(|c| {
                    known.inviters.get(c).cloned().or_else(|| {
                        // A participant who joined earlier in this batch.
                        codes
                            .iter()
                            .find(|(_, own)| *own == c)
                            .map(|(b, _)| b.to_string())
                    })
                })
                .filter(|inviter| *inviter != ask.buyer);
            codes.insert(ask.buyer.as_str(), code.clone());
            writes.invited += i32::from(inviter.is_some());
            writes
                .participants
                .push((ask.buyer.clone(), ask.quantity, code, inviter));
        } else if let Some(p) = writes.participants.iter_mut().find(|p| p.0 == ask.buyer) {
            p.1 += ask.quantity;
        } else {
            writes.participants.push((
                ask.buyer.clone(),
                ask.quantity,
                codes.get(ask.buyer.as_str()).cloned().unwrap_or_default(),
                None,
            ));
        }
        units_of.insert(ask.buyer.as_str(), held + ask.quantity);
        writes
            .joins
            .push((ask.buyer.clone(), ask.key.clone(), ask.quantity, ask.hash.clone()));
        let code = codes.get(ask.buyer.as_str()).cloned().unwrap_or_default();
        outcomes.push(Outcome::Joined(joined(
            held + ask.quantity,
            participants,
            code,
            ask.quantity,
            false,
        )));
    }
    (outcomes, writes)
}

/// The batch's transaction: lock, read, decide, write.
async fn commit(live: &Live, id: Uuid, asks: &[Ask]) -> Result<(Vec<Outcome>, GroupBuy)> {
    let mut tx = live.db().begin().await?;
    type Row = (
        String,
        bool,
        i32,
        i32,
        i32,
        i32,
        DateTime<Utc>,
        sqlx::types::Json<Vec<Tier>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "select status, status = 'running' and ends_at > clock_timestamp(), stock, units, participants,
                per_buyer_cap, ends_at, tiers
           from group_buy where group_buy_id = $1 for update",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (_, open, stock, units, participants, cap, ends_at, tiers) =
        row.ok_or(Error::NotFound("group buy"))?;
    let tiers = Tiers::parse(tiers.0, i64::MAX)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored tiers refused: {}", e.0)))?;
    let buyers: Vec<&str> = asks.iter().map(|a| a.buyer.as_str()).collect();
    let keys: Vec<&str> = asks.iter().map(|a| a.key.as_str()).collect();
    let joins: Vec<(String, String, i32, String)> = sqlx::query_as(
        "select j.buyer_id, j.idempotency_key, j.quantity, j.request_hash
           from unnest($2::text[], $3::text[]) as a(buyer_id, idempotency_key)
           join group_buy_join j on j.group_buy_id = $1 and j.buyer_id = a.buyer_id
                                 and j.idempotency_key = a.idempotency_key",
    )
    .bind(id)
    .bind(&buyers)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    let participants_of: Vec<(String, i32, String)> = sqlx::query_as(
        "select buyer_id, units, invite_code from group_buy_participant
          where group_buy_id = $1 and buyer_id = any($2)",
    )
    .bind(id)
    .bind(&buyers)
    .fetch_all(&mut *tx)
    .await?;
    let codes: Vec<&str> = asks.iter().filter_map(|a| a.invite.as_deref()).collect();
    let inviters: Vec<(String, String)> = if codes.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "select invite_code, buyer_id from group_buy_participant
              where group_buy_id = $1 and invite_code = any($2)",
        )
        .bind(id)
        .bind(&codes)
        .fetch_all(&mut *tx)
        .await?
    };
    let known = Known {
        open,
        stock,
        units,
        participants,
        cap,
        ends_at,
        tiers,
        joins: joins.into_iter().map(|(b, k, q, h)| ((b, k), (q, h))).collect(),
        participants_of: participants_of.into_iter().map(|(b, u, c)| (b, (u, c))).collect(),
        inviters: inviters.into_iter().collect(),
    };
    let (outcomes, writes) = decide(id, &known, asks);
    if !writes.joins.is_empty() {
        let (b, k, q, h): (Vec<String>, Vec<String>, Vec<i32>, Vec<String>) = writes
            .joins
            .iter()
            .cloned()
            .fold(Default::default(), |mut acc, (b, k, q, h)| {
                acc.0.push(b);
                acc.1.push(k);
                acc.2.push(q);
                acc.3.push(h);
                acc
            });
        sqlx::query(
            "insert into group_buy_join (group_buy_id, buyer_id, idempotency_key, quantity, request_hash, joined_at)
             select $1, b, k, q, h, clock_timestamp() from unnest($2::text[], $3::text[], $4::int[], $5::text[]) as u(b, k, q, h)",
        )
        .bind(id)
        .bind(&b)
        .bind(&k)
        .bind(&q)
        .bind(&h)
        .execute(&mut *tx)
        .await?;
        let mut pb = Vec::new();
        let mut pu = Vec::new();
        let mut pc = Vec::new();
        let mut pi: Vec<Option<String>> = Vec::new();
        for (buyer, units, code, inviter) in &writes.participants {
            pb.push(buyer.clone());
            pu.push(*units);
            pc.push(code.clone());
            pi.push(inviter.clone());
        }
        sqlx::query(
            "insert into group_buy_participant (group_buy_id, buyer_id, units, joined_at, invite_code, invited_by)
             select $1, b, u, clock_timestamp(), c, i from unnest($2::text[], $3::int[], $4::text[], $5::text[]) as x(b, u, c, i)
             on conflict (group_buy_id, buyer_id) do update set units = group_buy_participant.units + excluded.units",
        )
        .bind(id)
        .bind(&pb)
        .bind(&pu)
        .bind(&pc)
        .bind(&pi)
        .execute(&mut *tx)
        .await?;
    }
    let group_buy = sqlx::query_as::<_, GroupBuy>(&format!(
        "update group_buy set units = units + $2, participants = participants + $3, invited = invited + $4,
                version = version + case when $2 > 0 then 1 else 0 end
          where group_buy_id = $1 returning {GROUP_BUY_COLUMNS}"
    ))
    .bind(id)
    .bind(writes.units)
    .bind(writes.new_participants)
    .bind(writes.invited)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((outcomes, group_buy.derive()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(buyer: &str, key: &str, quantity: i32) -> Ask {
        Ask {
            buyer: buyer.into(),
            key: key.into(),
            quantity,
            hash: format!("h{quantity}"),
            invite: None,
        }
    }

    fn known(stock: i32, cap: i32) -> Known {
        Known {
            open: true,
            stock,
            units: 0,
            participants: 0,
            cap,
            ends_at: Utc::now(),
            tiers: Tiers::parse(
                vec![
                    Tier {
                        min_participants: 1,
                        price_minor: 300,
                    },
                    Tier {
                        min_participants: 2,
                        price_minor: 200,
                    },
                ],
                1000,
            )
            .unwrap(),
            joins: HashMap::new(),
            participants_of: HashMap::new(),
            inviters: HashMap::new(),
        }
    }

    fn codes(outcomes: &[Outcome]) -> Vec<&str> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Joined(_) => "joined",
                Outcome::Replay(_) => "replay",
                Outcome::Refused(r) => r.error().code(),
            })
            .collect()
    }

    #[test]
    fn earlier_joins_win_the_last_units_and_the_cap_counts_the_whole_batch() {
        let id = Uuid::now_v7();
        let asks = [
            ask("a", "1", 2),
            ask("a", "2", 1),
            ask("b", "1", 1),
            ask("c", "1", 1),
        ];
        let (outcomes, writes) = decide(id, &known(3, 2), &asks);
        assert_eq!(codes(&outcomes), ["joined", "cap_exceeded", "joined", "sold_out"]);
        assert_eq!(writes.units, 3);
        assert_eq!(writes.new_participants, 2);
        // The second participant unlocks the second tier.
        match &outcomes[2] {
            Outcome::Joined(j) => assert_eq!((j.participants, j.price_minor), (2, 200)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_answers_the_first_join_and_a_reused_key_is_refused() {
        let id = Uuid::now_v7();
        let mut k = known(10, 5);
        k.joins.insert(("a".into(), "old".into()), (1, "h1".into()));
        k.participants_of
            .insert("a".into(), (1, "0123456789abcdef".into()));
        k.participants = 1;
        k.units = 1;
        let asks = [
            ask("a", "old", 1),
            ask("a", "old", 2),
            ask("b", "k", 1),
            ask("b", "k", 1),
            ask("b", "k", 3),
        ];
        let (outcomes, writes) = decide(id, &k, &asks);
        assert_eq!(
            codes(&outcomes),
            [
                "replay",
                "idempotency_key_reused",
                "joined",
                "replay",
                "idempotency_key_reused"
            ]
        );
        assert_eq!(writes.joins.len(), 1);
    }

    #[test]
    fn an_ended_group_buy_refuses_every_new_join_but_still_replays() {
        let id = Uuid::now_v7();
        let mut k = known(10, 5);
        k.open = false;
        k.joins.insert(("a".into(), "old".into()), (1, "h1".into()));
        let (outcomes, writes) = decide(id, &k, &[ask("a", "old", 1), ask("b", "new", 1)]);
        assert_eq!(codes(&outcomes), ["replay", "group_buy_ended"]);
        assert!(writes.joins.is_empty());
    }

    #[test]
    fn an_invite_counts_for_the_inviter_on_a_first_join_and_never_for_oneself() {
        let id = Uuid::now_v7();
        let mut k = known(10, 5);
        let a_code = invite_code(id, "a");
        k.inviters.insert(a_code.clone(), "a".into());
        let mut b = ask("b", "1", 1);
        b.invite = Some(a_code.clone());
        let mut c = ask("c", "1", 1);
        c.invite = Some(invite_code(id, "b")); // b joined earlier in this batch
        let mut d = ask("d", "1", 1);
        d.invite = Some(invite_code(id, "d"));
        let (_, writes) = decide(id, &k, &[b, c, d]);
        let invited: Vec<(&str, Option<&str>)> = writes
            .participants
            .iter()
            .map(|p| (p.0.as_str(), p.3.as_deref()))
            .collect();
        assert_eq!(invited, [("b", Some("a")), ("c", Some("b")), ("d", None)]);
        assert_eq!(writes.invited, 2);
    }
}
