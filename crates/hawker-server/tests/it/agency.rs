//! The agency side against real Postgres (and Redis for the room): booking
//! races, attribution at a handoff, the commission ledger with a refund after
//! the session, terms changing after a sale, live figures, and who may do what.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, SubsecRound, TimeZone, Utc};
use futures_util::future::join_all;
use hawker_core::Role;
use hawker_hub::Publication;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{add_to_lineup, buy, create_deal, insert_agency, insert_brand_with_sku};
use crate::support::proxy::TcpProxy;
use crate::support::{poll, settings_with, spawn_app, spawn_app_with, test_database_url, Patience, TestApp};

// ---------------------------------------------------------------- helpers

pub(crate) fn id(value: &Value, field: &str) -> Uuid {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .parse()
        .unwrap()
}

fn at(value: &Value, field: &str) -> DateTime<Utc> {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .parse()
        .unwrap()
}

/// Whole seconds, so times round-trip as strings.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A new host (through the API) on `agency`'s roster since an hour ago: the
/// agency invites, the host accepts, and the stay is then dated back an hour
/// in the database (as if the host had accepted then), so that shifts may
/// start in the recent past.
pub(crate) async fn roster_host(app: &TestApp, agency: Uuid) -> Uuid {
    let host_id = invited_and_accepted(app, agency).await;
    sqlx::query(
        "update agency_host set joined_at = joined_at - interval '1 hour'
          where agency_id = $1 and host_id = $2 and left_at is null",
    )
    .bind(agency)
    .bind(host_id)
    .execute(&app.db)
    .await
    .unwrap();
    host_id
}

/// A new host profile created by `agency`.
pub(crate) async fn new_host(app: &TestApp, agency: Uuid) -> Uuid {
    let handle = format!("h_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let (status, host) = app
        .send(
            Method::POST,
            "/v1/hosts",
            &app.agency_token(agency),
            Some(json!({"handle": handle, "display_name": "Host"})),
        )
        .await;
    assert_eq!(status, 201, "{host}");
    id(&host, "host_id")
}

/// `agency` invites `host`; returns the pending invite.
pub(crate) async fn invite(app: &TestApp, agency: Uuid, host: Uuid) -> Value {
    let (status, invite) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{agency}/roster"),
            &app.agency_token(agency),
            Some(json!({"host_id": host})),
        )
        .await;
    assert_eq!(status, 201, "{invite}");
    assert_eq!(invite["status"], "pending", "{invite}");
    invite
}

/// A new host on `agency`'s roster from now: invited by the agency, accepted by the host.
pub(crate) async fn invited_and_accepted(app: &TestApp, agency: Uuid) -> Uuid {
    let host_id = new_host(app, agency).await;
    let invite_id = id(&invite(app, agency, host_id).await, "invite_id");
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/hosts/{host_id}/invites/{invite_id}/accept"),
            &app.host_token(host_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    host_id
}

pub(crate) async fn schedule(app: &TestApp, agency: Uuid, body: Value) -> Value {
    let (status, session) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{agency}/sessions"),
            &app.agency_token(agency),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    session
}

pub(crate) async fn book(
    app: &TestApp,
    agency: Uuid,
    session: Uuid,
    host: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (u16, Value) {
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session}/shifts"),
        &app.agency_token(agency),
        Some(json!({"host_id": host, "planned_start": iso(from), "planned_end": iso(to)})),
    )
    .await
}

async fn open_deal(app: &TestApp, agency: Uuid, session: Uuid) -> String {
    create_deal(
        app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 2500, "quantity": 1000, "per_buyer_cap": 10,
               "duration_secs": 900}),
    )
    .await
}

/// Buys through the real purchase path and marks the order paid (as the
/// payment webhook would); returns the order.
async fn buy_paid(app: &TestApp, buyer: &str, deal: &str, quantity: i32) -> Value {
    let (status, order) = buy(app, buyer, deal, &Uuid::new_v4().to_string(), quantity).await;
    assert_eq!(status, 201, "{order}");
    sqlx::query("update customer_order set status = 'paid', paid_at = now() where order_id = $1")
        .bind(id(&order, "order_id"))
        .execute(&app.db)
        .await
        .unwrap();
    order
}

/// Records a refund or return of `amount` (as the refund route does).
async fn refund(app: &TestApp, order: Uuid, amount: i64, kind: &str) -> Uuid {
    let refund_id = Uuid::new_v4();
    sqlx::query(
        "insert into refund (refund_id, order_id, amount_minor, kind, created_by) values ($1, $2, $3, $4, 'test')",
    )
    .bind(refund_id)
    .bind(order)
    .bind(amount)
    .bind(kind)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "update customer_order set status = case
             when (select sum(amount_minor) from refund where order_id = $1) >= amount_minor then 'refunded'
             else 'partially_refunded' end
          where order_id = $1",
    )
    .bind(order)
    .execute(&app.db)
    .await
    .unwrap();
    refund_id
}

