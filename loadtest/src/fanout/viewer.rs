//! Viewers: a group of sockets in one process that connect with bounded
//! concurrency and retries, then read every frame, check offsets and
//! sequence numbers, and time our events from their scheduled send time.
//!
//! Everything runs on one thread (a `LocalSet`): state is shared with `Rc`
//! and `RefCell`, borrowed only between awaits, so nothing contends.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hawker_core::Role;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::frame::{Lane, Parser, Received};
use super::recorder::{Recorder, RecorderData};
use crate::common::clock;
use crate::common::stats::{histogram, HistData};
use crate::common::ws::{self, Greeting, Minter, Node, Ws};

/// Events per lane in one run at most: each receiver keeps one bit per event.
pub const MAX_PLANNED: u64 = 2_000_000;

/// What a group of viewers needs to know; sent to worker processes as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupConfig {
    pub run: String,
    pub session: Uuid,
    /// The rooms of the run (`--rooms`; empty: `session` alone). Viewer `i`
    /// watches room [`room_of`]`(i, nodes, rooms)`.
    #[serde(default)]
    pub rooms: Vec<Uuid>,
    pub jwt_secret: String,
    pub nodes: Vec<Node>,
    /// Global index of this group's first viewer; viewer `i` uses node `i % nodes.len()`.
    pub first: u64,
    pub count: u64,
    pub connect_concurrency: usize,
    pub connect_retries: u32,
    pub connect_timeout_ms: u64,
    /// Upper bounds of the sequence numbers (anything above is not ours).
    pub host_planned: u64,
    pub chat_planned: u64,
    pub hosts: u32,
    pub chatters: u32,
    /// Viewers of the whole run (notice `g` goes to viewer `g % viewers_total`).
    #[serde(default)]
    pub viewers_total: u64,
    /// Upper bound of the notices one viewer gets (0: no notices in this run).
    #[serde(default)]
    pub notice_planned: u64,
}

/// Sent while the group runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupProgress {
    pub connected: u64,
    pub failed: u64,
    /// Every viewer connected or gave up.
    pub settled: bool,
    pub deliveries: u64,
    pub disconnects: u64,
    /// The drain after the end command is over; the viewers stay connected
    /// until told to close, so the servers' CPU in the window does not hold
    /// their closing.
    #[serde(default)]
    pub drained: bool,
}

/// What the publisher managed to publish: sequence numbers `0..total`
/// except those whose publish failed (error frame or no ack).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sent {
    pub host_total: u64,
    pub host_failed: Vec<u64>,
    pub chat_total: u64,
    pub chat_failed: Vec<u64>,
    /// Private notices: `0..notice_total`, notice `g` for viewer `g % viewers`
    /// (its `g / viewers`-th), except those whose batch failed.
    #[serde(default)]
    pub notice_total: u64,
    #[serde(default)]
    pub notice_failed: Vec<u64>,
}

/// `mask` without the sequence numbers of other rooms: of `total`, room
/// `room` of `rooms` has those `≡ room (mod rooms)`.
fn in_room(mut mask: Mask, total: u64, room: usize, rooms: usize) -> Mask {
    if rooms > 1 {
        for seq in 0..total {
            if seq % rooms as u64 != room as u64 {
                let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                if mask.words[word] & bit != 0 {
                    mask.words[word] &= !bit;
                    mask.len -= 1;
                }
            }
        }
    }
    mask
}

/// The room viewer `index` watches: (index / nodes) % rooms, so that each
/// room has viewers on every node (viewer `i` is on node `i % nodes`).
pub fn room_of(index: u64, nodes: usize, rooms: usize) -> usize {
    ((index / nodes.max(1) as u64) % rooms.max(1) as u64) as usize
}

impl Sent {
    pub fn host_mask(&self) -> Mask {
        Mask::new(self.host_total, &self.host_failed)
    }

