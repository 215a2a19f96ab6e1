//! Brand sales reports against real Postgres and Redis: one brand's orders
//! sold through two agencies, their sessions and hosts, per product,
//! session, host and agency; another brand's orders left out; a returned
//! order netted; the period; the CSV body (formula cells neutralised); who
//! may read a report; and the 400s of bad parameters.

use chrono::{Duration, SecondsFormat, Utc};
use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{
    add_to_lineup, buy, create_deal, insert_agency_and_session, insert_brand_with_sku,
};
use crate::support::{spawn_app, TestApp};

/// A product of `brand` named `name`, with one USD SKU; returns (product, sku).
async fn add_product(app: &TestApp, brand: Uuid, name: &str) -> (Uuid, Uuid) {
    let (product, sku) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("insert into product (product_id, brand_id, name) values ($1, $2, $3)")
        .bind(product)
        .bind(brand)
        .bind(name)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "insert into sku (sku_id, product_id, brand_id, code, name, price_minor, currency, stock_on_hand)
         values ($1, $2, $3, $4, 'One', 500, 'USD', 0)",
    )
    .bind(sku)
    .bind(product)
    .bind(brand)
    .bind(format!("C-{}", &sku.to_string()[..8]))
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "insert into stock_movement (sku_id, delta, reason, actor) values ($1, 1000, 'opening', 'test')",
    )
    .bind(sku)
    .execute(&app.db)
    .await
    .unwrap();
    (product, sku)
}

async fn product_of(app: &TestApp, sku: Uuid) -> Uuid {
    sqlx::query_scalar("select product_id from sku where sku_id = $1")
        .bind(sku)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn insert_host(app: &TestApp, name: &str) -> Uuid {
    let host = Uuid::new_v4();
    sqlx::query("insert into host (host_id, handle, display_name) values ($1, $2, $3)")
        .bind(host)
        .bind(format!("h_{}", &host.simple().to_string()[..12]))
        .bind(name)
        .execute(&app.db)
        .await
        .unwrap();
    host
}

/// An agency named `agency_name` with a session titled `title`.
async fn agency_session(app: &TestApp, agency_name: &str, title: &str) -> (Uuid, Uuid) {
    let (agency, session) = insert_agency_and_session(&app.db).await;
    sqlx::query("update agency set name = $2 where agency_id = $1")
        .bind(agency)
        .bind(agency_name)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("update live_session set title = $2 where session_id = $1")
        .bind(session)
        .bind(title)
        .execute(&app.db)
        .await
        .unwrap();
    (agency, session)
}

/// A live deal at `price_minor` for the session's lineup link `link`.
async fn deal(app: &TestApp, agency: Uuid, session: Uuid, sku: Uuid, link: i32, price_minor: i64) -> String {
    add_to_lineup(app, agency, session, sku).await;
    create_deal(
        app,
        agency,
        session,
        json!({"link_number": link, "price_minor": price_minor, "quantity": 100, "per_buyer_cap": 10,
               "duration_secs": 900}),
    )
    .await
}

/// An order of `quantity`, paid `ago` before now, placed with `host` on shift.
async fn sold(app: &TestApp, deal: &str, quantity: i32, ago: Duration, host: Option<Uuid>) -> Uuid {
    let (status, order) = buy(app, &format!("buyer-{}", Uuid::new_v4()), deal, "k1", quantity).await;
    assert_eq!(status, 201, "{order}");
    let order: Uuid = order["order_id"].as_str().unwrap().parse().unwrap();
    sqlx::query(
        "update customer_order set status = 'paid', paid_at = now() - $2, host_id = $3 where order_id = $1",
    )
    .bind(order)
    .bind(ago)
    .bind(host)
    .execute(&app.db)
    .await
    .unwrap();
    order
}

struct Shop {
    brand: Uuid,
    other_brand: Uuid,
    lipstick: Uuid,
    formula: Uuid,
    agency1: Uuid,
    agency2: Uuid,
    session1: Uuid,
    session2: Uuid,
    host1: Uuid,
    host2: Uuid,
}

/// Brand A sells Lipstick in two agencies' sessions and a product named
/// like a formula in one; brand B sells in the first session too.
/// - session 1 (agency "North", host Ada): 2 Lipstick at 10.00 and 1 formula at 5.00, paid 1 h ago;
///   brand B: 1 unit, paid 1 h ago; one unpaid Lipstick order;
/// - session 2 (agency "South", host Bo): 1 Lipstick at 10.00 paid 2 h ago and returned;
///   3 Lipstick paid 40 days ago with no host on shift.
async fn shop(app: &TestApp) -> Shop {
    let (brand, lipstick_sku) = insert_brand_with_sku(&app.db, 1999, 10000).await;
    let (formula, formula_sku) = add_product(app, brand, "=HYPERLINK(\"evil\")").await;
    let (other_brand, other_sku) = insert_brand_with_sku(&app.db, 1999, 10000).await;
    let (agency1, session1) = agency_session(app, "North", "Morning show").await;
    let (agency2, session2) = agency_session(app, "South", "Evening show").await;
    let (host1, host2) = (insert_host(app, "Ada").await, insert_host(app, "Bo").await);

    let lipstick1 = deal(app, agency1, session1, lipstick_sku, 1, 1000).await;
    let formula1 = deal(app, agency1, session1, formula_sku, 2, 500).await;
    let other1 = deal(app, agency1, session1, other_sku, 3, 700).await;
    let lipstick2 = deal(app, agency2, session2, lipstick_sku, 1, 1000).await;

    sold(app, &lipstick1, 2, Duration::hours(1), Some(host1)).await;
    sold(app, &formula1, 1, Duration::hours(1), Some(host1)).await;
    sold(app, &other1, 1, Duration::hours(1), Some(host1)).await;
    let (status, _) = buy(app, "unpaid-buyer", &lipstick1, "k1", 1).await;
    assert_eq!(status, 201);
    let returned = sold(app, &lipstick2, 1, Duration::hours(2), Some(host2)).await;
    sold(app, &lipstick2, 3, Duration::days(40), None).await;

    let (status, refund) = app
        .send(
            Method::POST,
            &format!("/v1/orders/{returned}/refunds"),
            &app.brand_token(brand),
            Some(json!({"amount_minor": 1000, "reason": "sent back", "kind": "return"})),
        )
        .await;
    assert_eq!(status, 201, "{refund}");

    Shop {
        brand,
        other_brand,
        lipstick: product_of(app, lipstick_sku).await,
        formula,
        agency1,
        agency2,
        session1,
        session2,
        host1,
        host2,
    }
}

fn path(brand: Uuid, query: &str) -> String {
    format!("/v1/brands/{brand}/reports/sales{query}")
}

async fn report(app: &TestApp, brand: Uuid, query: &str) -> Value {
    let (status, body) = app
        .send(Method::GET, &path(brand, query), &app.brand_token(brand), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A row as (key, label, orders, units, gross, returned orders, returned units, returned, net).
type Row = (String, String, i64, i64, i64, i64, i64, i64, i64);

fn rows(report: &Value) -> Vec<Row> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["currency"], "USD");
            let n = |f: &str| r[f].as_i64().unwrap();
            (
                r["key"].as_str().unwrap().to_string(),
                r["label"].as_str().unwrap().to_string(),
                n("orders"),
                n("units"),
                n("gross_minor"),
                n("returned_orders"),
                n("returned_units"),
                n("returned_minor"),
                n("net_minor"),
            )
        })
        .collect()
}

