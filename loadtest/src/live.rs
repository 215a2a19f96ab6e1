//! The `live` scenario: the two storms of the live formats, against a
//! running node.
//!
//! 1. **Auction storm.** An anti-snipe auction on the session's first
//!    lineup item; when it reaches its last `--window-secs`, B bidders
//!    (distinct viewer tokens) bid over C keep-alive connections as fast as
//!    the server answers, for `--storm-secs`. Each bid is the minimum the
//!    bidder last heard of (from an accepted answer or a `bid_too_low`
//!    refusal) plus 0 to 2 increments, so most bids race for the same
//!    price, as a real storm does. Measured: accepted and refused bids per
//!    second, bid latency (p50/p99/max), and the node's CPU per bid when its
//!    pid is known. Then the auction is left to end and the tool checks the
//!    outcome: ended once, the winner is the last leader of the bid log, the
//!    hammer price is the log's last price, and no accepted bid of the log
//!    is below the minimum it met.
//! 2. **Giveaway entries.** A giveaway with E entrants entering over the same
//!    connections: entries per second and entry latency, and the count the
//!    server reports afterwards must be E.
//!
//! Every request is a real HTTP request through the public API (the same
//! small HTTP/1.1 client as `stampede`), with the generator on this machine.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use hawker_core::Role;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::http1::{string_field, Conn};
use crate::common::note;
use crate::common::procfs;
use crate::common::stats::{histogram, Percentiles};
use crate::common::ws::Minter;
use crate::common::DEV_SECRET;
use crate::stampede::setup;

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// The node's public address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub node: String,
    /// The node's pid, for its CPU time per bid and per entry.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The node's database (the session and its stock are prepared there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/hawker")]
    pub database_url: String,
    /// The session to run in (created from the seeded demo session if missing).
    #[arg(long, default_value = "00000000-0000-4000-8000-00000006d001")]
    pub session: Uuid,
    #[arg(long, default_value = "00000000-0000-4000-8000-00000000a001")]
    pub agency: Uuid,
    #[arg(long, default_value = "00000000-0000-4000-8000-00000001e001")]
    pub sku: Uuid,
    #[arg(long, env = "HAWKER_LOADTEST_JWT_SECRET", default_value = DEV_SECRET, hide_default_value = true)]
    pub jwt_secret: String,
    /// Distinct bidders.
    #[arg(long, default_value_t = 5000)]
    pub bidders: u64,
    /// Keep-alive connections the requests are spread over.
    #[arg(long, default_value_t = 128)]
    pub connections: usize,
    /// The auction's anti-snipe window (s); the storm starts when the auction is this close to its end.
    #[arg(long, default_value_t = 10)]
    pub window_secs: u64,
    /// How long the storm lasts (s).
    #[arg(long, default_value_t = 10.0)]
    pub storm_secs: f64,
    /// Distinct giveaway entrants (0: no giveaway phase).
    #[arg(long, default_value_t = 10_000)]
    pub entrants: u64,
    /// The giveaway's entry window (s): entries must fit in it; the count is checked once it closes.
    #[arg(long, default_value_t = 30)]
    pub entry_window_secs: u64,
    /// Where the JSON result goes.
    #[arg(long, default_value = "loadtest/results")]
    pub out_dir: PathBuf,
}

/// What the run measured.
#[derive(Debug, Default, Serialize)]
struct Report {
    run: String,
    node: String,
    calibration_ms: f64,
    auction_id: String,
    storm_secs: f64,
    bids_sent: u64,
    bids_accepted: u64,
    bids_refused: BTreeMap<String, u64>,
    bid_errors: u64,
    accepted_per_sec: f64,
    answered_per_sec: f64,
    bid_latency_ms: Option<Percentiles>,
    server_cpu_us_per_bid: Option<f64>,
    extensions_seen: u64,
    hammer_minor: Option<i64>,
    bid_log_len: u64,
    giveaway_id: Option<String>,
    entries_sent: u64,
    entries_accepted: u64,
    entry_errors: BTreeMap<String, u64>,
    entries_per_sec: Option<f64>,
    entry_latency_ms: Option<Percentiles>,
    server_cpu_us_per_entry: Option<f64>,
    entry_count_reported: Option<i64>,
    failures: Vec<String>,
    pass: bool,
}

