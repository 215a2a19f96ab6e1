//! A connection's send queue: the frames waiting to be written to its
//! socket, bounded in bytes, with priority lanes that decide what may be
//! dropped. (Not to be confused with the durable room outbox in
//! [`crate::durable`], which holds events waiting to be published.)
//!
//! The room task pushes; the connection's writer drains. A std `Mutex` is
//! right here (as in mini-redis' `db.rs`): it is held for a few pointer
//! moves and never across an `.await`. The writer is the queue's one
//! consumer, so it is woken through an `AtomicWaker` and a flag, not a
//! `Notify` (no waiter list to lock on every wake-up).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use crate::event::{Frame, Lane};

/// Why a frame did not make it into the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A droppable frame found the queue full.
    QueueFull,
    /// Chat thinning in a large room.
    Thinned,
    /// A must-deliver frame found the queue full even without chat: the
    /// connection is now closing as slow.
    Overflow,
    /// The connection is closing.
    Closed,
}

/// Why the connection must close, decided outside its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Slow,
    Banned,
    Shutdown,
    /// The session ended: the frames already queued (`session.ended`
    /// among them) are written first.
    SessionEnded,
    /// The socket's reader ended (the peer closed or went away, a read
    /// failed, the token expired): the reader says how the socket closes.
    Reader,
}

impl CloseReason {
    /// Whether the queued frames still go out before the close.
    fn drains_first(self) -> bool {
        self == CloseReason::SessionEnded
    }
}

struct Inner {
    queue: VecDeque<Arc<Frame>>,
    bytes: usize,
    close: Option<CloseReason>,
    /// Highest room offset queued; frames at or below it are duplicates.
    last_offset: u64,
    /// Chat thinning bucket: tokens and when they were last topped up.
    chat_tokens: f64,
    chat_refilled: Instant,
}

/// One connection's queue of frames to write (see the module docs).
pub struct SendQueue {
    inner: Mutex<Inner>,
    /// Something for the writer: a frame, a close or a ping.
    pending: AtomicBool,
    writer: AtomicWaker,
    max_bytes: usize,
    /// The node's ping tick asked the connection to ping its peer.
    ping_due: AtomicBool,
    /// When the peer was last heard from, in ms after `opened`.
    heard_ms: AtomicU64,
    opened: Instant,
}