    /// The host events of room `room` of `rooms`: host socket `j` hosts room
    /// `j % rooms` and sends sequence numbers `j, j + hosts, …`, and `rooms`
    /// divides `hosts`, so room `r` has the sequence numbers `≡ r (mod rooms)`.
    pub fn host_mask_in(&self, room: usize, rooms: usize) -> Mask {
        in_room(self.host_mask(), self.host_total, room, rooms)
    }

    /// [`Sent::host_mask_in`] for every room.
    pub fn host_masks(&self, rooms: usize) -> Vec<Mask> {
        (0..rooms.max(1)).map(|r| self.host_mask_in(r, rooms)).collect()
    }

    pub fn chat_mask(&self) -> Mask {
        Mask::new(self.chat_total, &self.chat_failed)
    }

    /// The chat of every room, as [`Sent::host_masks`]: chatter `j` is in
    /// room `j % rooms`, and `rooms` divides the chatters.
    pub fn chat_masks(&self, rooms: usize) -> Vec<Mask> {
        (0..rooms.max(1))
            .map(|r| in_room(self.chat_mask(), self.chat_total, r, rooms))
            .collect()
    }

    /// The notices viewer `index` of `viewers` should have, by its own count `k`.
    pub fn notice_mask(&self, index: u64, viewers: u64) -> Mask {
        if viewers == 0 || index >= viewers {
            return Mask::new(0, &[]);
        }
        let count = self.notice_total / viewers + u64::from(index < self.notice_total % viewers);
        let failed: Vec<u64> = self
            .notice_failed
            .iter()
            .filter(|g| *g % viewers == index)
            .map(|g| g / viewers)
            .collect();
        Mask::new(count, &failed)
    }
}

/// The set of sequence numbers a receiver should have, as a bitset.
pub struct Mask {
    words: Vec<u64>,
    pub len: u64,
}

impl Mask {
    fn new(total: u64, failed: &[u64]) -> Self {
        let mut words = vec![u64::MAX; total.div_ceil(64) as usize];
        if total % 64 != 0 {
            if let Some(last) = words.last_mut() {
                *last = (1u64 << (total % 64)) - 1;
            }
        }
        let mut len = total;
        for &seq in failed {
            if let Some(word) = words.get_mut((seq / 64) as usize) {
                if *word & (1 << (seq % 64)) != 0 {
                    *word &= !(1 << (seq % 64));
                    len -= 1;
                }
            }
        }
        Mask { words, len }
    }
}

/// Tells the group the publisher is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndCommand {
    pub sent: Sent,
    /// How long to wait for stragglers at most.
    pub drain_ms: u64,
}

/// One lane's delivery accounting, summed over viewers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaneCounts {
    /// Σ over viewers of the events published in this lane.
    pub expected: u64,
    /// Σ over viewers of distinct published events received.
    pub received: u64,
    /// expected − received (for chat this includes thinned and dropped chat).
    pub missing: u64,
    pub duplicates: u64,
    /// Received after a later event of the same sender.
    pub out_of_order: u64,
    /// Marked events with a sequence number we never planned.
    pub unexpected: u64,
    /// Viewers that missed at least one event of this lane.
    pub viewers_missing: u64,
}

impl LaneCounts {
    pub fn add(&mut self, other: &LaneCounts) {
        self.expected += other.expected;
        self.received += other.received;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.viewers_missing += other.viewers_missing;
    }
}

/// A group's result; workers send it to the coordinator as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupResult {
    pub viewers: u64,
    pub connected: u64,
    pub connect_failed: u64,
    /// Attempts beyond the first, over all viewers.
    pub connect_retries: u64,
    /// Connect time (TCP + upgrade + welcome), microseconds.
    pub connect_us: HistData,
    /// From the first connect attempt to the last viewer settled.
    pub connect_wall_ms: u64,
    pub host: LaneCounts,
    pub chat: LaneCounts,
    /// Private notices, each viewer against its own.
    #[serde(default)]
    pub notices: LaneCounts,
    /// Notices of ours that reached a socket of another user (must be 0).
    #[serde(default)]
    pub notices_misrouted: u64,
    /// A room event whose offset was not above the previous one.
    pub offset_regressions: u64,
    pub garbled: u64,
    /// Sockets closed by the server or the network during the run.
    pub disconnects: u64,
    pub reconnects: u64,
    pub reconnect_failures: u64,
    /// `reset` frames received (a gap the server could not fill).
    pub resets: u64,
    pub error_frames: u64,
    /// Close codes received, by code.
    pub closes: BTreeMap<String, u64>,
    pub frames: u64,
    pub bytes: u64,
    /// Frames that carried one of our events, and their bytes.
    pub marked_frames: u64,
    pub marked_bytes: u64,
    pub other_events: u64,
    pub recorder: RecorderData,
}

