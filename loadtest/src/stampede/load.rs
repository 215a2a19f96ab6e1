//! One phase of purchase attempts: T generator threads (each a
//! current-thread runtime) with C connections between them, open-loop at a
//! target rate (latency from the scheduled send time, so a stalled server
//! shows up as latency, not as fewer attempts) or closed-loop as fast as the
//! connections go (latency from the send). With several deals, connection
//! c sells deal c mod N (`deals::deal_of_connection`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::deals::{deal_of_connection, Target};
use crate::common::clock;
use crate::common::http1::{has_string_field, string_field, Conn};
use crate::common::stats::histogram;
use crate::common::ws::{self, Node};

/// How purchases travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `POST /v1/deals/{id}/orders` over HTTP/1.1 keep-alive; any buyer on any connection.
    Http,
    /// `deal.buy` on the room socket; one buyer per socket, one command in flight.
    Socket,
}

/// Live counters the coordinator prints while a phase runs.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub committed: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

#[derive(Clone)]
pub struct PhaseConfig {
    pub run: String,
    /// `127.0.0.1:port` of the node's public listener.
    pub addr: String,
    /// The deals on sale, each in its session; connection c sells deal c mod N.
    pub targets: Arc<Vec<Target>>,
    /// At most this many attempts at each deal (its share of `max_attempts`,
    /// so that a deal whose answers come faster does not take the others'
    /// attempts); `None`: only `max_attempts` bounds them.
    pub per_deal_attempts: Option<u64>,
    pub transport: Transport,
    /// Attempts per second (open loop); `None`: as fast as the connections go.
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    /// Unix µs of the first scheduled attempt (open loop) or of the start.
    pub start_us: u64,
    pub duration: Duration,
    pub max_attempts: u64,
    /// Global index of this phase's first attempt: idempotency key = `<run>-<index>`.
    pub first_attempt: u64,
    /// The phase's buyers are `buyers.start + index % buyers.len()` (indexes into `tokens`).
    pub buyers: std::ops::Range<u64>,
    pub quantity: i32,
    pub timeout: Duration,
    /// Signed buyer tokens; buyer `i` is user `st<run>b<i>`.
    pub tokens: Arc<Vec<String>>,
    pub progress: Arc<Progress>,
}

impl PhaseConfig {
    fn buyer(&self, index: u64) -> u64 {
        let count = self.buyers.end.saturating_sub(self.buyers.start).max(1);
        (self.buyers.start + index % count).min((self.tokens.len() as u64).saturating_sub(1))
    }

    /// The deal connection `slot` sells, as its index and its target.
    fn target(&self, slot: usize) -> Option<(usize, Target)> {
        let d = deal_of_connection(slot, self.targets.len());
        self.targets.get(d).map(|t| (d, *t))
    }
}

/// A 201: the order, its buyer (index into the tokens) and the deal (index
/// into the phase's targets) it was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub order: Uuid,
    pub buyer: u64,
    pub deal: usize,
}

/// Counts of one second.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    pub committed: u64,
    pub rejected: u64,
    pub errors: u64,
}

/// What one phase (or one thread of it) saw.
pub struct PhaseResult {
    /// Latency of every answered attempt (µs).
    pub all: Histogram<u64>,
    pub committed: Histogram<u64>,
    pub rejected: Histogram<u64>,
    /// How late the generator sent, against the schedule (open loop only).
    pub send_lag: Histogram<u64>,
    /// Latency by second of scheduled (or send) time, since `start_us`.
    pub latency_by_second: BTreeMap<u64, Histogram<u64>>,
    /// Outcomes by second of completion, since `start_us`.
    pub counts_by_second: BTreeMap<u64, Counts>,
    /// `created`, or the error code of a refusal (`sold_out`, `cap_exceeded`, …).
    pub codes: BTreeMap<String, u64>,
    /// Failures that are not a business answer: transport, timeouts, 5xx.
    pub errors: BTreeMap<String, u64>,
    pub attempts: u64,
    /// Every 201, with the deal it was for.
    pub acks: Vec<Ack>,
    /// Outcomes by deal (index into the phase's targets).
    pub per_deal: Vec<Counts>,
    pub last_done_us: u64,
    pub connects: u64,
}

impl PhaseResult {
    pub(super) fn new() -> Self {
        PhaseResult {
            all: histogram(true),
            committed: histogram(true),
            rejected: histogram(true),
            send_lag: histogram(true),
            latency_by_second: BTreeMap::new(),
            counts_by_second: BTreeMap::new(),
            codes: BTreeMap::new(),
            errors: BTreeMap::new(),
            attempts: 0,
            acks: Vec::new(),
            per_deal: Vec::new(),
            last_done_us: 0,
            connects: 0,
        }
    }