/// Waits until every source event has been accrued (by the server's worker,
/// or by this call: both may run, each event is accrued once).
async fn wait_accrued(app: &TestApp, sources: &[Uuid]) {
    let done = poll(
        Patience::Tries(100),
        Duration::from_millis(100),
        || async {
            hawker_ledger::ledger::accrue(&app.db).await.unwrap();
            let done: i64 =
                sqlx::query_scalar("select count(*) from commission_accrual where source_id = any($1)")
                    .bind(sources)
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
            done as usize
        },
        |done| *done == sources.len(),
    )
    .await;
    assert_eq!(done, sources.len(), "not everything was accrued");
}

async fn figures(app: &TestApp, session: Uuid, token: &str) -> (u16, Value) {
    app.send(
        Method::GET,
        &format!("/v1/sessions/{session}/figures"),
        token,
        None,
    )
    .await
}

/// Entry amounts for one source and party.
fn entry_amount(statement: &Value, source_field: &str, source: Uuid, party: &str) -> i64 {
    statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[source_field] == json!(source) && e["party"] == party)
        .map(|e| e["amount_minor"].as_i64().unwrap())
        .sum()
}

fn usd(totals: &Value) -> &Value {
    totals
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["currency"] == "USD")
        .unwrap_or_else(|| panic!("no USD totals in {totals}"))
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn overlapping_shifts_for_one_host_are_refused_even_when_requests_race() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let host = roster_host(&app, agency).await;
    let start = now() + chrono::Duration::days(1);
    // Eight sessions, eight overlapping bookings of the same host, all at once.
    let mut sessions = Vec::new();
    for i in 0..8 {
        let s = schedule(
            &app,
            agency,
            json!({"title": format!("Marathon {i}"), "planned_start": iso(start),
                   "planned_end": iso(start + chrono::Duration::hours(4))}),
        )
        .await;
        sessions.push(id(&s, "session_id"));
    }
    let answers = join_all(sessions.iter().enumerate().map(|(i, session)| {
        let from = start + chrono::Duration::minutes(i as i64 * 5);
        book(
            &app,
            agency,
            *session,
            host,
            from,
            from + chrono::Duration::hours(1),
        )
    }))
    .await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 1, "exactly one booking wins: {answers:?}");
    let winner = won[0];
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["error"], "shift_overlap");
        let message = body["message"].as_str().unwrap();
        // The error names the booking in the way: its session and time range.
        assert!(
            message.contains(winner["session_id"].as_str().unwrap()),
            "{message}"
        );
        assert!(
            message.contains(winner["planned_start"].as_str().unwrap()),
            "{message}"
        );
        assert!(
            message.contains(winner["planned_end"].as_str().unwrap()),
            "{message}"
        );
    }
    let booked: i64 = sqlx::query_scalar("select count(*) from shift where host_id = $1")
        .bind(host)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(booked, 1);

    // Postgres itself refuses it, whatever the agency: a session of another
    // agency, written around the API.
    let other = insert_agency(&app.db).await;
    let foreign = Uuid::new_v4();
    sqlx::query(
        "insert into live_session (session_id, agency_id, title, planned_start, planned_end)
         values ($1, $2, 'Elsewhere', $3, $4)",
    )
    .bind(foreign)
    .bind(other)
    .bind(start)
    .bind(start + chrono::Duration::hours(4))
    .execute(&app.db)
    .await
    .unwrap();
    let err = sqlx::query(
        "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, created_by)
         values ($1, $2, $3, $4, $5, 'sql')",
    )
    .bind(Uuid::new_v4())
    .bind(foreign)
    .bind(host)
    .bind(start + chrono::Duration::minutes(30))
    .bind(start + chrono::Duration::minutes(90))
    .execute(&app.db)
    .await
    .unwrap_err();
    let db = err.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("23P01"));
    assert_eq!(db.constraint(), Some("shift_host_no_overlap"));

    // Back to back is fine; a cancelled shift frees its time.
    let winner_end = at(winner, "planned_end");
    let winner_session = id(winner, "session_id");
    let next = sessions.iter().find(|s| **s != winner_session).unwrap();
    let (status, body) = book(
        &app,
        agency,
        *next,
        host,
        winner_end,
        winner_end + chrono::Duration::hours(1),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .send(
            Method::DELETE,
            &format!("/v1/shifts/{}", id(winner, "shift_id")),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let from = at(winner, "planned_start");
    let (status, body) = book(
        &app,
        agency,
        *next,
        host,
        from,
        from + chrono::Duration::minutes(30),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_handoff_at_14_00_attributes_orders_on_either_side_to_the_right_host() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let (brand, sku) = insert_brand_with_sku(&app.db, 2500, 100000).await;
    let (mia, leo) = (roster_host(&app, agency).await, roster_host(&app, agency).await);
    // Planned in Shanghai time; stored and returned in UTC.
    let shanghai = FixedOffset::east_opt(8 * 3600).unwrap();
    let local = |h: u32, m: u32, s: u32| {
        shanghai
            .with_ymd_and_hms(2031, 6, 1, h, m, s)
            .unwrap()
            .with_timezone(&Utc)
    };
    let session = schedule(
        &app,
        agency,
        json!({"title": "Handoff", "brand_id": brand,
               "planned_start": "2031-06-01T21:00:00+08:00", "planned_end": "2031-06-01T23:00:00+08:00"}),
    )
    .await;
    assert_eq!(session["planned_start"], "2031-06-01T13:00:00Z");
    let session_id = id(&session, "session_id");
    let (s1, first) = book(&app, agency, session_id, mia, local(21, 0, 0), local(22, 0, 0)).await;
    let (s2, second) = book(&app, agency, session_id, leo, local(22, 0, 0), local(23, 0, 0)).await;
    assert_eq!((s1, s2), (201, 201), "{first} {second}");

    let on_shift = |t: DateTime<Utc>| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, Option<Uuid>>("select host_on_shift($1, $2)")
                .bind(session_id)
                .bind(t)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let handoff = Utc.with_ymd_and_hms(2031, 6, 1, 14, 0, 0).unwrap();
    let second_ = chrono::Duration::seconds(1);
    // Before anyone is on air, the plan decides.
    assert_eq!(on_shift(handoff - second_).await, Some(mia));
    assert_eq!(on_shift(handoff).await, Some(leo));
    assert_eq!(on_shift(handoff + second_).await, Some(leo));
    assert_eq!(on_shift(local(20, 59, 59)).await, None);
    assert_eq!(on_shift(local(23, 0, 0)).await, None);

    // On air 13:00 → handoff at exactly 14:00:00 → on air until the end (as
    // go-live and a handoff stamp them), with Mia late to hand off by a minute.
    sqlx::query("update shift set actual_start = $2, actual_end = $3 where shift_id = $1")
        .bind(id(&first, "shift_id"))
        .bind(local(21, 0, 0))
        .bind(local(22, 1, 0))
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("update shift set actual_start = $2 where shift_id = $1")
        .bind(id(&second, "shift_id"))
        .bind(local(22, 1, 0))
        .execute(&app.db)
        .await
        .unwrap();
    let late = handoff + chrono::Duration::minutes(1);
    assert_eq!(on_shift(late - second_).await, Some(mia), "Mia was still on air");
    assert_eq!(on_shift(late).await, Some(leo));
    assert_eq!(on_shift(late + second_).await, Some(leo));

    // Orders with explicit purchase times, attributed the way the order insert does.
    sqlx::query("update shift set actual_end = $2 where shift_id = $1")
        .bind(id(&first, "shift_id"))
        .bind(handoff)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("update shift set actual_start = $2 where shift_id = $1")
        .bind(id(&second, "shift_id"))
        .bind(handoff)
        .execute(&app.db)
        .await
        .unwrap();
    add_to_lineup(&app, agency, session_id, sku).await;
    let deal: Uuid = open_deal(&app, agency, session_id).await.parse().unwrap();
    let mut attributed = Vec::new();
    for (i, t) in [handoff - second_, handoff + second_].into_iter().enumerate() {
        let host: Option<Uuid> = sqlx::query_scalar(
            "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                    unit_price_minor, amount_minor, currency, idempotency_key, request_hash, created_at,
                    expires_at, host_id)
             select gen_random_uuid(), d.deal_id, d.session_id, d.lineup_item_id, d.sku_id, $2, 1,
                    d.price_minor, d.price_minor, d.currency, $2, 'h', $3, $3 + interval '10 minutes',
                    host_on_shift(d.session_id, $3)
               from deal d where d.deal_id = $1
             returning host_id",
        )
        .bind(deal)
        .bind(format!("buyer-{i}"))
        .bind(t)
        .fetch_one(&app.db)
        .await
        .unwrap();
        attributed.push(host);
    }
    assert_eq!(
        attributed,
        vec![Some(mia), Some(leo)],
        "13:59:59 → Mia, 14:00:01 → Leo"
    );
}

#[tokio::test]
async fn a_live_handoff_moves_attribution_of_real_purchases_mid_deal() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let (brand, sku) = insert_brand_with_sku(&app.db, 2500, 100000).await;
    let (mia, leo) = (roster_host(&app, agency).await, roster_host(&app, agency).await);
    let start = now() - chrono::Duration::minutes(10);
    let session = schedule(
        &app,
        agency,
        json!({"title": "Live", "brand_id": brand, "planned_start": iso(start),
               "planned_end": iso(start + chrono::Duration::hours(2))}),
    )
    .await;
    let session_id = id(&session, "session_id");
    let mid = start + chrono::Duration::hours(1);
    let (_, first) = book(&app, agency, session_id, mia, start, mid).await;
    let (_, second) = book(
        &app,
        agency,
        session_id,
        leo,
        mid,
        mid + chrono::Duration::hours(1),
    )
    .await;
    add_to_lineup(&app, agency, session_id, sku).await;

    // Leo may not take Mia's shift live; Mia goes live on hers.
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/live"),
            &app.host_token(leo),
            Some(json!({"shift_id": id(&first, "shift_id")})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, live) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/live"),
            &app.host_token(mia),
            None,
        )
        .await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["status"], "live");
    assert_eq!(live["on_air_host_id"], json!(mia));

    let deal = open_deal(&app, agency, session_id).await;
    let before = buy_paid(&app, "early-bird", &deal, 1).await;
    // Leo takes over early (handoffs follow the room, not the plan).
    let (status, handed) = app
        .send(
            Method::POST,
            &format!("/v1/shifts/{}/start", id(&second, "shift_id")),
            &app.host_token(leo),
            None,
        )
        .await;
    assert_eq!(status, 200, "{handed}");
    assert_eq!(handed["on_air_host_id"], json!(leo));
    let shifts = handed["shifts"].as_array().unwrap();
    assert_eq!(shifts[0]["status"], "done");
    assert_eq!(
        shifts[0]["actual_end"], shifts[1]["actual_start"],
        "no gap at a handoff"
    );
    let after = buy_paid(&app, "late-bird", &deal, 1).await;
    assert_eq!(before["host_id"], json!(mia));
    assert_eq!(after["host_id"], json!(leo));
    // The room was told who is on air, in its snapshot too.
    let room = app.hub.snapshot(session_id).await.unwrap();
    let snapshot = &room.state["session"];
    assert_eq!(snapshot["on_air_host_id"], json!(leo), "{snapshot}");

    let (status, ended) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/end"),
            &app.host_token(leo),
            None,
        )
        .await;
    assert_eq!(
        (status, ended["status"].as_str()),
        (200, Some("ended")),
        "{ended}"
    );
    assert!(ended["shifts"][1]["actual_end"].is_string());
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/end"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("session_not_live")));
}