fn row(key: Uuid, label: &str, f: [i64; 7]) -> Row {
    (
        key.to_string(),
        label.to_string(),
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        f[6],
    )
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test]
async fn a_brands_report_groups_its_paid_orders_four_ways_nets_returns_and_leaves_other_brands_out() {
    let app = spawn_app().await;
    let s = shop(&app).await;

    let by_product = report(&app, s.brand, "?group_by=product").await;
    assert_eq!(by_product["brand_id"], s.brand.to_string());
    assert_eq!(by_product["group_by"], "product");
    assert_eq!(by_product["currency"], "USD");
    assert_eq!(
        rows(&by_product),
        vec![
            row(s.lipstick, "Lipstick", [2, 3, 3000, 1, 1, 1000, 2000]),
            row(s.formula, "=HYPERLINK(\"evil\")", [1, 1, 500, 0, 0, 0, 500]),
        ]
    );
    assert_eq!(
        by_product["totals"],
        json!({"currency": "USD", "orders": 3, "units": 4, "gross_minor": 3500, "returned_orders": 1,
               "returned_units": 1, "returned_minor": 1000, "net_minor": 2500})
    );
    assert_eq!(by_product["totals_by_currency"], json!([by_product["totals"]]));
    // Without group_by: per product.
    assert_eq!(report(&app, s.brand, "").await["rows"], by_product["rows"]);

    assert_eq!(
        rows(&report(&app, s.brand, "?group_by=session").await),
        vec![
            row(s.session1, "Morning show", [2, 3, 2500, 0, 0, 0, 2500]),
            row(s.session2, "Evening show", [1, 1, 1000, 1, 1, 1000, 0]),
        ]
    );
    assert_eq!(
        rows(&report(&app, s.brand, "?group_by=host").await),
        vec![
            row(s.host1, "Ada", [2, 3, 2500, 0, 0, 0, 2500]),
            row(s.host2, "Bo", [1, 1, 1000, 1, 1, 1000, 0]),
        ]
    );
    assert_eq!(
        rows(&report(&app, s.brand, "?group_by=agency").await),
        vec![
            row(s.agency1, "North", [2, 3, 2500, 0, 0, 0, 2500]),
            row(s.agency2, "South", [1, 1, 1000, 1, 1, 1000, 0]),
        ]
    );

    // Brand B sees only its own order.
    let other = report(&app, s.other_brand, "?group_by=agency").await;
    assert_eq!(rows(&other).len(), 1);
    assert_eq!(other["totals"]["gross_minor"], 700);
}

