//! The senders: host sockets (agency tokens of the session's agency, which
//! may host) sending `host.announce`, and chatters sending `chat.send`. Every event has a scheduled send time fixed before the run;
//! a sender that falls behind sends at once but keeps the scheduled time in
//! the event, so a stall shows up as latency instead of hiding it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hawker_core::Role;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::frame::{self, Lane};
use super::viewer::{Receiver, Sent, Shared};
use crate::common::clock;
use crate::common::stats::{histogram, Percentiles};
use crate::common::ws::{self, Minter, Node, Ws};

pub struct PublishConfig {
    pub run: String,
    pub session: Uuid,
    /// The rooms of `--rooms` (empty: `session` alone); host socket `j`
    /// hosts room `j % rooms`, and chatter `j` is in room `j % rooms`.
    pub rooms: Vec<Uuid>,
    pub agency: Uuid,
    pub jwt_secret: String,
    pub nodes: Vec<Node>,
    pub host_rate: f64,
    pub chat_rate: f64,
    pub hosts: u32,
    pub chatters: u32,
    pub host_planned: u64,
    pub chat_planned: u64,
    pub text_bytes: usize,
    pub connect_timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Acked,
    Failed,
}

/// Acks and errors, by sequence number.
struct Acks {
    host: Vec<Status>,
    chat: Vec<Status>,
    host_ack_us: hdrhistogram::Histogram<u64>,
    chat_ack_us: hdrhistogram::Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// How far behind schedule a send went out, at worst (µs).
    max_send_lag_us: u64,
    /// The schedule, to time acks: event `seq` is due at `start_us + seq / rate`.
    start_us: u64,
    host_rate: f64,
    chat_rate: f64,
}

impl Acks {
    fn pending(&self) -> usize {
        self.host
            .iter()
            .chain(&self.chat)
            .filter(|s| **s == Status::Pending)
            .count()
    }
}

/// What came back for the senders.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PublishOutcome {
    pub host_planned: u64,
    pub host_acked: u64,
    pub chat_planned: u64,
    pub chat_acked: u64,
    /// Error frames by code (`rate_limited`, `forbidden`, …) and `no_ack`.
    pub errors: BTreeMap<String, u64>,
    /// Publish round trip (scheduled send → ack), milliseconds.
    pub host_ack: Percentiles,
    pub chat_ack: Percentiles,
    pub max_send_lag_ms: f64,
}

struct Sender {
    sink: SplitSink<Ws, Message>,
    reader: JoinHandle<Receiver>,
}

