//! Before and after a stampede: the database, the session and the deal
//! (created through the API, as a host would), the invariants checked in
//! Postgres, the server's settlement metrics, and cleaning up Redis.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::common::http1::Conn;
use crate::common::probe;

/// The seeded demo session, whose agency, brand and SKUs the stampede sessions copy.
pub(crate) const SEEDED_SESSION: &str = "00000000-0000-4000-8000-00000000d001";

pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .with_context(|| format!("connecting to {database_url}"))
}

/// The name of the database in a URL (`…/name?…`).
pub fn database_name(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
}

/// Empties the order tables of the stampede's own database, so every run
/// starts from the same table sizes. Refused on any other database.
pub async fn reset_orders(db: &PgPool, database_url: &str) -> anyhow::Result<()> {
    if !database_name(database_url).contains("stampede") {
        bail!("--fresh only empties a database whose name contains `stampede`");
    }
    sqlx::raw_sql("truncate customer_order, order_event, deal_buyer, payment, refund, room_outbox cascade")
        .execute(db)
        .await
        .context("emptying the order tables")?;
    analyze(db).await
}

/// Statistics of the order tables as they are now (Postgres re-plans the
/// server's prepared statements after it).
pub async fn analyze(db: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql("analyze customer_order, order_event, deal_buyer, deal")
        .execute(db)
        .await
        .context("analyze")?;
    Ok(())
}

/// A session of its own (so its room and events touch nobody else's), with
/// the seeded session's agency and brand.
pub async fn ensure_session(db: &PgPool, session: Uuid) -> anyhow::Result<()> {
    let seeded = Uuid::parse_str(SEEDED_SESSION)?;
    let done = sqlx::query(
        "insert into live_session (session_id, agency_id, brand_id, title, planned_start, planned_end)
         select $1, agency_id, brand_id, 'Stampede load test', now() - interval '1 hour', now() + interval '7 days'
           from live_session where session_id = $2
         on conflict (session_id) do update
            set status = 'scheduled', ended_at = null, planned_end = excluded.planned_end",
    )
    .bind(session)
    .bind(seeded)
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        bail!("the seeded session {SEEDED_SESSION} is missing: run `hawker seed` on this database");
    }
    Ok(())
}

/// One JSON request, answered with (status, body).
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut conn = Conn::new(addr);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = conn.exchange(request.as_bytes(), Duration::from_secs(30)).await?;
    Ok((answer.status, String::from_utf8_lossy(answer.body).into_owned()))
}

pub struct DealSpec {
    pub session: Uuid,
    pub sku: Uuid,
    pub quantity: i32,
    pub cap: i32,
    pub duration_secs: u32,
}

/// Puts the SKU on the lineup and launches a deal on it, through the API.
pub async fn create_deal(
    db: &PgPool,
    addr: &str,
    agency_token: &str,
    spec: &DealSpec,
) -> anyhow::Result<Uuid> {
    // The deal takes its units from the SKU's stock: restock what is
    // missing (stock on hand changes only through a movement).
    sqlx::query(
        "insert into stock_movement (sku_id, delta, reason, note, actor)
         select sku_id, $2 - stock_on_hand, 'restock', 'loadtest stampede', 'loadtest'
           from sku where sku_id = $1 and stock_on_hand < $2",
    )
    .bind(spec.sku)
    .bind(spec.quantity)
    .execute(db)
    .await?;
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v1/sessions/{}/lineup", spec.session),
        agency_token,
        &format!("{{\"sku_id\":\"{}\"}}", spec.sku),
    )
    .await?;
    if status != 201 {
        bail!("adding the SKU to the lineup: HTTP {status}: {body}");
    }
    let item: serde_json::Value = serde_json::from_str(&body)?;
    let link = item
        .get("link_number")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| anyhow!("lineup answer without link_number: {body}"))?;
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v1/sessions/{}/deals", spec.session),
        agency_token,
        &format!(
            "{{\"link_number\":{link},\"price_minor\":999,\"quantity\":{},\"per_buyer_cap\":{},\
             \"countdown_secs\":0,\"duration_secs\":{}}}",
            spec.quantity, spec.cap, spec.duration_secs
        ),
    )
    .await?;
    if status != 201 {
        bail!("creating the deal: HTTP {status}: {body}");
    }
    let deal: serde_json::Value = serde_json::from_str(&body)?;
    deal.get("deal_id")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow!("deal answer without deal_id: {body}"))
}

