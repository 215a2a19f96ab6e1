//! The commission accrual worker against real Postgres (a fresh database per
//! test, all migrations applied): a payment that commits after newer ones
//! were read is still accrued, exactly once; passes racing from several
//! "nodes" accrue every source once; a refund seen before its sale was
//! accrued gets its sale accrued first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hawker_ledger::commission;
use hawker_ledger::ledger::{accrue_within, Accrued};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// The sales step's advisory lock (`ledger.rs`: "hawkagen" + 1).
const SALES_LOCK: i64 = 0x6861_776b_6167_0001;

struct TestDb {
    name: String,
    pool: PgPool,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = format!("hawker_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{SERVER}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let pool = TestDb::pool(&name, 10).await;
        sqlx::migrate!("../../migrations").run(&pool).await.unwrap();
        TestDb { name, pool }
    }

    async fn pool(name: &str, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .connect(&format!("{SERVER}/{name}"))
            .await
            .unwrap()
    }

    async fn drop(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&format!("{SERVER}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("drop database if exists {} with (force)", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// Terms of the test campaign.
const PERCENT_BPS: i64 = 1_000;
const SLOT_FEE: i64 = 50_000;
const HOURLY: i64 = 36_000;
const HOST_SHARE_BPS: i64 = 4_000;
const PRICE: i64 = 2_500;

/// A live session under a campaign whose terms (10% of sales, 500.00 slot
/// fee, 360.00 an hour, hosts 40%) have been in force since yesterday, with
/// a deal open and two hosts.
struct World {
    session: Uuid,
    deal: Uuid,
    lineup_item: Uuid,
    sku: Uuid,
    hosts: [Uuid; 2],
}

async fn world(db: &PgPool) -> World {
    let (agency, brand, product, sku) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (campaign, session, lineup_item, deal) =
        (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let hosts = [Uuid::new_v4(), Uuid::new_v4()];
    let mut tx = db.begin().await.unwrap();
    for (sql, id) in [
        (
            "insert into agency (agency_id, name) values ($1, 'Agency')",
            agency,
        ),
        ("insert into brand (brand_id, name) values ($1, 'Brand')", brand),
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await.unwrap();
    }
    for host in hosts {
        sqlx::query("insert into host (host_id, handle, display_name) values ($1, $2, 'Host')")
            .bind(host)
            .bind(format!("h{}", &host.simple().to_string()[..12]))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("insert into product (product_id, brand_id, name) values ($1, $2, 'Lipstick')")
        .bind(product)
        .bind(brand)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into sku (sku_id, product_id, brand_id, code, name, price_minor, currency, stock_on_hand)
         values ($1, $2, $4, 'LIP-1', 'Ruby', $3, 'USD', 0)",
    )
    .bind(sku)
    .bind(product)
    .bind(PRICE)
    .bind(brand)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("insert into campaign (campaign_id, brand_id, agency_id, name, created_by, status, starts_at)
         values ($1, $2, $3, 'C', 't', 'accepted', now() - interval '1 day')")
        .bind(campaign)
        .bind(brand)
        .bind(agency)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into commission_terms (terms_id, campaign_id, version, effective_from, percent_bps, slot_fee_minor,
                hourly_rate_minor, host_share_bps, currency, created_by, created_at)
         values ($1, $2, 1, now() - interval '1 day', $3, $4, $5, $6, 'USD', 't', now() - interval '1 day')",
    )
    .bind(Uuid::new_v4())
    .bind(campaign)
    .bind(PERCENT_BPS as i32)
    .bind(SLOT_FEE)
    .bind(HOURLY)
    .bind(HOST_SHARE_BPS as i32)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into live_session (session_id, agency_id, brand_id, campaign_id, title, planned_start, planned_end,
                status, started_at)
         values ($1, $2, $3, $4, 'Session', now() - interval '3 hours', now() + interval '1 hour',
                'live', now() - interval '2 hours')",
    )
    .bind(session)
    .bind(agency)
    .bind(brand)
    .bind(campaign)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into lineup_item (lineup_item_id, session_id, link_number, sku_id) values ($1, $2, 1, $3)",
    )
    .bind(lineup_item)
    .bind(session)
    .bind(sku)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into deal (deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity,
                per_buyer_cap, starts_at, ends_at, status, created_by)
         values ($1, $2, $3, $4, $5, 'USD', 100000, 100, now() - interval '2 hours', now() + interval '1 hour',
                'live', 't')",
    )
    .bind(deal)
    .bind(session)
    .bind(lineup_item)
    .bind(sku)
    .bind(PRICE)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    World {
        session,
        deal,
        lineup_item,
        sku,
        hosts,
    }
}

/// A paid order of `quantity`, attributed to `host`, stamped paid by the
/// executing transaction's clock (`now()`, as the payment webhook does).
async fn paid_order<'e>(db: impl PgExecutor<'e>, w: &World, quantity: i32, host: Option<Uuid>) -> Uuid {
    let order = Uuid::new_v4();
    sqlx::query(
        "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                unit_price_minor, amount_minor, currency, status, idempotency_key, request_hash, expires_at,
                paid_at, host_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $7 * $8, 'USD', 'paid', $6, 'h', now() + interval '10 minutes',
                now(), $9)",
    )
    .bind(order)
    .bind(w.deal)
    .bind(w.session)
    .bind(w.lineup_item)
    .bind(w.sku)
    .bind(format!("buyer-{order}"))
    .bind(quantity)
    .bind(PRICE)
    .bind(host)
    .execute(db)
    .await
    .unwrap();
    order
}