impl GroupResult {
    pub fn add(&mut self, other: &GroupResult) {
        self.viewers += other.viewers;
        self.connected += other.connected;
        self.connect_failed += other.connect_failed;
        self.connect_retries += other.connect_retries;
        self.connect_us.0.extend_from_slice(&other.connect_us.0);
        self.connect_wall_ms = self.connect_wall_ms.max(other.connect_wall_ms);
        self.host.add(&other.host);
        self.chat.add(&other.chat);
        self.notices.add(&other.notices);
        self.notices_misrouted += other.notices_misrouted;
        self.offset_regressions += other.offset_regressions;
        self.garbled += other.garbled;
        self.disconnects += other.disconnects;
        self.reconnects += other.reconnects;
        self.reconnect_failures += other.reconnect_failures;
        self.resets += other.resets;
        self.error_frames += other.error_frames;
        for (code, n) in &other.closes {
            *self.closes.entry(code.clone()).or_insert(0) += n;
        }
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.marked_frames += other.marked_frames;
        self.marked_bytes += other.marked_bytes;
        self.other_events += other.other_events;
    }
}

/// Which sequence numbers one receiver saw in one lane.
#[derive(Default)]
struct Track {
    bits: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    /// Last sequence number per sender: order holds per sending socket.
    last: Vec<Option<u64>>,
}

impl Track {
    fn new(senders: u32) -> Self {
        Track {
            last: vec![None; senders as usize],
            ..Track::default()
        }
    }

    /// Marks `seq` from `sender`; true the first time.
    fn see(&mut self, seq: u64, sender: u32, planned: u64) -> bool {
        if seq >= planned {
            self.unexpected += 1;
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        self.bits[word] |= bit;
        self.distinct += 1;
        if let Some(last) = self.last.get_mut(sender as usize) {
            if last.is_some_and(|l| seq < l) {
                self.out_of_order += 1;
            }
            *last = Some(last.map_or(seq, |l| l.max(seq)));
        }
        true
    }

    fn counts(&self, mask: &Mask) -> LaneCounts {
        let received: u64 = mask
            .words
            .iter()
            .zip(&self.bits)
            .map(|(m, b)| u64::from((m & b).count_ones()))
            .sum();
        LaneCounts {
            expected: mask.len,
            received,
            missing: mask.len - received,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            unexpected: self.unexpected,
            viewers_missing: u64::from(received < mask.len),
        }
    }
}

/// One socket's view of the room.
#[derive(Default)]
pub struct Receiver {
    host: Track,
    chat: Track,
    notices: Track,
    /// Our viewer number (`u64::MAX` for a sender's socket): notices for any
    /// other number are misrouted.
    pub index: u64,
    /// The room (of `--rooms`) this socket is in.
    pub room: usize,
    misrouted: u64,
    epoch: String,
    offset: u64,
    offset_regressions: u64,
    garbled: u64,
    resets: u64,
    error_frames: u64,
    frames: u64,
    bytes: u64,
    marked_frames: u64,
    marked_bytes: u64,
    other_events: u64,
}

/// What every receiver of a process shares.
pub struct Shared {
    pub parser: Parser,
    pub recorder: RefCell<Recorder>,
    pub host_planned: u64,
    pub chat_planned: u64,
    /// Notices one viewer gets at most.
    pub notice_planned: u64,
}

impl Receiver {
    pub fn new(greeting: &Greeting, hosts: u32, chatters: u32) -> Self {
        Receiver {
            host: Track::new(hosts),
            chat: Track::new(chatters),
            notices: Track::new(1),
            index: u64::MAX,
            epoch: greeting.epoch.clone(),
            offset: greeting.offset,
            ..Receiver::default()
        }
    }