/// What Postgres says after the run, and whether the invariants hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    pub quantity: i64,
    pub sold: i64,
    pub status: String,
    pub end_reason: Option<String>,
    pub order_rows: i64,
    pub order_units: i64,
    pub buyers: i64,
    pub buyers_over_cap: i64,
    /// Buyers whose `deal_buyer.units` differs from their orders' units.
    pub deal_buyer_mismatches: i64,
    pub acks: u64,
    pub acks_distinct: u64,
    /// 201 answers whose order id is not in Postgres (or belongs to another buyer).
    pub acks_missing: u64,
    /// Order rows of the deal that no 201 announced (possible after timeouts).
    pub rows_without_ack: i64,
    pub failures: Vec<String>,
    pub pass: bool,
}

impl Checks {
    /// The checks of all the run's deals as one: counts summed, the statuses
    /// (and end reasons) counted when they differ, every deal's failures
    /// named by its deal, and a pass only if every deal passed. One deal's
    /// checks are its own.
    pub fn total(per_deal: &[(Uuid, Checks)]) -> Checks {
        if let [(_, only)] = per_deal {
            return only.clone();
        }
        let mut t = Checks {
            pass: per_deal.iter().all(|(_, c)| c.pass),
            ..Checks::default()
        };
        let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, (deal, c)) in per_deal.iter().enumerate() {
            t.quantity += c.quantity;
            t.sold += c.sold;
            t.order_rows += c.order_rows;
            t.order_units += c.order_units;
            t.buyers += c.buyers;
            t.buyers_over_cap += c.buyers_over_cap;
            t.deal_buyer_mismatches += c.deal_buyer_mismatches;
            t.acks += c.acks;
            t.acks_distinct += c.acks_distinct;
            t.acks_missing += c.acks_missing;
            t.rows_without_ack += c.rows_without_ack;
            *statuses.entry(c.status.as_str()).or_default() += 1;
            *reasons.entry(c.end_reason.as_deref().unwrap_or("-")).or_default() += 1;
            t.failures
                .extend(c.failures.iter().map(|f| format!("deal {k} ({deal}): {f}")));
        }
        let tally = |m: &BTreeMap<&str, usize>| match m.len() {
            1 => m.keys().next().map(|k| k.to_string()).unwrap_or_default(),
            _ => m
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        t.status = tally(&statuses);
        t.end_reason = match (reasons.len(), reasons.keys().next()) {
            (1, Some(&"-")) | (0, _) => None,
            _ => Some(tally(&reasons)),
        };
        t
    }
}

/// Units sold and quantity of each deal, in the order given (0/0 for a deal not found).
pub async fn deal_sales(db: &PgPool, deals: &[Uuid]) -> anyhow::Result<Vec<(i64, i64)>> {
    let rows: HashMap<Uuid, (i64, i64)> = sqlx::query_as::<_, (Uuid, i32, i32)>(
        "select deal_id, sold, quantity from deal where deal_id = any($1)",
    )
    .bind(deals)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|(deal, sold, quantity)| (deal, (sold.into(), quantity.into())))
    .collect();
    Ok(deals
        .iter()
        .map(|d| rows.get(d).copied().unwrap_or((0, 0)))
        .collect())
}

