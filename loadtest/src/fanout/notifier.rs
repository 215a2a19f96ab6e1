//! The notice sender of `fanout --notice-rate R`: private notices to distinct
//! viewers at R per second, notice `g` to viewer `g % V` (its `g / V`-th), in
//! batches over `POST /v1/dev/notices` (a development route: the node stores
//! each batch in one transaction with `Hub::enqueue_notice`, as the payment
//! webhook stores `order.paid`, and its relay publishes them on Redis to
//! every node). Every notice has a scheduled time fixed before the run and
//! carries it in its text; a batch leaves `--notice-batch-ms` after the
//! scheduled time of its first notice (or later, when every connection is
//! busy), so batching and any stall show up as latency.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::frame::notice_text;
use crate::common::clock;
use crate::common::http1::{string_field, Conn};
use crate::common::stats::{histogram, Percentiles};

/// Notices one request carries at most (the route's limit).
pub const MAX_BATCH: u64 = 1000;
/// The `kind` of the generator's notices.
pub const KIND: &str = "lt.notice";

pub struct NoticeConfig {
    pub run: String,
    pub session: Uuid,
    /// `127.0.0.1:port` of each node; connection `j` uses node `j % len`.
    pub addrs: Vec<String>,
    pub rate: f64,
    pub planned: u64,
    pub viewers: u64,
    pub batch_ms: u64,
    pub conns: usize,
    pub text_bytes: usize,
}

/// What the notice sender managed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoticeOutcome {
    pub planned: u64,
    /// Notices in batches the node answered 200 for.
    pub accepted: u64,
    pub batches: u64,
    pub failed_batches: u64,
    /// By error code (`http_<status>`, the body's `error`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// Notices per batch.
    pub mean_batch: f64,
    /// One request's round trip (the node's transaction included), ms.
    pub request: Percentiles,
    /// How far behind its first notice's scheduled time a batch left, at worst.
    pub max_send_lag_ms: f64,
}

struct State {
    next: Cell<u64>,
    failed: RefCell<Vec<u64>>,
    request_us: RefCell<hdrhistogram::Histogram<u64>>,
    outcome: RefCell<NoticeOutcome>,
}

/// Sends every notice on schedule from `start_us`; returns the notices whose
/// batch failed and the outcome.
pub async fn send_all(config: &NoticeConfig, start_us: u64) -> (Vec<u64>, NoticeOutcome) {
    let state = Rc::new(State {
        next: Cell::new(0),
        failed: RefCell::new(Vec::new()),
        request_us: RefCell::new(histogram(true)),
        outcome: RefCell::new(NoticeOutcome {
            planned: config.planned,
            ..NoticeOutcome::default()
        }),
    });
    let mut conns = Vec::new();
    for j in 0..config.conns.max(1) {
        let mut conn = Conn::new(&config.addrs[j % config.addrs.len()]);
        // Connected before the clock starts; a failure shows up as a failed batch.
        let _ = conn.connect().await;
        conns.push(sender(config, conn, state.clone(), start_us));
    }
    futures_util::future::join_all(conns).await;
    let mut outcome = state.outcome.borrow().clone();
    outcome.request = Percentiles::of(&state.request_us.borrow());
    if outcome.batches > 0 {
        outcome.mean_batch = outcome.planned as f64 / outcome.batches as f64;
    }
    let failed = state.failed.take();
    (failed, outcome)
}

fn scheduled_us(config: &NoticeConfig, start_us: u64, g: u64) -> u64 {
    start_us + (g as f64 * 1_000_000.0 / config.rate) as u64
}

/// One connection: takes whatever is due when it is free, one request at a time.
async fn sender(config: &NoticeConfig, mut conn: Conn, state: Rc<State>, start_us: u64) {
    let batch_wait = config.batch_ms * 1000;
    let mut request = Vec::new();
    loop {
        let next = state.next.get();
        if next >= config.planned {
            return;
        }
        let first_due = scheduled_us(config, start_us, next);
        let now = clock::now_us();
        if now < first_due + batch_wait {
            tokio::time::sleep_until(clock::instant_at(first_due + batch_wait).into()).await;
            continue;
        }
        // Everything due by now, at most a batch.
        let due = (((now - start_us) as f64 * config.rate / 1e6) as u64 + 1).min(config.planned);
        let end = due.clamp(next + 1, next + MAX_BATCH);
        state.next.set(end);
        build_request(config, start_us, next..end, &mut request);
        {
            let mut o = state.outcome.borrow_mut();
            o.max_send_lag_ms = o
                .max_send_lag_ms
                .max(now.saturating_sub(first_due) as f64 / 1000.0);
        }
        let began = clock::now_us();
        let answer = conn.exchange(&request, Duration::from_secs(10)).await;
        let error = match answer {
            Ok(a) if a.status == 200 => None,
            Ok(a) => Some(
                string_field(a.body, "error")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("http_{}", a.status)),
            ),
            Err(_) => Some("transport".to_string()),
        };
        state
            .request_us
            .borrow_mut()
            .saturating_record(clock::now_us().saturating_sub(began).max(1));
        let mut o = state.outcome.borrow_mut();
        o.batches += 1;
        match error {
            None => o.accepted += end - next,
            Some(code) => {
                o.failed_batches += 1;
                *o.errors.entry(code).or_insert(0) += 1;
                state.failed.borrow_mut().extend(next..end);
            }
        }
    }
}

/// The whole HTTP request for notices `range` (their texts are ASCII letters,
/// digits and spaces, so the JSON is written by hand).
fn build_request(config: &NoticeConfig, start_us: u64, range: std::ops::Range<u64>, out: &mut Vec<u8>) {
    let mut body = String::with_capacity(range.clone().count() * (config.text_bytes + 120) + 16);
    body.push_str("{\"notices\":[");
    for g in range {
        if !body.ends_with('[') {
            body.push(',');
        }
        let viewer = g % config.viewers.max(1);
        let text = notice_text(
            &config.run,
            g / config.viewers.max(1),
            viewer,
            scheduled_us(config, start_us, g),
            config.text_bytes,
        );
        let _ = write!(
            body,
            "{{\"user_id\":\"lt{}v{viewer}\",\"session_id\":\"{}\",\"kind\":\"{KIND}\",\"data\":{{\"text\":\"{text}\"}}}}",
            config.run, config.session
        );
    }
    body.push_str("]}");
    out.clear();
    let _ = write!(
        ByteWriter(out),
        "POST /v1/dev/notices HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body.as_bytes());
}

/// `fmt::Write` into a byte buffer.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_request_naming_each_notices_viewer_and_count() {
        let config = NoticeConfig {
            run: "r1".into(),
            session: Uuid::nil(),
            addrs: vec!["127.0.0.1:1".into()],
            rate: 1000.0,
            planned: 10,
            viewers: 3,
            batch_ms: 10,
            conns: 1,
            text_bytes: 40,
        };
        let mut request = Vec::new();
        build_request(&config, 1_000_000, 3..5, &mut request);
        let text = String::from_utf8(request).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /v1/dev/notices HTTP/1.1"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let notices = json["notices"].as_array().unwrap();
        assert_eq!(notices.len(), 2);
        // g = 3 is viewer 0's second notice (k = 1), due 3 ms after the start.
        assert_eq!(notices[0]["user_id"], "ltr1v0");
        assert!(notices[0]["data"]["text"]
            .as_str()
            .unwrap()
            .starts_with("LT r1 n 1 0 1003000 "));
        assert_eq!(notices[1]["user_id"], "ltr1v1");
    }
}