    /// Accounts one text frame; `measure` records latencies.
    pub fn on_frame(&mut self, shared: &Shared, frame: &[u8], measure: bool) {
        self.frames += 1;
        self.bytes += frame.len() as u64;
        match shared.parser.parse(frame) {
            Received::Marked {
                offset,
                lane,
                seq,
                sender,
                scheduled_us,
            } => {
                self.offset_seen(offset);
                self.marked_frames += 1;
                self.marked_bytes += frame.len() as u64;
                let new = match lane {
                    Lane::Host => self.host.see(seq, sender, shared.host_planned),
                    Lane::Chat => self.chat.see(seq, sender, shared.chat_planned),
                };
                if new && measure {
                    let now = clock::now_us();
                    shared.recorder.borrow_mut().record(lane, scheduled_us, now);
                }
            }
            Received::Notice {
                k,
                viewer,
                scheduled_us,
            } => {
                self.marked_frames += 1;
                self.marked_bytes += frame.len() as u64;
                if viewer != self.index {
                    self.misrouted += 1;
                } else if self.notices.see(k, 0, shared.notice_planned) && measure {
                    // A notices run sends no host events: notice latencies
                    // use the host histograms (the report names them).
                    let now = clock::now_us();
                    shared.recorder.borrow_mut().record(Lane::Host, scheduled_us, now);
                }
            }
            Received::Other { offset } => {
                self.offset_seen(offset);
                self.other_events += 1;
            }
            Received::Control(bytes) => self.on_control(bytes),
            Received::Garbled => self.garbled += 1,
        }
    }

    fn offset_seen(&mut self, offset: u64) {
        if offset <= self.offset {
            self.offset_regressions += 1;
        } else {
            self.offset = offset;
        }
    }

    fn on_control(&mut self, bytes: &[u8]) {
        let Ok(greeting) = serde_json::from_slice::<Greeting>(bytes) else {
            self.garbled += 1;
            return;
        };
        match greeting.kind.as_str() {
            "reset" => {
                self.resets += 1;
                self.epoch = greeting.epoch;
                self.offset = greeting.offset;
            }
            "error" => self.error_frames += 1,
            _ => {}
        }
    }

    /// `epoch:offset` to resume from.
    pub fn position(&self) -> (String, u64) {
        (self.epoch.clone(), self.offset)
    }

    pub fn host_distinct(&self) -> u64 {
        self.host.distinct
    }

    pub fn notices_distinct(&self) -> u64 {
        self.notices.distinct
    }

    /// Adds this receiver's notice counts to `result`, against its own notices.
    pub fn account_notices(&self, result: &mut GroupResult, notices: &Mask) {
        result.notices.add(&self.notices.counts(notices));
    }