/// Checks: Σ order units = deal.sold ≤ quantity; nobody over the cap;
/// `deal_buyer` agrees with the orders; every 201's order exists for its buyer.
pub async fn check(
    db: &PgPool,
    deal: Uuid,
    cap: i32,
    acks: &[(Uuid, u64)],
    buyer_name: impl Fn(u64) -> String,
) -> anyhow::Result<Checks> {
    let (quantity, sold, status, end_reason): (i32, i32, String, Option<String>) =
        sqlx::query_as("select quantity, sold, status, end_reason from deal where deal_id = $1")
            .bind(deal)
            .fetch_one(db)
            .await?;
    let (order_rows, order_units): (i64, i64) = sqlx::query_as(
        "select count(*), coalesce(sum(quantity), 0)::bigint from customer_order
          where deal_id = $1 and status <> 'cancelled'",
    )
    .bind(deal)
    .fetch_one(db)
    .await?;
    let (buyers, over_cap): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where units > $2) from (
           select buyer_id, sum(quantity) as units from customer_order
            where deal_id = $1 and status <> 'cancelled' group by buyer_id) t",
    )
    .bind(deal)
    .bind(cap)
    .fetch_one(db)
    .await?;
    let mismatches: i64 = sqlx::query_scalar(
        "select count(*) from (
           select buyer_id, sum(quantity) as units from customer_order
            where deal_id = $1 and status <> 'cancelled' group by buyer_id) o
         full join (select buyer_id, units from deal_buyer where deal_id = $1 and units > 0) b using (buyer_id)
         where coalesce(o.units, 0) <> coalesce(b.units, 0)",
    )
    .bind(deal)
    .fetch_one(db)
    .await?;
    let stored: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
        "select order_id, buyer_id from customer_order where deal_id = $1",
    )
    .bind(deal)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    let mut distinct: HashMap<Uuid, u64> = HashMap::with_capacity(acks.len());
    for (order, buyer) in acks {
        distinct.insert(*order, *buyer);
    }
    let missing = distinct
        .iter()
        .filter(|(order, buyer)| stored.get(order).is_none_or(|b| *b != buyer_name(**buyer)))
        .count() as u64;
    let rows_without_ack = stored.keys().filter(|o| !distinct.contains_key(o)).count() as i64;

    let mut failures = Vec::new();
    if order_units != i64::from(sold) {
        failures.push(format!("Σ order units {order_units} ≠ deal.sold {sold}"));
    }
    if sold > quantity {
        failures.push(format!("sold {sold} > quantity {quantity}"));
    }
    if over_cap > 0 {
        failures.push(format!("{over_cap} buyers over the cap of {cap}"));
    }
    if mismatches > 0 {
        failures.push(format!(
            "{mismatches} buyers whose deal_buyer.units disagree with their orders"
        ));
    }
    if missing > 0 {
        failures.push(format!("{missing} acknowledged orders are not in Postgres"));
    }
    Ok(Checks {
        quantity: quantity.into(),
        sold: sold.into(),
        status,
        end_reason,
        order_rows,
        order_units,
        buyers,
        buyers_over_cap: over_cap,
        deal_buyer_mismatches: mismatches,
        acks: acks.len() as u64,
        acks_distinct: distinct.len() as u64,
        acks_missing: missing,
        rows_without_ack,
        pass: failures.is_empty(),
        failures,
    })
}

/// Settlement figures from a node's `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SettleMetrics {
    pub batches: f64,
    pub batch_size_sum: f64,
    pub batch_seconds_sum: f64,
    pub orders_committed: f64,
    pub failures: f64,
    /// `hawker_settle_batch_seconds` cumulative buckets (le → count).
    pub batch_seconds_buckets: BTreeMap<String, f64>,
    /// `hawker_settle_batch_size` quantiles as the exporter reports them (recent window).
    pub batch_size_quantiles: BTreeMap<String, f64>,
}

impl SettleMetrics {
    pub fn parse(text: &str) -> Self {
        let mut m = SettleMetrics::default();
        for sample in probe::samples(text) {
            let value = sample.value;
            match sample.name {
                "hawker_settle_batch_size_count" => m.batches += value,
                "hawker_settle_batch_size_sum" => m.batch_size_sum += value,
                "hawker_settle_batch_seconds_sum" => m.batch_seconds_sum += value,
                "hawker_orders_committed_total" => m.orders_committed += value,
                "hawker_settle_failures_total" => m.failures += value,
                "hawker_settle_batch_seconds_bucket" => {
                    if let Some(le) = sample.label("le") {
                        *m.batch_seconds_buckets.entry(le.to_string()).or_default() += value;
                    }
                }
                "hawker_settle_batch_size" => {
                    if let Some(q) = sample.label("quantile") {
                        m.batch_size_quantiles.insert(q.to_string(), value);
                    }
                }
                _ => {}
            }
        }
        m
    }