/// The connected senders; their sockets also receive the room and are
/// accounted like viewers (without latency), for the chat bookkeeping.
pub struct Publishers {
    config: PublishConfig,
    hosts: Vec<Sender>,
    chatters: Vec<Sender>,
    acks: Rc<RefCell<Acks>>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl Publishers {
    /// Opens the host sockets and the chatters, spread over the nodes (the
    /// first host on the first node), so events cross nodes.
    pub async fn connect(
        config: PublishConfig,
        shared: Rc<Shared>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Publishers> {
        let minter = Minter::new(&config.jwt_secret);
        let acks = Rc::new(RefCell::new(Acks {
            host: vec![Status::Pending; config.host_planned as usize],
            chat: vec![Status::Pending; config.chat_planned as usize],
            host_ack_us: histogram(true),
            chat_ack_us: histogram(true),
            errors: BTreeMap::new(),
            max_send_lag_us: 0,
            start_us: 0,
            host_rate: config.host_rate,
            chat_rate: config.chat_rate,
        }));
        let open = |sub: String, role: Role, agency: Option<Uuid>, node: Node, room: usize| {
            let token = minter.token(&sub, role, agency);
            let (shared, acks, stop) = (shared.clone(), acks.clone(), stop.clone());
            let session = config.rooms.get(room).copied().unwrap_or(config.session);
            let timeout = config.connect_timeout;
            let (hosts, chatters) = (config.hosts, config.chatters);
            async move {
                let token = token?;
                let (socket, greeting) = ws::open(&node, session, &token, None, timeout)
                    .await
                    .with_context(|| format!("opening the socket of `{sub}` on {}", node.url))?;
                let (sink, stream) = socket.split();
                let mut receiver = Receiver::new(&greeting, hosts, chatters);
                receiver.room = room;
                let reader = tokio::task::spawn_local(read_replies(stream, receiver, shared, acks, stop));
                anyhow::Ok(Sender { sink, reader })
            }
        };
        let node = |j: u32| config.nodes[j as usize % config.nodes.len()].clone();
        let mut hosts = Vec::new();
        if config.host_planned > 0 {
            for j in 0..config.hosts {
                let who = format!("lt{}h{j}", config.run);
                let room = j as usize % config.rooms.len().max(1);
                hosts.push(open(who, Role::Agency, Some(config.agency), node(j), room).await?);
            }
        }
        let mut chatters = Vec::new();
        if config.chat_planned > 0 {
            for j in 0..config.chatters {
                let room = j as usize % config.rooms.len().max(1);
                chatters
                    .push(open(format!("lt{}c{j}", config.run), Role::Viewer, None, node(j), room).await?);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if hosts.iter().chain(&chatters).any(|s| s.reader.is_finished()) {
            anyhow::bail!("a sender's socket closed at once");
        }
        Ok(Publishers {
            config,
            hosts,
            chatters,
            acks,
        })
    }

    /// Sends every event on schedule from `start_us`, then waits (at most
    /// `ack_wait`) for the last acks. Returns what was published.
    pub async fn publish(&mut self, start_us: u64, ack_wait: Duration) -> (Sent, PublishOutcome) {
        let c = &self.config;
        self.acks.borrow_mut().start_us = start_us;
        let mut sends = Vec::new();
        let lanes = [
            (Lane::Host, &mut self.hosts, c.host_rate, c.host_planned),
            (Lane::Chat, &mut self.chatters, c.chat_rate, c.chat_planned),
        ];
        for (lane, senders, rate, planned) in lanes {
            let step = senders.len() as u64;
            for (j, sender) in senders.iter_mut().enumerate() {
                let schedule = Schedule {
                    run: c.run.clone(),
                    start_us,
                    lane,
                    rate,
                    first: j as u64,
                    step,
                    planned,
                    sender: j as u32,
                    text_bytes: c.text_bytes,
                };
                sends.push(send_all(&mut sender.sink, schedule, self.acks.clone()));
            }
        }
        futures_util::future::join_all(sends).await;
        let deadline = tokio::time::Instant::now() + ack_wait;
        while self.acks.borrow().pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut acks = self.acks.borrow_mut();
        let failed = |statuses: &mut Vec<Status>, errors: &mut BTreeMap<String, u64>| {
            let mut failed = Vec::new();
            for (seq, status) in statuses.iter_mut().enumerate() {
                if *status == Status::Pending {
                    *status = Status::Failed;
                    *errors.entry("no_ack".into()).or_insert(0) += 1;
                }
                if *status == Status::Failed {
                    failed.push(seq as u64);
                }
            }
            failed
        };
        let acks = &mut *acks;
        let host_failed = failed(&mut acks.host, &mut acks.errors);
        let chat_failed = failed(&mut acks.chat, &mut acks.errors);
        let sent = Sent {
            host_total: c.host_planned,
            chat_total: c.chat_planned,
            host_failed,
            chat_failed,
            ..Sent::default()
        };
        let outcome = PublishOutcome {
            host_planned: c.host_planned,
            host_acked: c.host_planned - sent.host_failed.len() as u64,
            chat_planned: c.chat_planned,
            chat_acked: c.chat_planned - sent.chat_failed.len() as u64,
            errors: acks.errors.clone(),
            host_ack: Percentiles::of(&acks.host_ack_us),
            chat_ack: Percentiles::of(&acks.chat_ack_us),
            max_send_lag_ms: acks.max_send_lag_us as f64 / 1000.0,
        };
        (sent, outcome)
    }

    /// Closes the senders (after `stop` was signalled) and returns their receivers.
    pub async fn finish(self) -> Vec<Receiver> {
        let mut receivers = Vec::new();
        for mut sender in self.hosts.into_iter().chain(self.chatters) {
            let _ = tokio::time::timeout(Duration::from_secs(2), sender.sink.close()).await;
            if let Ok(receiver) = sender.reader.await {
                receivers.push(receiver);
            }
        }
        receivers
    }
}

struct Schedule {
    run: String,
    start_us: u64,
    lane: Lane,
    /// Events per second of the whole lane.
    rate: f64,
    /// This sender's sequence numbers: first, first + step, … below planned.
    first: u64,
    step: u64,
    planned: u64,
    sender: u32,
    text_bytes: usize,
}

async fn send_all(sink: &mut SplitSink<Ws, Message>, s: Schedule, acks: Rc<RefCell<Acks>>) {
    let mut seq = s.first;
    while seq < s.planned {
        let scheduled_us = s.start_us + (seq as f64 * 1_000_000.0 / s.rate) as u64;
        tokio::time::sleep_until(clock::instant_at(scheduled_us).into()).await;
        let text = frame::event_text(&s.run, s.lane, seq, s.sender, scheduled_us, s.text_bytes);
        let command = match s.lane {
            Lane::Host => {
                json!({ "id": format!("h{seq}"), "type": "host.announce", "data": { "text": text } })
            }
            Lane::Chat => json!({ "id": format!("c{seq}"), "type": "chat.send", "data": { "text": text } }),
        };
        let lag = clock::now_us().saturating_sub(scheduled_us);
        {
            let mut a = acks.borrow_mut();
            a.max_send_lag_us = a.max_send_lag_us.max(lag);
        }
        if sink.send(Message::text(command.to_string())).await.is_err() {
            // The socket is gone; what is still pending counts as failed.
            return;
        }
        seq += s.step;
    }
}

async fn read_replies(
    mut stream: SplitStream<Ws>,
    mut receiver: Receiver,
    shared: Rc<Shared>,
    acks: Rc<RefCell<Acks>>,
    mut stop: watch::Receiver<bool>,
) -> Receiver {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let bytes = text.as_bytes();
                // Room events start with their offset; anything else may
                // be a reply (its keys come in any order).
                if bytes.starts_with(b"{\"offset\":") || !on_reply(bytes, &acks) {
                    receiver.on_frame(&shared, bytes, false);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    receiver
}

/// Accounts an `ack` or `error` frame; false for any other frame.
fn on_reply(bytes: &[u8], acks: &RefCell<Acks>) -> bool {
    let Ok(reply) = serde_json::from_slice::<Reply>(bytes) else {
        return false;
    };
    if reply.kind != "ack" && reply.kind != "error" {
        return false;
    }
    let mut acks = acks.borrow_mut();
    let Some(id) = reply.id.as_deref() else {
        let code = reply.code.unwrap_or_else(|| "unknown".into());
        *acks.errors.entry(code).or_insert(0) += 1;
        return true;
    };
    let (Some(lane), Some(seq)) = (id.get(..1), id.get(1..)) else {
        return true;
    };
    let Ok(seq) = seq.parse::<usize>() else {
        return true;
    };
    let ok = reply.kind == "ack";
    let acks = &mut *acks;
    let (statuses, hist, rate) = match lane {
        "h" => (&mut acks.host, &mut acks.host_ack_us, acks.host_rate),
        "c" => (&mut acks.chat, &mut acks.chat_ack_us, acks.chat_rate),
        _ => return true,
    };
    if let Some(status) = statuses.get_mut(seq) {
        *status = if ok { Status::Acked } else { Status::Failed };
    }
    if ok {
        let scheduled_us = acks.start_us + (seq as f64 * 1_000_000.0 / rate) as u64;
        hist.saturating_record(clock::now_us().saturating_sub(scheduled_us).max(1));
    } else {
        let code = reply.code.unwrap_or_else(|| "unknown".into());
        *acks.errors.entry(code).or_insert(0) += 1;
    }
    true
}