    /// Adds this receiver's counts to `result`, against what was published.
    pub fn account(&self, result: &mut GroupResult, host: &Mask, chat: &Mask) {
        result.host.add(&self.host.counts(host));
        result.chat.add(&self.chat.counts(chat));
        result.notices_misrouted += self.misrouted;
        result.offset_regressions += self.offset_regressions;
        result.garbled += self.garbled;
        result.resets += self.resets;
        result.error_frames += self.error_frames;
        result.frames += self.frames;
        result.bytes += self.bytes;
        result.marked_frames += self.marked_frames;
        result.marked_bytes += self.marked_bytes;
        result.other_events += self.other_events;
    }
}

/// Per-viewer bookkeeping kept outside the viewer's task.
struct Slot {
    /// The viewer's number in the run.
    index: u64,
    /// Its room (of `--rooms`) and that room's session.
    room: usize,
    session: Uuid,
    receiver: RefCell<Option<Receiver>>,
    failed: Cell<bool>,
}

/// Counters the group reports as progress.
struct Counters {
    connected: Cell<u64>,
    failed: Cell<u64>,
    retries: Cell<u64>,
    disconnects: Cell<u64>,
    reconnects: Cell<u64>,
    reconnect_failures: Cell<u64>,
    closes: RefCell<BTreeMap<String, u64>>,
    connect_us: RefCell<hdrhistogram::Histogram<u64>>,
}

struct Context {
    config: GroupConfig,
    shared: Rc<Shared>,
    counters: Counters,
    connect_gate: Semaphore,
    stop: watch::Receiver<bool>,
}

/// Runs a group until `end` arrives and the stragglers are in (or the drain
/// deadline passes); reports progress through `progress`. Call inside a `LocalSet`.
pub async fn run_group(
    config: GroupConfig,
    progress: watch::Sender<GroupProgress>,
    end: oneshot::Receiver<EndCommand>,
    close: oneshot::Receiver<()>,
) -> anyhow::Result<GroupResult> {
    // A worker reads this from its stdin: check it as input.
    if config.nodes.is_empty() || config.count > 200_000 || config.hosts > 5000 || config.chatters > 5000 {
        anyhow::bail!("a group needs 1+ nodes, at most 200,000 viewers, 5,000 hosts and 5,000 chatters");
    }
    if config.host_planned > MAX_PLANNED || config.chat_planned > MAX_PLANNED {
        anyhow::bail!("at most {MAX_PLANNED} events per lane");
    }
    let minter = Minter::new(&config.jwt_secret);
    let mut tokens = Vec::with_capacity(config.count as usize);
    for i in config.first..config.first + config.count {
        tokens.push(minter.token(&format!("lt{}v{i}", config.run), Role::Viewer, None)?);
    }
    let shared = Rc::new(Shared {
        parser: Parser::new(&config.run),
        recorder: RefCell::new(Recorder::default()),
        host_planned: config.host_planned,
        chat_planned: config.chat_planned,
        notice_planned: config.notice_planned,
    });
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Rc::new(Context {
        connect_gate: Semaphore::new(config.connect_concurrency.max(1)),
        counters: Counters {
            connected: Cell::new(0),
            failed: Cell::new(0),
            retries: Cell::new(0),
            disconnects: Cell::new(0),
            reconnects: Cell::new(0),
            reconnect_failures: Cell::new(0),
            closes: RefCell::new(BTreeMap::new()),
            connect_us: RefCell::new(histogram(true)),
        },
        shared,
        stop,
        config,
    });
    let started = Instant::now();
    let mut slots = Vec::with_capacity(tokens.len());
    let mut tasks = Vec::with_capacity(tokens.len());
    let rooms = ctx.config.rooms.len().max(1);
    for (k, token) in tokens.into_iter().enumerate() {
        let index = ctx.config.first + k as u64;
        let node = ctx.config.nodes[(index % ctx.config.nodes.len() as u64) as usize].clone();
        let room = room_of(index, ctx.config.nodes.len(), rooms);
        let slot = Rc::new(Slot {
            index,
            room,
            session: ctx.config.rooms.get(room).copied().unwrap_or(ctx.config.session),
            receiver: RefCell::new(None),
            failed: Cell::new(false),
        });
        slots.push(slot.clone());
        tasks.push(tokio::task::spawn_local(viewer(ctx.clone(), node, token, slot)));
    }

    // Connect phase, then the run, reporting as we go.
    let mut end = end;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut connect_wall_ms = 0;
    let command = loop {
        tokio::select! {
            command = &mut end => break command.ok(),
            _ = ticker.tick() => {}
        }
        let c = &ctx.counters;
        let settled = c.connected.get() + c.failed.get() >= ctx.config.count;
        if settled && connect_wall_ms == 0 {
            connect_wall_ms = started.elapsed().as_millis() as u64;
        }
        progress.send_replace(GroupProgress {
            connected: c.connected.get(),
            failed: c.failed.get(),
            settled,
            deliveries: ctx.shared.recorder.borrow().deliveries,
            disconnects: c.disconnects.get(),
            drained: false,
        });
    };

    let sent = command.as_ref().map(|c| c.sent.clone()).unwrap_or_default();
    if let Some(command) = &command {
        // Drain: until every connected viewer has every published host
        // event, or the deadline. Chat may be thinned, so it gets a short grace.
        let deadline = Instant::now() + Duration::from_millis(command.drain_ms);
        let want: Vec<u64> = sent.host_masks(rooms).iter().map(|m| m.len).collect();
        let total = ctx.config.viewers_total;
        let want_notices: Vec<u64> = slots
            .iter()
            .map(|s| sent.notice_mask(s.index, total).len)
            .collect();
        while Instant::now() < deadline {
            let complete = slots.iter().zip(&want_notices).all(|(s, notices)| {
                s.failed.get()
                    || s.receiver.borrow().as_ref().is_some_and(|r| {
                        r.host_distinct() >= want[s.room] && r.notices_distinct() >= *notices
                    })
            });
            if complete {
                tokio::time::sleep(Duration::from_millis(500).min(deadline - Instant::now())).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        progress.send_modify(|p| p.drained = true);
        let _ = close.await;
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    let (host, chat) = (sent.host_masks(rooms), sent.chat_masks(rooms));
    let c = &ctx.counters;
    let mut result = GroupResult {
        viewers: ctx.config.count,
        connected: c.connected.get(),
        connect_failed: c.failed.get(),
        connect_retries: c.retries.get(),
        connect_us: HistData::of(&c.connect_us.borrow()),
        connect_wall_ms,
        disconnects: c.disconnects.get(),
        reconnects: c.reconnects.get(),
        reconnect_failures: c.reconnect_failures.get(),
        closes: c.closes.borrow().clone(),
        recorder: ctx.shared.recorder.borrow().data(),
        ..GroupResult::default()
    };
    for slot in &slots {
        if let Some(receiver) = slot.receiver.borrow().as_ref() {
            receiver.account(&mut result, &host[slot.room], &chat[slot.room]);
            receiver.account_notices(
                &mut result,
                &sent.notice_mask(slot.index, ctx.config.viewers_total),
            );
        }
    }
    Ok(result)
}

/// One viewer: connect (retrying), read until stopped, resume after a drop.
async fn viewer(ctx: Rc<Context>, node: Node, token: String, slot: Rc<Slot>) {
    let config = &ctx.config;
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let mut stop = ctx.stop.clone();
    let mut socket = {
        let Ok(_permit) = ctx.connect_gate.acquire().await else {
            return;
        };
        let mut attempt = 0;
        loop {
            let began = clock::now_us();
            match ws::open(&node, slot.session, &token, None, timeout).await {
                Ok((socket, greeting)) => {
                    let took = clock::now_us().saturating_sub(began).max(1);
                    ctx.counters.connect_us.borrow_mut().saturating_record(took);
                    let mut receiver = Receiver::new(&greeting, config.hosts, config.chatters);
                    receiver.index = slot.index;
                    receiver.room = slot.room;
                    *slot.receiver.borrow_mut() = Some(receiver);
                    ctx.counters.connected.set(ctx.counters.connected.get() + 1);
                    break socket;
                }
                Err(e) if attempt < config.connect_retries => {
                    attempt += 1;
                    ctx.counters.retries.set(ctx.counters.retries.get() + 1);
                    if attempt == 1 {
                        note_once(&format!("viewer connect failed, retrying: {e:#}"));
                    }
                    let backoff = Duration::from_millis(100 * (1 << attempt.min(5)));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    note_once(&format!("viewer gave up connecting: {e:#}"));
                    slot.failed.set(true);
                    ctx.counters.failed.set(ctx.counters.failed.get() + 1);
                    return;
                }
            }
        }
    };
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            message = socket.next() => message,
        };
        let close_code = match message {
            Some(Ok(Message::Text(text))) => {
                if let Some(receiver) = slot.receiver.borrow_mut().as_mut() {
                    receiver.on_frame(&ctx.shared, text.as_bytes(), true);
                }
                continue;
            }
            Some(Ok(Message::Close(frame))) => frame.map(|f| u16::from(f.code)).unwrap_or(1005),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => 1006,
        };
        // The server or the network dropped us: resume from our position.
        let c = &ctx.counters;
        c.disconnects.set(c.disconnects.get() + 1);
        *c.closes.borrow_mut().entry(close_code.to_string()).or_insert(0) += 1;
        match reconnect(&ctx, &node, &token, &slot, &mut stop).await {
            Some(next) => socket = next,
            None => return,
        }
    }
    let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "load test over".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Close(Some(close)))).await;
}