    pub fn since(&self, before: &SettleMetrics) -> SettleMetrics {
        SettleMetrics {
            batches: self.batches - before.batches,
            batch_size_sum: self.batch_size_sum - before.batch_size_sum,
            batch_seconds_sum: self.batch_seconds_sum - before.batch_seconds_sum,
            orders_committed: self.orders_committed - before.orders_committed,
            failures: self.failures - before.failures,
            batch_seconds_buckets: self
                .batch_seconds_buckets
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v - before.batch_seconds_buckets.get(k).copied().unwrap_or(0.0),
                    )
                })
                .collect(),
            batch_size_quantiles: self.batch_size_quantiles.clone(),
        }
    }
}

/// `UNLINK` of a deal's gate keys (they hold one field per purchase attempt
/// and would otherwise sit in the shared Redis for a day). Not `DEL`: freeing a
/// hash of 200,000 fields blocks Redis for ~0.1 s, `UNLINK` frees it in the background.
pub async fn drop_gate_keys(redis: &str, deal: Uuid) -> anyhow::Result<()> {
    let keys: Vec<String> = ["meta", "stock", "buyers", "keys", "rebuilding"]
        .iter()
        .map(|w| format!("hawker:deal:{{{deal}}}:{w}"))
        .collect();
    let mut command = format!("*{}\r\n$6\r\nUNLINK\r\n", keys.len() + 1);
    for key in &keys {
        command.push_str(&format!("${}\r\n{key}\r\n", key.len()));
    }
    let exchange = async {
        let mut stream = TcpStream::connect(redis).await?;
        stream.write_all(command.as_bytes()).await?;
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply).await?;
        anyhow::Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("redis UNLINK timed out"))??;
    if !reply.starts_with(':') {
        bail!("redis UNLINK answered {reply:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(sold: i64, status: &str, failures: &[&str]) -> Checks {
        Checks {
            quantity: 1000,
            sold,
            status: status.to_string(),
            end_reason: (status == "ended").then(|| "sold_out".to_string()),
            order_rows: sold,
            order_units: sold,
            buyers: sold,
            acks: sold as u64,
            acks_distinct: sold as u64,
            failures: failures.iter().map(|f| f.to_string()).collect(),
            pass: failures.is_empty(),
            ..Checks::default()
        }
    }

    #[test]
    fn one_deal_is_its_own_total() {
        let one = checks(1000, "ended", &["x"]);
        let t = Checks::total(&[(Uuid::nil(), one.clone())]);
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::to_value(&one).unwrap()
        );
    }

    #[test]
    fn the_total_sums_and_passes_only_if_every_deal_passes() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t = Checks::total(&[(a, checks(1000, "ended", &[])), (b, checks(1000, "ended", &[]))]);
        assert!(t.pass);
        assert_eq!((t.quantity, t.sold, t.acks), (2000, 2000, 2000));
        assert_eq!(t.status, "ended");
        assert_eq!(t.end_reason.as_deref(), Some("sold_out"));

        let t = Checks::total(&[
            (a, checks(1000, "ended", &[])),
            (
                b,
                checks(10, "live", &["2 acknowledged orders are not in Postgres"]),
            ),
        ]);
        assert!(!t.pass);
        assert_eq!(t.sold, 1010);
        assert_eq!(t.status, "ended ×1, live ×1");
        assert_eq!(t.end_reason.as_deref(), Some("- ×1, sold_out ×1"));
        assert_eq!(
            t.failures,
            vec![format!("deal 1 ({b}): 2 acknowledged orders are not in Postgres")]
        );
    }
}