#[tokio::test]
async fn a_refund_after_the_session_claws_back_so_the_statement_matches_a_hand_calculation() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let (brand, sku) = insert_brand_with_sku(&app.db, 2500, 100000).await;
    let (mia, leo) = (roster_host(&app, agency).await, roster_host(&app, agency).await);
    let token = app.agency_token(agency);
    let (status, campaign) = app
        .send(
            Method::POST,
            "/v1/campaigns",
            &app.brand_token(brand),
            Some(json!({"brand_id": brand, "agency_id": agency, "name": "Summer glow"})),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let campaign_id = id(&campaign, "campaign_id");
    // A mixed term: 10% of net sales + 500.00 slot fee + 360.00 an hour
    // (0.10 a second); hosts get 40% of all of it.
    let (status, terms) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign_id}/terms"),
            &token,
            Some(
                json!({"percent_bps": 1000, "slot_fee_minor": 50000, "hourly_rate_minor": 36000,
                    "host_share_bps": 4000, "currency": "USD"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{terms}");
    assert_eq!(terms["version"], 1);
    let start = now() - chrono::Duration::minutes(30);
    let session = schedule(
        &app,
        agency,
        json!({"title": "Glow marathon", "campaign_id": campaign_id, "planned_start": iso(start),
               "planned_end": iso(start + chrono::Duration::hours(3))}),
    )
    .await;
    assert_eq!(session["brand_id"], json!(brand), "the campaign's brand");
    let session_id = id(&session, "session_id");
    let mid = start + chrono::Duration::hours(1);
    let (_, first) = book(&app, agency, session_id, mia, start, mid).await;
    let (_, second) = book(
        &app,
        agency,
        session_id,
        leo,
        mid,
        mid + chrono::Duration::hours(2),
    )
    .await;
    add_to_lineup(&app, agency, session_id, sku).await;
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/live"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let deal = open_deal(&app, agency, session_id).await;
    let o1 = buy_paid(&app, "buyer-1", &deal, 2).await; // 50.00, Mia
    let o2 = buy_paid(&app, "buyer-2", &deal, 1).await; // 25.00, Mia
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.send(
        Method::POST,
        &format!("/v1/shifts/{}/start", id(&second, "shift_id")),
        &token,
        None,
    )
    .await;
    let o3 = buy_paid(&app, "buyer-3", &deal, 2).await; // 50.00, Leo
    assert_eq!(
        (o1["host_id"].clone(), o3["host_id"].clone()),
        (json!(mia), json!(leo))
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, ended) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/end"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{ended}");

    // After the stream: a partial return of order 1, a full refund of order 3.
    let r1 = refund(&app, id(&o1, "order_id"), 2000, "return").await;
    let r3 = refund(&app, id(&o3, "order_id"), 5000, "refund").await;
    let shift_ids = [id(&first, "shift_id"), id(&second, "shift_id")];
    wait_accrued(
        &app,
        &[
            id(&o1, "order_id"),
            id(&o2, "order_id"),
            id(&o3, "order_id"),
            r1,
            r3,
            shift_ids[0],
            shift_ids[1],
            session_id,
        ],
    )
    .await;

    // By hand. Seconds on air, as stamped by go-live, the handoff and the end.
    let shifts = ended["shifts"].as_array().unwrap();
    let secs = |s: &Value| (at(s, "actual_end") - at(s, "actual_start")).num_seconds();
    let (mia_secs, leo_secs) = (secs(&shifts[0]), secs(&shifts[1]));
    assert!(mia_secs >= 1 && leo_secs >= 1);
    let host_part = |amount: i64| amount * 4000 / 10000;
    // Sales: 10% of 5000, 2500, 5000.
    let (c1, c2, c3) = (500, 250, 500);
    // Return of 20.00 on order 1: commission on 50.00 → 30.00 is 500 → 300.
    let claw1 = 300 - 500;
    let claw1_host = host_part(300) - host_part(500);
    let claw3 = -500;
    // Hourly: 0.10 a second.
    let (pay_mia, pay_leo) = (36000 * mia_secs / 3600, 36000 * leo_secs / 3600);
    // Slot fee 500.00: hosts' 40% (200.00) shared by seconds on air.
    let pool = 20000;
    let mut slot_mia = pool * mia_secs / (mia_secs + leo_secs);
    let mut slot_leo = pool * leo_secs / (mia_secs + leo_secs);
    if slot_mia + slot_leo < pool {
        // The leftover minor unit goes to the larger remainder.
        let (rm, rl) = (
            (pool * mia_secs) % (mia_secs + leo_secs),
            (pool * leo_secs) % (mia_secs + leo_secs),
        );
        if rm > rl || (rm == rl && mia < leo) {
            slot_mia += 1;
        } else {
            slot_leo += 1;
        }
    }
    let mia_net = host_part(c1) + host_part(c2) + claw1_host + host_part(pay_mia) + slot_mia;
    let leo_net = host_part(c3) - host_part(500) + host_part(pay_leo) + slot_leo;
    let total_net = c1 + c2 + c3 + claw1 + claw3 + pay_mia + pay_leo + 50000;

    let (status, statement) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/statement"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{statement}");
    let total = usd(&statement["total"]);
    assert_eq!(total["sales_minor"], c1 + c2 + c3);
    assert_eq!(total["clawbacks_minor"], claw1 + claw3);
    assert_eq!(total["hourly_minor"], pay_mia + pay_leo);
    assert_eq!(total["slot_fees_minor"], 50000);
    assert_eq!(total["net_payable_minor"], total_net);
    assert_eq!(
        usd(&statement["agency"])["net_payable_minor"],
        total_net - mia_net - leo_net
    );
    let hosts = statement["hosts"].as_array().unwrap();
    let net_of = |h: Uuid| {
        usd(&hosts.iter().find(|x| x["host_id"] == json!(h)).unwrap()["totals"])["net_payable_minor"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((net_of(mia), net_of(leo)), (mia_net, leo_net));
    assert_eq!(entry_amount(&statement, "refund_id", r1, "host"), claw1_host);
    assert_eq!(
        entry_amount(&statement, "refund_id", r1, "agency"),
        claw1 - claw1_host
    );
    // The entries add up to the totals: a statement is a sum over the ledger.
    let sum: i64 = statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, total_net);

    // The host's own statement says the same.
    let (status, mine) = app
        .send(
            Method::GET,
            &format!("/v1/hosts/{mia}/statement"),
            &app.host_token(mia),
            None,
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(usd(&mine["totals"])["net_payable_minor"], mia_net);
    // A period that ends before the refunds leaves their clawbacks out.
    let refunded_at: DateTime<Utc> =
        sqlx::query_scalar("select min(created_at) from refund where refund_id = any($1)")
            .bind([r1, r3])
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (_, earlier) = app
        .send(
            Method::GET,
            &format!(
                "/v1/hosts/{mia}/statement?from=2020-01-01T00:00:00%2B08:00&to={}",
                refunded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            &app.host_token(mia),
            None,
        )
        .await;
    assert_eq!(usd(&earlier["totals"])["clawbacks_minor"], 0, "{earlier}");

    // Accruing again changes nothing, and the ledger cannot be rewritten.
    hawker_ledger::ledger::accrue(&app.db).await.unwrap();
    let (_, again) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/statement"),
            &token,
            None,
        )
        .await;
    assert_eq!(again["entries"], statement["entries"]);
    let err = sqlx::query("update commission_entry set amount_minor = 0")
        .execute(&app.db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn changing_terms_after_a_sale_does_not_change_that_sales_commission() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let (brand, sku) = insert_brand_with_sku(&app.db, 2500, 100000).await;
    let mia = roster_host(&app, agency).await;
    let token = app.agency_token(agency);
    let (_, campaign) = app
        .send(
            Method::POST,
            "/v1/campaigns",
            &token,
            Some(json!({"brand_id": brand, "agency_id": agency, "name": "Terms"})),
        )
        .await;
    let campaign_id = id(&campaign, "campaign_id");
    let terms = |percent: i32| json!({"percent_bps": percent, "host_share_bps": 5000, "currency": "USD"});
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign_id}/terms"),
            &token,
            Some(terms(1000)),
        )
        .await;
    assert_eq!(status, 201);
    let start = now() - chrono::Duration::minutes(5);
    let session = schedule(
        &app,
        agency,
        json!({"title": "Terms", "campaign_id": campaign_id, "planned_start": iso(start),
               "planned_end": iso(start + chrono::Duration::hours(1))}),
    )
    .await;
    let session_id = id(&session, "session_id");
    book(
        &app,
        agency,
        session_id,
        mia,
        start,
        start + chrono::Duration::hours(1),
    )
    .await;
    add_to_lineup(&app, agency, session_id, sku).await;
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session_id}/live"),
        &token,
        None,
    )
    .await;
    let deal = open_deal(&app, agency, session_id).await;

    // Order A is bought and accrued at 10%.
    let a = buy_paid(&app, "buyer-a", &deal, 2).await;
    wait_accrued(&app, &[id(&a, "order_id")]).await;
    let (_, before) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/statement"),
            &token,
            None,
        )
        .await;
    // Order B is bought under 10% but paid (and accrued) only after the change.
    let (status, b) = buy(&app, "buyer-b", &deal, "key-b", 1).await;
    assert_eq!(status, 201, "{b}");

    // Terms can change from now on, never backwards.
    let mut backdated = terms(2000);
    backdated["effective_from"] = json!(iso(now() - chrono::Duration::hours(1)));
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign_id}/terms"),
            &token,
            Some(backdated),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("terms_backdated")),
        "{body}"
    );
    let (status, v2) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign_id}/terms"),
            &token,
            Some(terms(2000)),
        )
        .await;
    assert_eq!((status, v2["version"].as_i64()), (201, Some(2)), "{v2}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    sqlx::query("update customer_order set status = 'paid', paid_at = now() where order_id = $1")
        .bind(id(&b, "order_id"))
        .execute(&app.db)
        .await
        .unwrap();
    // Order C is bought under 20%.
    let c = buy_paid(&app, "buyer-c", &deal, 1).await;
    // A session's own terms replace the campaign's while in force: order D at 5%.
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/terms"),
            &token,
            Some(terms(500)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let d = buy_paid(&app, "buyer-d", &deal, 1).await;
    wait_accrued(
        &app,
        &[id(&b, "order_id"), id(&c, "order_id"), id(&d, "order_id")],
    )
    .await;

    let (_, after) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/statement"),
            &token,
            None,
        )
        .await;
    let commission = |statement: &Value, order: &Value| {
        entry_amount(statement, "order_id", id(order, "order_id"), "agency")
            + entry_amount(statement, "order_id", id(order, "order_id"), "host")
    };
    assert_eq!(commission(&before, &a), 500, "10% of 50.00");
    assert_eq!(commission(&after, &a), 500, "unchanged after the terms changed");
    let entries_of = |s: &Value, order: &Value| -> Vec<Value> {
        s["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["order_id"] == order["order_id"])
            .cloned()
            .collect()
    };
    assert_eq!(
        entries_of(&before, &a),
        entries_of(&after, &a),
        "the same entries, untouched"
    );
    assert_eq!(
        commission(&after, &b),
        250,
        "bought under 10%, paid under 20%: 10%"
    );
    assert_eq!(commission(&after, &c), 500, "20% of 25.00");
    assert_eq!(commission(&after, &d), 125, "the session's 5% of 25.00");
    // Host and agency halves of order C, 50/50.
    assert_eq!(entry_amount(&after, "order_id", id(&c, "order_id"), "host"), 250);
}

#[tokio::test]
async fn live_figures_count_sales_viewers_chat_and_likes_per_session_deal_and_shift() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let (brand, sku) = insert_brand_with_sku(&app.db, 2500, 100000).await;
    let (mia, leo) = (roster_host(&app, agency).await, roster_host(&app, agency).await);
    let token = app.agency_token(agency);
    let start = now() - chrono::Duration::minutes(5);
    let session = schedule(
        &app,
        agency,
        json!({"title": "Figures", "brand_id": brand, "planned_start": iso(start),
               "planned_end": iso(start + chrono::Duration::hours(2))}),
    )
    .await;
    let session_id = id(&session, "session_id");
    let mid = start + chrono::Duration::hours(1);
    book(&app, agency, session_id, mia, start, mid).await;
    let (_, second) = book(
        &app,
        agency,
        session_id,
        leo,
        mid,
        mid + chrono::Duration::hours(1),
    )
    .await;
    add_to_lineup(&app, agency, session_id, sku).await;
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session_id}/live"),
        &token,
        None,
    )
    .await;
    let deal = open_deal(&app, agency, session_id).await;

    app.hub
        .publish(
            session_id,
            Publication::new("viewers", json!({"count": 40})).set_state("viewers", json!(40)),
        )
        .await
        .unwrap();
    for user in ["ann", "bob", "ann"] {
        app.hub
            .publish(
                session_id,
                Publication::new("chat", json!({"text": "hi"})).from_user(user),
            )
            .await
            .unwrap();
    }
    app.hub
        .publish(
            session_id,
            Publication::new("likes", json!({"total": 17})).set_state("likes", json!(17)),
        )
        .await
        .unwrap();
    let o1 = buy_paid(&app, "ann", &deal, 2).await;
    buy_paid(&app, "bob", &deal, 1).await;
    // Wait for a sample with the chat in it, then hand over to Leo.
    let seen = poll(
        Patience::Tries(50),
        Duration::from_millis(200),
        || async {
            let (status, body) = figures(&app, session_id, &token).await;
            assert_eq!(status, 200, "{body}");
            body
        },
        |body| body["audience"]["chat_messages"] == 3,
    )
    .await;
    assert_eq!(seen["audience"]["chat_messages"], 3, "{seen}");
    assert_eq!(seen["audience"]["viewers_now"], 40);
    assert_eq!(seen["audience"]["peak_viewers"], 40);
    assert_eq!(seen["audience"]["likes"], 17);
    assert_eq!(seen["audience"]["unique_viewers"], 40);
    assert_eq!(seen["conversion"], 0.05, "2 buyers / 40 viewers");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.send(
        Method::POST,
        &format!("/v1/shifts/{}/start", id(&second, "shift_id")),
        &token,
        None,
    )
    .await;
    buy_paid(&app, "cat", &deal, 3).await;
    refund(&app, id(&o1, "order_id"), 1000, "return").await;
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session_id}/end"),
        &token,
        None,
    )
    .await;

    // After the end: kept, from Postgres.
    let (_, done) = figures(&app, session_id, &token).await;
    let sales = &done["sales"];
    assert_eq!(
        (
            sales["orders"].as_i64(),
            sales["units"].as_i64(),
            sales["buyers"].as_i64()
        ),
        (Some(3), Some(6), Some(3))
    );
    let amounts = &sales["amounts"][0];
    assert_eq!(
        (
            amounts["gross_minor"].as_i64(),
            amounts["refunds_minor"].as_i64(),
            amounts["net_minor"].as_i64()
        ),
        (Some(15000), Some(1000), Some(14000))
    );
    assert_eq!(done["audience"]["viewers_now"], 0);
    assert_eq!(done["audience"]["peak_viewers"], 40);
    assert_eq!(done["deals"][0]["sales"]["orders"], 3);
    let shifts = done["shifts"].as_array().unwrap();
    assert_eq!(
        (shifts[0]["host_id"].clone(), shifts[0]["sales"]["orders"].clone()),
        (json!(mia), json!(2))
    );
    assert_eq!(
        (shifts[1]["host_id"].clone(), shifts[1]["sales"]["orders"].clone()),
        (json!(leo), json!(1))
    );
    assert_eq!(
        shifts[0]["audience"]["chat_messages"], 3,
        "the chat was during Mia's shift"
    );
    assert_eq!(shifts[1]["audience"]["chat_messages"], 0);

    // A brand sees its products' sales; a brand not selling here sees nothing.
    let (status, theirs) = figures(&app, session_id, &app.brand_token(brand)).await;
    assert_eq!((status, theirs["brand_id"].clone()), (200, json!(brand)));
    assert_eq!(theirs["sales"]["orders"], 3);
    let (status, _) = figures(&app, session_id, &app.brand_token(Uuid::new_v4())).await;
    assert_eq!(status, 403);
}