async fn reconnect(
    ctx: &Context,
    node: &Node,
    token: &str,
    slot: &Slot,
    stop: &mut watch::Receiver<bool>,
) -> Option<Ws> {
    let timeout = Duration::from_millis(ctx.config.connect_timeout_ms);
    for attempt in 0..=ctx.config.connect_retries {
        if *stop.borrow() {
            return None;
        }
        let position = slot.receiver.borrow().as_ref().map(Receiver::position);
        let resume = position.as_ref().map(|(e, o)| (e.as_str(), *o));
        match ws::open(node, slot.session, token, resume, timeout).await {
            Ok((socket, greeting)) => {
                let c = &ctx.counters;
                c.reconnects.set(c.reconnects.get() + 1);
                if let Some(receiver) = slot.receiver.borrow_mut().as_mut() {
                    if greeting.kind != "resumed" {
                        receiver.resets += 1;
                    }
                    receiver.epoch = greeting.epoch;
                    if greeting.kind != "resumed" {
                        receiver.offset = greeting.offset;
                    }
                }
                return Some(socket);
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt.min(4)))).await;
            }
        }
    }
    let c = &ctx.counters;
    c.reconnect_failures.set(c.reconnect_failures.get() + 1);
    None
}

/// Connect problems are printed once per viewer at most, and only the first
/// few per process, so 10,000 refusals do not flood the terminal.
fn note_once(message: &str) {
    thread_local! {
        static PRINTED: Cell<u32> = const { Cell::new(0) };
    }
    PRINTED.with(|printed| {
        if printed.get() < 5 {
            printed.set(printed.get() + 1);
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            parser: Parser::new("r"),
            recorder: RefCell::new(Recorder::default()),
            host_planned: 100,
            chat_planned: 100,
            notice_planned: 10,
        }
    }

    fn event(offset: u64, kind: &str, text: &str) -> String {
        format!("{{\"offset\":{offset},\"epoch\":\"e\",\"type\":\"{kind}\",\"ts\":1,\"data\":{{\"text\":\"{text}\"}}}}")
    }

    #[test]
    fn losses_duplicates_and_reordering_are_counted_against_what_was_published() {
        let shared = shared();
        let greeting = Greeting {
            kind: "welcome".into(),
            epoch: "e".into(),
            offset: 10,
        };
        let mut r = Receiver::new(&greeting, 1, 2);
        let host = |seq| crate::fanout::frame::event_text("r", Lane::Host, seq, 0, 5, 40);
        r.on_frame(&shared, event(11, "host.announcement", &host(0)).as_bytes(), true);
        r.on_frame(&shared, event(13, "host.announcement", &host(2)).as_bytes(), true);
        r.on_frame(&shared, event(12, "host.announcement", &host(1)).as_bytes(), true);
        r.on_frame(&shared, event(13, "host.announcement", &host(2)).as_bytes(), true);
        let chat = |seq, who| crate::fanout::frame::event_text("r", Lane::Chat, seq, who, 5, 40);
        r.on_frame(&shared, event(14, "chat", &chat(0, 0)).as_bytes(), true);
        r.on_frame(&shared, event(15, "chat", &chat(3, 1)).as_bytes(), true);
        let sent = Sent {
            host_total: 4,
            host_failed: vec![],
            chat_total: 4,
            chat_failed: vec![2],
            ..Sent::default()
        };
        let mut result = GroupResult::default();
        r.account(&mut result, &sent.host_mask(), &sent.chat_mask());
        assert_eq!(
            (result.host.expected, result.host.received, result.host.missing),
            (4, 3, 1)
        );
        assert_eq!((result.host.duplicates, result.host.out_of_order), (1, 1));
        assert_eq!(result.offset_regressions, 2);
        assert_eq!(
            (result.chat.expected, result.chat.received, result.chat.missing),
            (3, 2, 1)
        );
        assert_eq!(shared.recorder.borrow().deliveries, 5);
    }

    #[test]
    fn each_viewer_is_held_to_its_own_notices_and_anothers_count_as_misrouted() {
        let shared = shared();
        let greeting = Greeting {
            kind: "welcome".into(),
            epoch: "e".into(),
            offset: 10,
        };
        let mut r = Receiver::new(&greeting, 1, 1);
        r.index = 1;
        let notice = |k, viewer| {
            let text = crate::fanout::frame::notice_text("r", k, viewer, 5, 40);
            format!(
                "{{\"type\":\"notice\",\"id\":1,\"kind\":\"lt.notice\",\"data\":{{\"text\":\"{text}\"}}}}"
            )
        };
        r.on_frame(&shared, notice(0, 1).as_bytes(), true);
        r.on_frame(&shared, notice(0, 1).as_bytes(), true);
        r.on_frame(&shared, notice(0, 2).as_bytes(), true);
        // 7 notices over 3 viewers: viewer 1 gets g = 1 and 4 (k = 0, 1); g = 4 failed.
        let sent = Sent {
            notice_total: 7,
            notice_failed: vec![4],
            ..Sent::default()
        };
        assert_eq!(sent.notice_mask(0, 3).len, 3);
        let mut result = GroupResult::default();
        r.account(&mut result, &sent.host_mask(), &sent.chat_mask());
        r.account_notices(&mut result, &sent.notice_mask(1, 3));
        assert_eq!(
            (
                result.notices.expected,
                result.notices.received,
                result.notices.duplicates
            ),
            (1, 1, 1)
        );
        assert_eq!(result.notices_misrouted, 1);
        r.account_notices(
            &mut result,
            &Sent {
                notice_total: 7,
                ..Sent::default()
            }
            .notice_mask(1, 3),
        );
        assert_eq!(result.notices.missing, 1, "k = 1 never came");
        assert_eq!(shared.recorder.borrow().deliveries, 1);
    }

    #[test]
    fn each_room_expects_the_chat_of_its_own_chatters_only() {
        let sent = Sent {
            chat_total: 7,
            chat_failed: vec![4],
            ..Sent::default()
        };
        let masks = sent.chat_masks(3);
        // Room 1 has sequence numbers 1 and 4; 4 failed, so only 1 is due.
        assert_eq!(masks.iter().map(|m| m.len).collect::<Vec<_>>(), vec![3, 1, 2]);
        assert_eq!(sent.chat_masks(1)[0].len, 6);
    }

    #[test]
    fn rooms_have_viewers_on_every_node_and_their_own_host_events() {
        // 3 nodes, 60 rooms: viewers 0..3 in room 0 (one per node), 3..6 in room 1.
        assert_eq!(
            (0..7).map(|i| room_of(i, 3, 60)).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1, 2]
        );
        assert_eq!(room_of(180, 3, 60), 0);
        let sent = Sent {
            host_total: 10,
            host_failed: vec![4],
            ..Sent::default()
        };
        // Room 1 of 3 has 1, 4, 7; 4 failed.
        let mask = sent.host_mask_in(1, 3);
        assert_eq!((mask.len, mask.words[0]), (2, (1 << 1) | (1 << 7)));
        assert_eq!(sent.host_masks(3).iter().map(|m| m.len).sum::<u64>(), 9);
        assert_eq!(sent.host_mask_in(0, 1).len, 9);
    }

    #[test]
    fn masks_drop_failed_publishes_once() {
        let mask = Mask::new(130, &[3, 3, 129, 500]);
        assert_eq!(mask.len, 128);
        assert_eq!(mask.words.len(), 3);
        assert_eq!(mask.words[2], 0b1);
    }
}