    pub fn merge(&mut self, o: PhaseResult) {
        let _ = self.all.add(&o.all);
        let _ = self.committed.add(&o.committed);
        let _ = self.rejected.add(&o.rejected);
        let _ = self.send_lag.add(&o.send_lag);
        for (s, h) in o.latency_by_second {
            let _ = self
                .latency_by_second
                .entry(s)
                .or_insert_with(|| histogram(false))
                .add(&h);
        }
        for (s, c) in o.counts_by_second {
            let e = self.counts_by_second.entry(s).or_default();
            e.committed += c.committed;
            e.rejected += c.rejected;
            e.errors += c.errors;
        }
        for (k, v) in o.codes {
            *self.codes.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.attempts += o.attempts;
        self.acks.extend(o.acks);
        if self.per_deal.len() < o.per_deal.len() {
            self.per_deal.resize(o.per_deal.len(), Counts::default());
        }
        for (mine, theirs) in self.per_deal.iter_mut().zip(o.per_deal) {
            mine.committed += theirs.committed;
            mine.rejected += theirs.rejected;
            mine.errors += theirs.errors;
        }
        self.last_done_us = self.last_done_us.max(o.last_done_us);
        self.connects += o.connects;
    }

    pub fn committed_count(&self) -> u64 {
        self.codes.get("created").copied().unwrap_or(0)
    }

    pub fn rejected_count(&self) -> u64 {
        self.codes
            .iter()
            .filter(|(k, _)| k.as_str() != "created")
            .map(|(_, v)| v)
            .sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// One attempt and its outcome: latency from its scheduled time (open
    /// loop, with the send lag apart) or from its send.
    fn record(
        &mut self,
        config: &PhaseConfig,
        deal: usize,
        scheduled_us: u64,
        sent_us: u64,
        outcome: Outcome,
    ) {
        self.attempts += 1;
        if self.per_deal.len() <= deal {
            self.per_deal.resize(deal + 1, Counts::default());
        }
        let by_deal = &mut self.per_deal[deal];
        match &outcome {
            Outcome::Created(..) => by_deal.committed += 1,
            Outcome::Refused(_) => by_deal.rejected += 1,
            Outcome::Failed(_) => by_deal.errors += 1,
        }
        let from_us = if config.rate.is_some() {
            self.send_lag
                .saturating_record(sent_us.saturating_sub(scheduled_us).max(1));
            scheduled_us
        } else {
            sent_us
        };
        let (start_us, progress) = (config.start_us, &config.progress);
        let now = clock::now_us();
        let latency = now.saturating_sub(from_us).max(1);
        let done_second = now.saturating_sub(start_us) / 1_000_000;
        let counts = self.counts_by_second.entry(done_second).or_default();
        self.last_done_us = self.last_done_us.max(now);
        match outcome {
            Outcome::Created(order, buyer) => {
                counts.committed += 1;
                self.committed.saturating_record(latency);
                self.acks.push(Ack { order, buyer, deal });
                *self.codes.entry("created".to_string()).or_default() += 1;
                progress.committed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused(code) => {
                counts.rejected += 1;
                self.rejected.saturating_record(latency);
                *self.codes.entry(code).or_default() += 1;
                progress.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(what) => {
                counts.errors += 1;
                *self.errors.entry(what).or_default() += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.all.saturating_record(latency);
        self.latency_by_second
            .entry(from_us.saturating_sub(start_us) / 1_000_000)
            .or_insert_with(|| histogram(false))
            .saturating_record(latency);
    }
}

enum Outcome {
    Created(Uuid, u64),
    Refused(String),
    Failed(String),
}

thread_local! {
    /// Connects in flight per generator thread: thousands of simultaneous
    /// SYNs overflow the server's accept queue, and a dropped handshake costs
    /// a retransmission of a second or more.
    static CONNECTS: Rc<tokio::sync::Semaphore> = Rc::new(tokio::sync::Semaphore::new(32));
}

/// Runs a phase on `config.threads` threads and merges what they saw.
pub async fn run_phase(config: &PhaseConfig) -> anyhow::Result<PhaseResult> {
    let threads = config.threads.max(1);
    // Attempts each deal has taken, across the threads (for `per_deal_attempts`).
    let taken: Arc<Vec<AtomicU64>> = Arc::new(config.targets.iter().map(|_| AtomicU64::new(0)).collect());
    let mut waiting = Vec::new();
    for t in 0..threads {
        let (tx, rx) = oneshot::channel();
        let config = config.clone();
        let taken = taken.clone();
        std::thread::Builder::new()
            .name(format!("stampede-{t}"))
            .spawn(move || {
                let result = (|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    Ok(local.block_on(&runtime, run_thread(config, taken, t, threads)))
                })();
                let _ = tx.send(result);
            })?;
        waiting.push(rx);
    }
    let mut total = PhaseResult::new();
    for rx in waiting {
        let result: anyhow::Result<PhaseResult> = rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread died")));
        total.merge(result?);
    }
    Ok(total)
}

/// Thread `t` of `threads`: attempts `t, t + threads, …` of the phase.
async fn run_thread(
    config: PhaseConfig,
    taken: Arc<Vec<AtomicU64>>,
    t: usize,
    threads: usize,
) -> PhaseResult {
    let config = Rc::new(config);
    let next = Rc::new(Cell::new(0u64));
    let result = Rc::new(RefCell::new(PhaseResult::new()));
    // Connections of this thread: an even share.
    let mine = config.connections / threads + usize::from(t < config.connections % threads);
    let mut tasks = Vec::new();
    for c in 0..mine {
        let (config, next, result, taken) = (config.clone(), next.clone(), result.clone(), taken.clone());
        let slot = c * threads + t;
        let Some((d, target)) = config.target(slot) else {
            *result
                .borrow_mut()
                .errors
                .entry("no deal to sell".to_string())
                .or_default() += 1;
            continue;
        };
        tasks.push(tokio::task::spawn_local(async move {
            let lane = Lane {
                t: t as u64,
                threads: threads as u64,
                deal: d,
                target,
                taken: &taken[d],
            };
            match config.transport {
                Transport::Http => http_connection(&config, &lane, &next, &result).await,
                Transport::Socket => socket_connection(&config, slot as u64, &lane, &next, &result).await,
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    match Rc::try_unwrap(result) {
        Ok(cell) => cell.into_inner(),
        Err(shared) => std::mem::replace(&mut *shared.borrow_mut(), PhaseResult::new()),
    }
}

/// The next attempt of this thread, with the µs it is scheduled at (or is
/// sent at, in a closed loop); `None` when the phase is over.
async fn next_attempt(config: &PhaseConfig, next: &Cell<u64>, t: u64, threads: u64) -> Option<(u64, u64)> {
    if config.rate.is_none() && clock::now_us() < config.start_us {
        // In a closed loop a connection opened early waits for the window:
        // the rate is counted from `start_us`, so an attempt sent before it
        // would count its answer in the first second without its time. It
        // waits before taking its attempt's number: the thread's other
        // connections take theirs meanwhile (`next` is the thread's).
        tokio::time::sleep_until(clock::instant_at(config.start_us).into()).await;
    }
    let k = next.get();
    let i = k * threads + t;
    let end_us = config.start_us + config.duration.as_micros() as u64;
    if i >= config.max_attempts || config.progress.stop.load(Ordering::Relaxed) {
        return None;
    }
    let scheduled = match config.rate {
        Some(rate) => {
            let at = config.start_us + (i as f64 * 1e6 / rate) as u64;
            if at >= end_us {
                return None;
            }
            next.set(k + 1);
            if at > clock::now_us() {
                tokio::time::sleep_until(clock::instant_at(at).into()).await;
            }
            at
        }
        None => {
            let now = clock::now_us();
            if now >= end_us {
                return None;
            }
            next.set(k + 1);
            now
        }
    };
    Some((i, scheduled))
}

/// What one connection works on: its thread's share of the attempts, and its deal.
struct Lane<'a> {
    t: u64,
    threads: u64,
    /// Index of the deal into the phase's targets.
    deal: usize,
    target: Target,
    /// Attempts the deal has taken so far in this phase, across threads.
    taken: &'a AtomicU64,
}

/// [`next_attempt`] for a connection of `lane.deal`, within the deal's share
/// of the phase when it has one (`None` once it is spent).
async fn next_attempt_for(config: &PhaseConfig, lane: &Lane<'_>, next: &Cell<u64>) -> Option<(u64, u64)> {
    let Some(share) = config.per_deal_attempts else {
        return next_attempt(config, next, lane.t, lane.threads).await;
    };
    if lane.taken.fetch_add(1, Ordering::Relaxed) >= share {
        return None;
    }
    let attempt = next_attempt(config, next, lane.t, lane.threads).await;
    if attempt.is_none() {
        // The phase is over for this thread: the deal's other connections may still use it.
        lane.taken.fetch_sub(1, Ordering::Relaxed);
    }
    attempt
}

async fn http_connection(
    config: &PhaseConfig,
    lane: &Lane<'_>,
    next: &Cell<u64>,
    result: &RefCell<PhaseResult>,
) {
    let mut conn = Conn::new(&config.addr);
    let body = format!("{{\"quantity\":{}}}", config.quantity);
    let mut request = Vec::with_capacity(768);
    // Keep-alive connections are open before the first attempt: connection
    // set-up (and a SYN retried after a full accept queue) is not a purchase.
    let connecting = CONNECTS.with(|c| c.clone());
    let permit = connecting.acquire().await;
    let connected = conn.connect().await;
    drop(permit);
    if let Err(e) = connected {
        *result
            .borrow_mut()
            .errors
            .entry(format!("connect: {e:#}"))
            .or_default() += 1;
    }
    while let Some((i, scheduled)) = next_attempt_for(config, lane, next).await {
        let index = config.first_attempt + i;
        let buyer = config.buyer(index);
        request.clear();
        let _ = write!(
            request,
            "POST /v1/deals/{}/orders HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Idempotency-Key: {}-{index}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            lane.target.deal,
            config.addr,
            config.tokens[buyer as usize],
            config.run,
            body.len(),
        );
        let sent = clock::now_us();
        config.progress.sent.fetch_add(1, Ordering::Relaxed);
        let outcome = match conn.exchange(&request, config.timeout).await {
            Ok(answer) => match answer.status {
                201 => match string_field(answer.body, "order_id").and_then(|s| Uuid::parse_str(s).ok()) {
                    Some(order) => Outcome::Created(order, buyer),
                    None => Outcome::Failed("201 without an order_id".to_string()),
                },
                400..=499 => Outcome::Refused(string_field(answer.body, "error").unwrap_or("?").to_string()),
                status => Outcome::Failed(format!(
                    "http_{status}:{}",
                    string_field(answer.body, "error").unwrap_or("?")
                )),
            },
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        result
            .borrow_mut()
            .record(config, lane.deal, scheduled, sent, outcome);
    }
    result.borrow_mut().connects += conn.reconnects;
}

/// One socket = one buyer (`slot % buyers`) in its deal's session room; one `deal.buy` in flight.
async fn socket_connection(
    config: &PhaseConfig,
    slot: u64,
    lane: &Lane<'_>,
    next: &Cell<u64>,
    result: &RefCell<PhaseResult>,
) {
    let buyer = config.buyer(slot);
    let node = match Node::parse(&format!("ws://{}", config.addr)) {
        Ok(n) => n,
        Err(e) => {
            *result.borrow_mut().errors.entry(format!("{e:#}")).or_default() += 1;
            return;
        }
    };
    let connecting = CONNECTS.with(|c| c.clone());
    let permit = connecting.acquire().await;
    // A buyer reads one short answer at a time.
    let opened = ws::open_with_buffer(
        &node,
        lane.target.session,
        &config.tokens[buyer as usize],
        None,
        Duration::from_secs(10),
        2048,
    )
    .await;
    drop(permit);
    let mut socket = match opened {
        Ok((socket, _)) => socket,
        Err(e) => {
            *result
                .borrow_mut()
                .errors
                .entry(format!("connect: {e:#}"))
                .or_default() += 1;
            return;
        }
    };
    result.borrow_mut().connects += 1;
    while let Some((i, scheduled)) = next_attempt_for(config, lane, next).await {
        let index = config.first_attempt + i;
        let id = index.to_string();
        let command = format!(
            "{{\"id\":\"{id}\",\"type\":\"deal.buy\",\"data\":{{\"deal_id\":\"{}\",\"idempotency_key\":\"{}-{index}\",\"quantity\":{}}}}}",
            lane.target.deal, config.run, config.quantity
        );
        let sent = clock::now_us();
        config.progress.sent.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            socket.send(Message::text(command)).await?;
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let bytes = text.as_bytes();
                        if !has_string_field(bytes, "id", &id) {
                            continue; // a room event (stock, presence, …)
                        }
                        return anyhow::Ok(
                            if string_field(bytes, "type") == Some("ack")
                                || bytes.starts_with(b"{\"type\":\"ack\"")
                            {
                                match string_field(bytes, "order_id").and_then(|s| Uuid::parse_str(s).ok()) {
                                    Some(order) => Outcome::Created(order, buyer),
                                    None => Outcome::Failed("ack without an order_id".to_string()),
                                }
                            } else {
                                let code = string_field(bytes, "code").unwrap_or("?");
                                if matches!(code, "unavailable" | "internal") {
                                    Outcome::Failed(format!("socket:{code}"))
                                } else {
                                    Outcome::Refused(code.to_string())
                                }
                            },
                        );
                    }
                    Some(Ok(Message::Close(frame))) => anyhow::bail!("closed: {frame:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("closed"),
                }
            }
        };
        let (outcome, broken) = match tokio::time::timeout(config.timeout, exchange).await {
            Ok(Ok(outcome)) => (outcome, false),
            Ok(Err(e)) => (Outcome::Failed(format!("{e:#}")), true),
            Err(_) => (Outcome::Failed("timeout".to_string()), true),
        };
        result
            .borrow_mut()
            .record(config, lane.deal, scheduled, sent, outcome);
        if broken {
            break;
        }
    }
    let _ = socket.close(None).await;
}