impl SendQueue {
    pub fn new(max_bytes: usize) -> Self {
        SendQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                close: None,
                last_offset: 0,
                chat_tokens: 1.0,
                chat_refilled: Instant::now(),
            }),
            pending: AtomicBool::new(false),
            writer: AtomicWaker::new(),
            max_bytes,
            ping_due: AtomicBool::new(false),
            heard_ms: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }

    /// Wakes the writer.
    fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.writer.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/pop), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the room offset this connection has already been given (by a
    /// welcome snapshot or a resume), so older live frames are skipped.
    pub fn start_after(&self, offset: u64) {
        let mut inner = self.lock();
        inner.last_offset = inner.last_offset.max(offset);
    }

    /// After a reset (offsets may restart in a new epoch): frames after
    /// `offset` are new to this connection.
    pub fn reset_to(&self, offset: u64) {
        self.lock().last_offset = offset;
    }

    pub fn last_offset(&self) -> u64 {
        self.lock().last_offset
    }

    /// Queues a frame. `thin` is the chat rate per second for this room
    /// (`None` = no thinning); `own` says the frame is this viewer's own chat.
    pub fn push(&self, frame: &Arc<Frame>, thin: Option<(f64, Instant)>, own: bool) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Err(Refused::Closed);
        }
        if frame.offset != 0 {
            if frame.offset <= inner.last_offset {
                return Ok(());
            }
            inner.last_offset = frame.offset;
        }
        if frame.lane == Lane::Chat && !own {
            if let Some((rate, now)) = thin {
                let elapsed = now.saturating_duration_since(inner.chat_refilled).as_secs_f64();
                inner.chat_refilled = now;
                inner.chat_tokens = (inner.chat_tokens + elapsed * rate).min(rate.max(1.0));
                if inner.chat_tokens < 1.0 {
                    return Err(Refused::Thinned);
                }
                inner.chat_tokens -= 1.0;
            }
        }
        let len = frame.len();
        if inner.bytes + len > self.max_bytes {
            if frame.lane.droppable() {
                return Err(Refused::QueueFull);
            }
            // Make room by dropping queued chat and totals, oldest first.
            let mut kept = VecDeque::with_capacity(inner.queue.len());
            let mut bytes = 0;
            for queued in inner.queue.drain(..) {
                if !queued.lane.droppable() {
                    bytes += queued.len();
                    kept.push_back(queued);
                }
            }
            inner.queue = kept;
            inner.bytes = bytes;
            if inner.bytes + len > self.max_bytes {
                inner.close = Some(CloseReason::Slow);
                inner.queue.clear();
                inner.bytes = 0;
                drop(inner);
                self.notify();
                return Err(Refused::Overflow);
            }
        }
        inner.bytes += len;
        inner.queue.push_back(frame.clone());
        drop(inner);
        self.notify();
        Ok(())
    }

    /// Asks the connection to close: at once, or for a session's end after
    /// what is queued.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some(reason);
            if !reason.drains_first() {
                inner.queue.clear();
                inner.bytes = 0;
            }
        }
        drop(inner);
        self.notify();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// Takes up to `max` frames.
    pub fn drain(&self, max: usize, into: &mut Vec<Arc<Frame>>) -> Option<CloseReason> {
        let mut inner = self.lock();
        if let Some(reason) = inner.close {
            if !reason.drains_first() || inner.queue.is_empty() {
                return Some(reason);
            }
        }
        let n = inner.queue.len().min(max);
        for frame in inner.queue.drain(..n) {
            into.push(frame);
        }
        let taken: usize = into.iter().map(|f| f.len()).sum();
        inner.bytes = inner.bytes.saturating_sub(taken);
        None
    }

    /// Asks the connection to ping its peer (and check it is not idle).
    pub fn request_ping(&self) {
        self.ping_due.store(true, Ordering::Relaxed);
        self.notify();
    }

    /// Whether a ping was asked for since the last call.
    pub fn take_ping(&self) -> bool {
        self.ping_due.load(Ordering::Relaxed) && self.ping_due.swap(false, Ordering::Relaxed)
    }

    /// Resolves when something was pushed, or a close or a ping was
    /// requested, since it last resolved. For the queue's one writer: a
    /// second task waiting here would take the first one's place.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if self.pending.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.writer.register(cx.waker());
            if self.pending.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The peer was heard from (the reader read a frame).
    pub fn heard(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the peer was last heard from (since the queue was made,
    /// if never).
    pub fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(heard)
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, lane: Lane, size: usize) -> Arc<Frame> {
        Arc::new(Frame {
            offset,
            lane,
            from: None,
            ts_ms: 0,
            text: "x".repeat(size).into(),
        })
    }

    #[test]
    fn chat_is_dropped_when_the_queue_is_full_but_commerce_is_kept() {
        let queue = SendQueue::new(100);
        queue.push(&frame(1, Lane::Chat, 60), None, false).unwrap();
        assert_eq!(
            queue.push(&frame(2, Lane::Chat, 60), None, false),
            Err(Refused::QueueFull)
        );
        // The deal event evicts the queued chat instead of being dropped.
        queue.push(&frame(3, Lane::Commerce, 60), None, false).unwrap();
        let mut out = Vec::new();
        assert_eq!(queue.drain(10, &mut out), None);
        assert_eq!(out.iter().map(|f| f.offset).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_must_deliver_frame_that_cannot_fit_closes_the_connection_as_slow() {
        let queue = SendQueue::new(100);
        queue.push(&frame(1, Lane::Host, 60), None, false).unwrap();
        assert_eq!(
            queue.push(&frame(2, Lane::Commerce, 60), None, false),
            Err(Refused::Overflow)
        );
        assert_eq!(queue.close_reason(), Some(CloseReason::Slow));
    }

    #[test]
    fn duplicates_and_already_seen_offsets_are_skipped() {
        let queue = SendQueue::new(1000);
        queue.start_after(5);
        queue.push(&frame(5, Lane::Host, 1), None, false).unwrap();
        queue.push(&frame(6, Lane::Host, 1), None, false).unwrap();
        queue.push(&frame(6, Lane::Host, 1), None, false).unwrap();
        let mut out = Vec::new();
        queue.drain(10, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn thinning_limits_chat_per_viewer_but_never_hides_your_own() {
        let queue = SendQueue::new(100_000);
        let now = Instant::now();
        let mut delivered = 0;
        for i in 1..=50 {
            if queue
                .push(&frame(i, Lane::Chat, 10), Some((2.0, now)), false)
                .is_ok()
            {
                delivered += 1;
            }
        }
        assert!(delivered <= 2, "{delivered}");
        assert!(queue
            .push(&frame(51, Lane::Chat, 10), Some((2.0, now)), true)
            .is_ok());
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_a_push_made_before_or_while_it_waits() {
        let queue = Arc::new(SendQueue::new(1024));
        // Pushed before the writer waits: the wait returns at once.
        queue.push(&frame(1, Lane::Host, 10), None, false).unwrap();
        tokio::time::timeout(Duration::from_secs(1), queue.ready())
            .await
            .expect("a push before the wait is not lost");
        // Nothing new: the wait does not return.
        assert!(tokio::time::timeout(Duration::from_millis(50), queue.ready())
            .await
            .is_err());
        // Pushed while the writer waits: it is woken.
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.ready().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.request_ping();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a ping request wakes the waiting writer")
            .unwrap();
        assert!(queue.take_ping());
    }

    #[test]
    fn silence_is_counted_from_the_last_frame_heard() {
        let queue = SendQueue::new(1024);
        std::thread::sleep(Duration::from_millis(30));
        assert!(queue.silent_for() >= Duration::from_millis(30));
        queue.heard();
        assert!(queue.silent_for() < Duration::from_millis(30));
    }

    #[test]
    fn a_session_end_writes_what_is_queued_before_closing() {
        let queue = SendQueue::new(1024);
        queue.push(&frame(1, Lane::Host, 10), None, false).unwrap();
        queue.close(CloseReason::SessionEnded);
        assert_eq!(
            queue.push(&frame(2, Lane::Host, 10), None, false),
            Err(Refused::Closed)
        );
        let mut out = Vec::new();
        assert_eq!(queue.drain(8, &mut out), None);
        assert_eq!(out.len(), 1);
        out.clear();
        assert_eq!(queue.drain(8, &mut out), Some(CloseReason::SessionEnded));
        // Other reasons close at once, queue discarded.
        let queue = SendQueue::new(1024);
        queue.push(&frame(1, Lane::Host, 10), None, false).unwrap();
        queue.close(CloseReason::Banned);
        assert_eq!(queue.drain(8, &mut out), Some(CloseReason::Banned));
        assert!(out.is_empty());
    }
}