#[tokio::test]
async fn the_period_counts_orders_by_payment_time_from_inclusive_to_exclusive() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let now = Utc::now();
    // 50 days back to 90 minutes ago: the returned order (2 h ago) and the
    // old one (40 days ago), not those of 1 h ago.
    let query = format!(
        "?group_by=agency&from={}&to={}",
        rfc3339(now - Duration::days(50)),
        rfc3339(now - Duration::minutes(90))
    );
    let body = report(&app, s.brand, &query).await;
    assert_eq!(
        rows(&body),
        vec![row(s.agency2, "South", [2, 4, 4000, 1, 1, 1000, 3000])]
    );
    assert_eq!(body["from"].as_str().unwrap(), rfc3339(now - Duration::days(50)));

    // The old order had no host on shift.
    let query = format!("?group_by=host&from={}", rfc3339(now - Duration::days(50)));
    let hosts = rows(&report(&app, s.brand, &query).await);
    assert_eq!(
        hosts[0],
        (
            "none".to_string(),
            "No host on shift".to_string(),
            1,
            3,
            3000,
            0,
            0,
            0,
            3000
        )
    );
    assert_eq!(hosts.len(), 3);

    // `to` is exclusive: an order paid exactly at `to` is left out, one paid at `from` is in.
    let paid_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("select paid_at from customer_order where host_id = $1 order by paid_at limit 1")
            .bind(s.host2)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true).replace('+', "%2B");
    let exclusive = format!(
        "?group_by=host&from={}&to={}",
        at(paid_at - Duration::hours(1)),
        at(paid_at)
    );
    assert!(rows(&report(&app, s.brand, &exclusive).await).is_empty());
    let inclusive = format!(
        "?group_by=host&from={}&to={}",
        at(paid_at),
        at(paid_at + Duration::seconds(1))
    );
    assert_eq!(
        rows(&report(&app, s.brand, &inclusive).await)[0].0,
        s.host2.to_string()
    );
}

#[tokio::test]
async fn the_csv_export_is_the_rows_with_formula_cells_neutralised() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let expected = format!(
        "key,label,currency,orders,units,gross_minor,returned_orders,returned_units,returned_minor,net_minor\r\n\
         {},Lipstick,USD,2,3,3000,1,1,1000,2000\r\n\
         {},\"'=HYPERLINK(\"\"evil\"\")\",USD,1,1,500,0,0,0,500\r\n",
        s.lipstick, s.formula
    );
    // Ten days: the order of 40 days ago is out.
    let from = rfc3339(Utc::now() - Duration::days(10));
    let to = rfc3339(Utc::now() + Duration::hours(1));
    for (query, accept) in [
        (
            format!("?group_by=product&from={from}&to={to}&format=csv"),
            "application/json",
        ),
        (format!("?group_by=product&from={from}&to={to}"), "text/csv"),
    ] {
        let response = app
            .http
            .get(app.url(&path(s.brand, &query)))
            .bearer_auth(app.brand_token(s.brand))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        let compact = |t: &str| t.replace(['-', ':'], "");
        assert_eq!(
            headers["content-disposition"],
            format!(
                "attachment; filename=\"sales-product-{}-{}.csv\"",
                compact(&from),
                compact(&to)
            )
            .as_str()
        );
        assert_eq!(response.text().await.unwrap(), expected);
    }
    // Accept: JSON (or nothing) answers JSON.
    let response = app
        .http
        .get(app.url(&path(s.brand, "")))
        .bearer_auth(app.brand_token(s.brand))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn only_the_brand_and_admins_read_its_report() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let p = path(s.brand, "?group_by=agency");
    let refused = [
        app.brand_token(s.other_brand),
        app.agency_token(s.agency1),
        app.host_token(s.host1),
        app.token("viewer-1", Role::Viewer),
    ];
    for token in refused {
        let (status, body) = app.send(Method::GET, &p, &token, None).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "forbidden");
    }
    let admin = app.token("admin-1", Role::Admin);
    let (status, body) = app.send(Method::GET, &p, &admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["net_minor"], 2500);
    let (status, body) = app
        .send(Method::GET, &path(Uuid::new_v4(), ""), &admin, None)
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = app.send(Method::GET, &p, "not-a-token", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bad_parameters_are_refused_with_their_codes() {
    let app = spawn_app().await;
    let (brand, _) = insert_brand_with_sku(&app.db, 1999, 10).await;
    for (query, code) in [
        ("?group_by=brand", "bad_group_by"),
        ("?group_by=", "bad_group_by"),
        ("?from=yesterday", "bad_period"),
        ("?from=2026-03-01T00:00:00Z&to=2026-03-01T00:00:00Z", "bad_period"),
        ("?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "bad_period"),
        ("?from=2025-01-01T00:00:00Z&to=2026-01-03T00:00:00Z", "bad_period"),
        ("?format=xlsx", "bad_format"),
    ] {
        let (status, body) = app
            .send(Method::GET, &path(brand, query), &app.brand_token(brand), None)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    // 366 days is the longest period.
    let (status, body) = app
        .send(
            Method::GET,
            &path(brand, "?from=2025-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"),
            &app.brand_token(brand),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([]));
    assert_eq!(body["currency"], Value::Null);
}