/// A refund of `amount` (as the refund route records it).
async fn refund(db: &PgPool, order: Uuid, amount: i64) -> Uuid {
    let refund = Uuid::new_v4();
    let mut tx = db.begin().await.unwrap();
    sqlx::query("insert into refund (refund_id, order_id, amount_minor, kind, created_by) values ($1, $2, $3, 'refund', 't')")
        .bind(refund)
        .bind(order)
        .bind(amount)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "update customer_order set status = case
             when (select sum(amount_minor) from refund where order_id = $1) >= amount_minor then 'refunded'
             else 'partially_refunded' end
          where order_id = $1",
    )
    .bind(order)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    refund
}

/// (accrual rows, entries, sum of entries) of one source.
async fn accrued(db: &PgPool, source: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from commission_accrual where source_id = $1),
                (select count(*) from commission_entry where source_id = $1),
                (select coalesce(sum(amount_minor), 0)::bigint from commission_entry where source_id = $1)",
    )
    .bind(source)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn paid_at(db: &PgPool, order: Uuid) -> DateTime<Utc> {
    sqlx::query_scalar("select paid_at from customer_order where order_id = $1")
        .bind(order)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Runs passes until `done` holds or `patience` runs out.
async fn accrue_until<F, Fut>(db: &PgPool, margin: Duration, patience: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    loop {
        accrue_within(db, margin).await.unwrap();
        if done().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_payment_committed_after_newer_ones_were_read_is_still_accrued_exactly_once() {
    let db = TestDb::new().await;
    let w = world(&db.pool).await;
    let margin = Duration::from_secs(3);

    // A payment's transaction stamps `paid_at` (its start) and is slow to commit...
    let mut slow = db.pool.begin().await.unwrap();
    let late = paid_order(&mut *slow, &w, 2, Some(w.hosts[0])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while a later payment commits and is accrued.
    let early = paid_order(&db.pool, &w, 1, Some(w.hosts[0])).await;
    let done = accrue_within(&db.pool, margin).await.unwrap();
    assert_eq!(done.sales, 1, "{done:?}");
    assert_eq!(accrued(&db.pool, early).await.0, 1);
    slow.commit().await.unwrap();

    // The worker has read past the late payment's stamp: reading on from
    // there alone would never see it.
    let (fresh_at, fresh_id): (DateTime<Utc>, Uuid) =
        sqlx::query_as("select fresh_at, fresh_id from commission_accrual_cursor where kind = 'sale'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(fresh_id, early);
    assert!(paid_at(&db.pool, late).await < fresh_at);

    // The sweep a margin behind the clock picks it up.
    let found = accrue_until(&db.pool, margin, Duration::from_secs(30), || async {
        accrued(&db.pool, late).await.0 == 1
    })
    .await;
    assert!(found, "the late payment was never accrued");
    let commission = commission::on_sale(2 * PRICE, PERCENT_BPS, HOST_SHARE_BPS, true);
    assert_eq!(accrued(&db.pool, late).await, (1, 2, commission.total()));

    // Once: passes after it (and the sweep going over it again) add nothing.
    for _ in 0..3 {
        assert_eq!(accrue_within(&db.pool, margin).await.unwrap(), Accrued::default());
    }
    tokio::time::sleep(margin).await;
    assert_eq!(accrue_within(&db.pool, margin).await.unwrap(), Accrued::default());
    assert_eq!(accrued(&db.pool, late).await, (1, 2, commission.total()));
    let (entries, sum): (i64, i64) =
        sqlx::query_as("select count(*), coalesce(sum(amount_minor), 0)::bigint from commission_entry")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let early_commission = commission::on_sale(PRICE, PERCENT_BPS, HOST_SHARE_BPS, true);
    assert_eq!((entries, sum), (4, commission.total() + early_commission.total()));
    db.drop().await;
}

#[tokio::test]
async fn passes_racing_on_several_nodes_accrue_every_source_once() {
    let db = TestDb::new().await;
    let w = world(&db.pool).await;
    let margin = Duration::from_secs(1);

    // 120 orders, a third with no host on shift; refunds of 30 of them (some
    // in two parts); two shifts that ended; the session ended.
    let mut expected = 0i64;
    let mut orders = Vec::new();
    for i in 0..120 {
        let host = (i % 3 != 0).then_some(w.hosts[i % 2]);
        let quantity = 1 + (i % 4) as i32;
        orders.push((paid_order(&db.pool, &w, quantity, host).await, quantity, host));
        expected += commission::on_sale(
            i64::from(quantity) * PRICE,
            PERCENT_BPS,
            HOST_SHARE_BPS,
            host.is_some(),
        )
        .total();
    }
    let mut sources: Vec<Uuid> = orders.iter().map(|o| o.0).collect();
    for (i, (order, quantity, host)) in orders.iter().take(30).enumerate() {
        let amount = i64::from(*quantity) * PRICE;
        let parts: Vec<i64> = if i % 2 == 0 {
            vec![amount]
        } else {
            vec![999, amount - 999]
        };
        let mut before = 0;
        for part in parts {
            sources.push(refund(&db.pool, *order, part).await);
            expected +=
                commission::clawback(amount, before, part, PERCENT_BPS, HOST_SHARE_BPS, host.is_some())
                    .total();
            before += part;
        }
    }
    let shifts = [Uuid::new_v4(), Uuid::new_v4()];
    for (i, (shift, host)) in shifts.iter().zip(w.hosts).enumerate() {
        // On air 02:00–01:00 and 01:00–00:00 before now.
        sqlx::query(
            "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, actual_start, actual_end,
                    created_by)
             values ($1, $2, $3, now() - $4 * interval '1 hour', now() - $5 * interval '1 hour',
                     now() - $4 * interval '1 hour', now() - $5 * interval '1 hour', 't')",
        )
        .bind(shift)
        .bind(w.session)
        .bind(host)
        .bind(2 - i as i32)
        .bind(1 - i as i32)
        .execute(&db.pool)
        .await
        .unwrap();
        sources.push(*shift);
        expected += commission::hourly(HOURLY, 3_600);
    }
    sqlx::query("update live_session set status = 'ended', ended_at = now() where session_id = $1")
        .bind(w.session)
        .execute(&db.pool)
        .await
        .unwrap();
    sources.push(w.session);
    expected += SLOT_FEE;

    // Four nodes, each with its worker's pool of two, start together and
    // keep passing until everything is accrued.
    let all = sources.len() as i64;
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let mut nodes = Vec::new();
    for _ in 0..4 {
        let pool = TestDb::pool(&db.name, 2).await;
        let start = start.clone();
        nodes.push(tokio::spawn(async move {
            start.wait().await;
            let mut mine = Accrued::default();
            for _ in 0..200 {
                let done = accrue_within(&pool, margin).await.unwrap();
                mine.sales += done.sales;
                mine.clawbacks += done.clawbacks;
                mine.hourly += done.hourly;
                mine.slot_fees += done.slot_fees;
                let accrued: i64 = sqlx::query_scalar("select count(*) from commission_accrual")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if accrued == all {
                    break;
                }
            }
            pool.close().await;
            mine
        }));
    }
    let mut total = Accrued::default();
    for node in nodes {
        let mine = node.await.unwrap();
        total.sales += mine.sales;
        total.clawbacks += mine.clawbacks;
        total.hourly += mine.hourly;
        total.slot_fees += mine.slot_fees;
    }
    // Each source claimed by exactly one pass on one node.
    assert_eq!(
        total,
        Accrued {
            sales: 120,
            clawbacks: 45,
            hourly: 2,
            slot_fees: 1
        }
    );
    let per_source: Vec<(Uuid, i64)> = sqlx::query_as(
        "select source_id, count(*) from commission_accrual where source_id = any($1) group by source_id",
    )
    .bind(&sources)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_source.len(), sources.len());
    assert!(per_source.iter().all(|(_, n)| *n == 1));
    let sum: i64 = sqlx::query_scalar("select coalesce(sum(amount_minor), 0)::bigint from commission_entry")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(sum, expected, "the ledger adds up to each source accrued once");
    db.drop().await;
}

#[tokio::test]
async fn a_refund_read_before_its_sale_is_accrued_accrues_the_sale_first() {
    let db = TestDb::new().await;
    let w = world(&db.pool).await;
    let order = paid_order(&db.pool, &w, 2, Some(w.hosts[1])).await;
    let refunded = refund(&db.pool, order, 1_000).await;

    // Another node holds the sales step (it skips), so the clawback step
    // meets a refund whose sale has no accrual yet.
    let mut other = PgConnection::connect(&format!("{SERVER}/{}", db.name))
        .await
        .unwrap();
    sqlx::query("select pg_advisory_lock($1)")
        .bind(SALES_LOCK)
        .execute(&mut other)
        .await
        .unwrap();
    let done = accrue_within(&db.pool, Duration::from_secs(300)).await.unwrap();
    assert_eq!((done.sales, done.clawbacks), (1, 1), "{done:?}");
    let sale = commission::on_sale(2 * PRICE, PERCENT_BPS, HOST_SHARE_BPS, true);
    let clawback = commission::clawback(2 * PRICE, 0, 1_000, PERCENT_BPS, HOST_SHARE_BPS, true);
    assert_eq!(accrued(&db.pool, order).await, (1, 2, sale.total()));
    assert_eq!(accrued(&db.pool, refunded).await, (1, 2, clawback.total()));
    // Both with the terms the sale was accrued with.
    let terms: Vec<Option<Uuid>> =
        sqlx::query_scalar("select terms_id from commission_accrual where source_id = any($1) order by kind")
            .bind([order, refunded])
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(terms[0].is_some() && terms[0] == terms[1], "{terms:?}");

    // The sales step, free again, reads the order and leaves it.
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(SALES_LOCK)
        .execute(&mut other)
        .await
        .unwrap();
    assert_eq!(
        accrue_within(&db.pool, Duration::from_secs(300)).await.unwrap(),
        Accrued::default()
    );
    assert_eq!(accrued(&db.pool, order).await, (1, 2, sale.total()));
    other.close().await.unwrap();
    db.drop().await;
}