pub async fn run(args: LiveArgs) -> anyhow::Result<()> {
    if args.bidders == 0 || args.connections == 0 {
        bail!("--bidders and --connections must be at least 1");
    }
    let run_id = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut report = Report {
        run: run_id.clone(),
        node: args.node.clone(),
        calibration_ms: procfs::calibrate_ms(),
        ..Report::default()
    };
    let db = setup::connect(&args.database_url).await?;
    setup::ensure_session(&db, args.session).await?;
    // The auction's and the giveaway's units come from the SKU's stock.
    sqlx::query(
        "insert into stock_movement (sku_id, delta, reason, note, actor)
         select sku_id, 100 - stock_on_hand, 'restock', 'loadtest live', 'loadtest'
           from sku where sku_id = $1 and stock_on_hand < 100",
    )
    .bind(args.sku)
    .execute(&db)
    .await?;
    let minter = Minter::new(&args.jwt_secret);
    let agency = minter.token("live-agency", Role::Agency, Some(args.agency))?;
    let (link, item) = lineup_link(&args, &agency).await?;

    auction_storm(&args, &minter, &agency, link, &run_id, &mut report).await?;
    if args.entrants > 0 {
        giveaway_entries(&args, &minter, &agency, &item, &run_id, &mut report).await?;
    }
    report.pass = report.failures.is_empty();
    print_summary(&report);
    std::fs::create_dir_all(&args.out_dir)?;
    let path = args.out_dir.join(format!("live-{run_id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    note!("result: {}", path.display());
    if !report.pass {
        bail!("invariant checks failed: {:?}", report.failures);
    }
    Ok(())
}

/// The SKU's link number and lineup item in the session's lineup (added if missing).
async fn lineup_link(args: &LiveArgs, agency: &str) -> anyhow::Result<(i64, String)> {
    let (status, body) = setup::call(
        &args.node,
        "POST",
        &format!("/v1/sessions/{}/lineup", args.session),
        agency,
        &format!("{{\"sku_id\":\"{}\"}}", args.sku),
    )
    .await?;
    if status != 201 {
        bail!("adding the SKU to the lineup: HTTP {status}: {body}");
    }
    let item: Value = serde_json::from_str(&body)?;
    match (item["link_number"].as_i64(), item["lineup_item_id"].as_str()) {
        (Some(link), Some(id)) => Ok((link, id.to_string())),
        _ => bail!("lineup answer without link_number or lineup_item_id: {body}"),
    }
}

async fn get_json(addr: &str, path: &str, token: &str) -> anyhow::Result<Value> {
    let (status, body) = setup::call(addr, "GET", path, token, "").await?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// What every connection shares during a storm.
#[derive(Default)]
struct Shared {
    /// The highest minimum acceptable bid any answer named.
    min_bid: i64,
    ends_at: Option<String>,
    extensions: u64,
    sent: u64,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    errors: u64,
    latency_us: Vec<u64>,
}

/// The number in "the minimum acceptable bid is N minor units".
fn minimum_in(message: &str) -> Option<i64> {
    let tail = message.split("is ").nth(1)?;
    tail.split_whitespace().next()?.parse().ok()
}

async fn auction_storm(
    args: &LiveArgs,
    minter: &Minter,
    agency: &str,
    link: i64,
    run_id: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Short enough to start the storm soon, long enough to open the connections first.
    let duration = args.window_secs + 5;
    let (status, body) = setup::call(
        &args.node,
        "POST",
        &format!("/v1/sessions/{}/auctions", args.session),
        agency,
        &json!({
            "link_number": link,
            "start_price_minor": 1000,
            "increments": [{"below_minor": 100000, "step_minor": 10}, {"step_minor": 50}],
            "duration_secs": duration,
            "mode": "anti_snipe",
            "snipe_window_secs": args.window_secs,
        })
        .to_string(),
    )
    .await?;
    if status != 201 {
        bail!("creating the auction: HTTP {status}: {body}");
    }
    let auction: Value = serde_json::from_str(&body)?;
    let auction_id = auction["auction_id"]
        .as_str()
        .ok_or_else(|| anyhow!("auction answer without auction_id: {body}"))?
        .to_string();
    report.auction_id = auction_id.clone();
    let start_min = auction["min_bid_minor"].as_i64().unwrap_or(1000);
    note!(
        "auction {auction_id}: {duration} s, anti-snipe {} s",
        args.window_secs
    );

    let tokens: Rc<Vec<String>> = Rc::new(
        (0..args.bidders)
            .map(|i| minter.token(&format!("bidder-{run_id}-{i}"), Role::Viewer, None))
            .collect::<anyhow::Result<_>>()?,
    );
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut conn = Conn::new(&args.node);
        conn.connect().await?;
        conns.push(conn);
    }
    // Wait for the auction's last window.
    tokio::time::sleep(Duration::from_secs(duration - args.window_secs)).await;

    let shared = Rc::new(RefCell::new(Shared {
        min_bid: start_min,
        ends_at: auction["ends_at"].as_str().map(str::to_string),
        ..Shared::default()
    }));
    let cpu_before = args.server_pid.map(|p| procfs::cpu_s(&[p]));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.storm_secs);
    let path = format!("/v1/auctions/{auction_id}/bids");
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let (shared, tokens, path, addr) = (shared.clone(), tokens.clone(), path.clone(), args.node.clone());
        let connections = args.connections as u64;
        tasks.push(tokio::task::spawn_local(async move {
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                let bidder = (c as u64 + n * connections) % tokens.len() as u64;
                n += 1;
                let amount = {
                    let s = shared.borrow();
                    s.min_bid + 10 * (n % 3) as i64
                };
                let body = format!("{{\"amount_minor\":{amount}}}");
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    tokens[bidder as usize],
                    body.len()
                );
                let sent = Instant::now();
                let answer = conn.exchange(request.as_bytes(), Duration::from_secs(30)).await;
                let took = sent.elapsed().as_micros() as u64;
                let mut s = shared.borrow_mut();
                s.sent += 1;
                match answer {
                    Ok(a) => {
                        s.latency_us.push(took);
                        let text = String::from_utf8_lossy(a.body);
                        if a.status == 201 {
                            s.accepted += 1;
                            let parsed: Option<Value> = serde_json::from_str(&text).ok();
                            if let Some(v) = parsed {
                                if let Some(m) = v["min_bid_minor"].as_i64() {
                                    s.min_bid = s.min_bid.max(m);
                                }
                                if let Some(e) = v["ends_at"].as_str() {
                                    if s.ends_at.as_deref() != Some(e) {
                                        s.extensions += 1;
                                        s.ends_at = Some(e.to_string());
                                    }
                                }
                            }
                        } else {
                            let code = string_field(a.body, "error").unwrap_or("?").to_string();
                            if let Some(m) = string_field(a.body, "message").and_then(minimum_in) {
                                s.min_bid = s.min_bid.max(m);
                            }
                            *s.refused.entry(format!("{} {code}", a.status)).or_default() += 1;
                        }
                    }
                    Err(_) => s.errors += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("a bidding connection")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = args.server_pid.map(|p| procfs::cpu_s(&[p]));
    {
        let s = shared.borrow();
        report.storm_secs = elapsed;
        report.bids_sent = s.sent;
        report.bids_accepted = s.accepted;
        report.bids_refused = s.refused.clone();
        report.bid_errors = s.errors;
        report.accepted_per_sec = s.accepted as f64 / elapsed;
        report.answered_per_sec = s.latency_us.len() as f64 / elapsed;
        report.bid_latency_ms = latency(&s.latency_us);
        report.extensions_seen = s.extensions;
        if let (Some(a), Some(b)) = (cpu_before, cpu) {
            report.server_cpu_us_per_bid = Some((b - a) * 1e6 / (s.sent.max(1)) as f64);
        }
    }

    // Let it end (the window after the last bid), then check the outcome.
    let mut ended = Value::Null;
    for _ in 0..(args.window_secs * 4 + 40) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let a = get_json(&args.node, &format!("/v1/auctions/{auction_id}"), agency).await?;
        if a["status"] == "ended" {
            ended = a;
            break;
        }
    }
    if ended.is_null() {
        report.failures.push("the auction did not end".into());
        return Ok(());
    }
    report.hammer_minor = ended["hammer_minor"].as_i64();
    check_bid_log(&args.node, &auction_id, agency, &ended, report).await
}

/// The log's last accepted bid made the hammer price and the winner; no
/// accepted bid is below the minimum it met.
async fn check_bid_log(
    addr: &str,
    auction_id: &str,
    token: &str,
    ended: &Value,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut after = 0i64;
    let mut last: Option<Value> = None;
    let mut previous_seq = 0i64;
    loop {
        let page = get_json(
            addr,
            &format!("/v1/auctions/{auction_id}/bids?after={after}&limit=1000"),
            token,
        )
        .await?;
        let bids = page["bids"]
            .as_array()
            .or_else(|| page["items"].as_array())
            .cloned()
            .unwrap_or_default();
        if bids.is_empty() {
            break;
        }
        for b in &bids {
            let seq = b["seq"].as_i64().unwrap_or(0);
            if seq <= previous_seq {
                report.failures.push(format!("bid log out of order at seq {seq}"));
            }
            previous_seq = seq;
            if let (Some(amount), Some(min)) = (b["amount_minor"].as_i64(), b["min_minor"].as_i64()) {
                if amount < min {
                    report
                        .failures
                        .push(format!("bid {seq} accepted at {amount} below the minimum {min}"));
                }
            }
            report.bid_log_len += 1;
        }
        after = previous_seq;
        last = bids.last().cloned();
    }
    let Some(last) = last else {
        report.failures.push("empty bid log after a storm".into());
        return Ok(());
    };
    if let (Some(hammer), Some(price)) = (ended["hammer_minor"].as_i64(), last["price_minor"].as_i64()) {
        if hammer != price {
            report
                .failures
                .push(format!("hammer {hammer} is not the log's last price {price}"));
        }
    }
    Ok(())
}

async fn giveaway_entries(
    args: &LiveArgs,
    minter: &Minter,
    agency: &str,
    item: &str,
    run_id: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (status, body) = setup::call(
        &args.node,
        "POST",
        &format!("/v1/sessions/{}/giveaways", args.session),
        agency,
        &json!({
            "lineup_item_id": item,
            "winners": 3,
            "entry_window_secs": args.entry_window_secs,
            "eligibility": "room",
            "must_be_present": false,
        })
        .to_string(),
    )
    .await?;
    if status != 201 {
        bail!("creating the giveaway: HTTP {status}: {body}");
    }
    let giveaway: Value = serde_json::from_str(&body)?;
    let giveaway_id = giveaway["giveaway_id"]
        .as_str()
        .ok_or_else(|| anyhow!("giveaway answer without giveaway_id: {body}"))?
        .to_string();
    report.giveaway_id = Some(giveaway_id.clone());
    let tokens: Rc<Vec<String>> = Rc::new(
        (0..args.entrants)
            .map(|i| minter.token(&format!("entrant-{run_id}-{i}"), Role::Viewer, None))
            .collect::<anyhow::Result<_>>()?,
    );
    let path = format!("/v1/giveaways/{giveaway_id}/entries");
    let latencies = Rc::new(RefCell::new(Vec::with_capacity(tokens.len())));
    let errors = Rc::new(RefCell::new(BTreeMap::<String, u64>::new()));
    let cpu_before = args.server_pid.map(|p| procfs::cpu_s(&[p]));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (tokens, path, addr) = (tokens.clone(), path.clone(), args.node.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        let connections = args.connections;
        tasks.push(tokio::task::spawn_local(async move {
            let mut conn = Conn::new(&addr);
            let mut i = c;
            while i < tokens.len() {
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
                    tokens[i]
                );
                i += connections;
                let sent = Instant::now();
                match conn.exchange(request.as_bytes(), Duration::from_secs(30)).await {
                    Ok(a) if a.status == 201 => {
                        latencies.borrow_mut().push(sent.elapsed().as_micros() as u64)
                    }
                    Ok(a) => {
                        let code = string_field(a.body, "error").unwrap_or("?").to_string();
                        *errors
                            .borrow_mut()
                            .entry(format!("{} {code}", a.status))
                            .or_default() += 1;
                    }
                    Err(e) => *errors.borrow_mut().entry(format!("transport: {e}")).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("an entering connection")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = args.server_pid.map(|p| procfs::cpu_s(&[p]));
    let accepted = latencies.borrow().len() as u64;
    report.entries_sent = args.entrants;
    report.entries_accepted = accepted;
    report.entry_errors = errors.borrow().clone();
    report.entries_per_sec = Some(accepted as f64 / elapsed);
    report.entry_latency_ms = latency(&latencies.borrow());
    if let (Some(a), Some(b)) = (cpu_before, cpu) {
        report.server_cpu_us_per_entry = Some((b - a) * 1e6 / args.entrants.max(1) as f64);
    }
    // The frozen list's count, once the window closes and the draw is made.
    let mut count = None;
    for _ in 0..(args.entry_window_secs * 2 + 40) {
        let g = get_json(&args.node, &format!("/v1/giveaways/{giveaway_id}"), agency).await?;
        if let Some(n) = g["entry_count"].as_i64() {
            count = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.entry_count_reported = count;
    if count != Some(accepted as i64) {
        report.failures.push(format!(
            "{accepted} entries accepted, the giveaway counts {count:?}"
        ));
    }
    if accepted != args.entrants {
        report.failures.push(format!(
            "{} of {} entrants not entered",
            args.entrants - accepted,
            args.entrants
        ));
    }
    Ok(())
}

fn latency(us: &[u64]) -> Option<Percentiles> {
    if us.is_empty() {
        return None;
    }
    let mut h = histogram(true);
    for v in us {
        let _ = h.record((*v).max(1));
    }
    Some(Percentiles::of(&h))
}

fn print_summary(r: &Report) {
    let ms = |p: &Option<Percentiles>| {
        p.as_ref()
            .map(|p| {
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    p.p50_ms, p.p99_ms, p.max_ms
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "live run {} on {} (calibration {:.0} ms)",
        r.run, r.node, r.calibration_ms
    );
    println!(
        "auction storm {:.1} s: {} bids sent, {} accepted ({:.0}/s), {:.0} answered/s, refused {:?}, transport errors {}",
        r.storm_secs, r.bids_sent, r.bids_accepted, r.accepted_per_sec, r.answered_per_sec, r.bids_refused, r.bid_errors
    );
    println!(
        "  bid latency {}; server CPU {} µs/bid; {} extensions; hammer {:?}; bid log {} bids",
        ms(&r.bid_latency_ms),
        r.server_cpu_us_per_bid
            .map(|v| format!("{v:.0}"))
            .unwrap_or("-".into()),
        r.extensions_seen,
        r.hammer_minor,
        r.bid_log_len
    );
    if r.giveaway_id.is_some() {
        println!(
            "giveaway: {} of {} entered ({:.0}/s), errors {:?}; entry latency {}; server CPU {} µs/entry",
            r.entries_accepted,
            r.entries_sent,
            r.entries_per_sec.unwrap_or(0.0),
            r.entry_errors,
            ms(&r.entry_latency_ms),
            r.server_cpu_us_per_entry
                .map(|v| format!("{v:.0}"))
                .unwrap_or("-".into())
        );
    }
    println!(
        "checks: {}",
        if r.failures.is_empty() {
            "pass".to_string()
        } else {
            format!("{:?}", r.failures)
        }
    );
}