// ------------------------------------------------- session events, durable

/// The session events a viewer receives within `quiet` of silence.
async fn session_events(viewer: &mut crate::support::socket::Ws, quiet: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(Ok(frame)) = viewer.try_next(quiet).await {
        if frame["type"].as_str().is_some_and(|t| t.starts_with("session.")) {
            seen.push(frame);
        }
    }
    seen
}

#[tokio::test]
async fn session_events_reach_the_room_exactly_once_across_nodes_even_if_the_deciding_node_cannot_publish() {
    // Node A reaches Redis through a proxy we can cut; node B directly. Both
    // share Postgres, so both relay the durable outbox.
    let db = test_database_url();
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let proxied = format!("redis://{}/", proxy.addr);
    let a = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", db.as_str()),
        ("HAWKER__REDIS__URL", proxied.as_str()),
    ]))
    .await;
    // Both on the machine's Redis, named, also when the suite runs on a cluster.
    let b = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", db.as_str()),
        ("HAWKER__REDIS__URL", "redis://127.0.0.1:6379/"),
    ]))
    .await;
    let agency = insert_agency(&a.db).await;
    let host = roster_host(&a, agency).await;
    let start = now() - chrono::Duration::minutes(5);
    let session = schedule(
        &a,
        agency,
        json!({"title": "Durable", "planned_start": iso(start), "planned_end": iso(start + chrono::Duration::hours(2))}),
    )
    .await;
    let session_id = id(&session, "session_id");
    let (status, body) = book(
        &a,
        agency,
        session_id,
        host,
        start,
        start + chrono::Duration::hours(1),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let mut viewer =
        crate::support::socket::connect(b.addr, session_id, &b.token("viewer-1", Role::Viewer), None).await;
    assert!(session_events(&mut viewer, Duration::from_millis(300))
        .await
        .is_empty());

    // A decides but cannot publish: B's relay delivers, once.
    proxy.cut();
    let (status, live) = a
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/live"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{live}");
    let event = viewer.expect("session.live").await;
    assert_eq!(event["data"]["status"], "live");
    assert_eq!(event["data"]["on_air_host_id"], json!(host));
    assert!(event["data"]["on_air_handle"].is_string(), "{event}");
    assert_eq!(event["data"]["started_at"], live["started_at"]);
    assert_eq!(event["data"]["ended_at"], Value::Null);
    // The room's snapshot keeps who is on air under `session`.
    let mut late = crate::support::socket::connect(
        b.addr,
        session_id,
        &b.token("viewer-2", Role::Viewer),
        Some(("stale", 1)),
    )
    .await;
    let reset = late.expect("reset").await;
    assert_eq!(reset["state"]["session"], event["data"], "{reset}");

    // Both nodes can publish now: each of them relays, and the room still gets each event once.
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, ended) = a
        .send(
            Method::POST,
            &format!("/v1/sessions/{session_id}/end"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    let seen = session_events(&mut viewer, Duration::from_millis(1500)).await;
    let kinds: Vec<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["session.ended"], "{seen:?}");
    assert_eq!(seen[0]["data"]["status"], "ended");
    assert_eq!(seen[0]["data"]["ended_at"], ended["ended_at"]);

    let pending: i64 =
        sqlx::query_scalar("select count(*) from room_outbox where session_id = $1 and published_at is null")
            .bind(session_id)
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    let published: Vec<String> =
        sqlx::query_scalar("select event_type from room_outbox where session_id = $1 order by outbox_id")
            .bind(session_id)
            .fetch_all(&a.db)
            .await
            .unwrap();
    assert_eq!(published, ["session.live", "session.ended"]);
}
