//! This node's sockets by user, for notices: the relay's frames (from the
//! node's one subscriber) go to the sockets of their user here, in scope,
//! once per notice id per socket.
//!
//! A std `Mutex` guards the map and each socket's inbox: both are held for a
//! few map operations and never across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::event::Frame;
use crate::send_queue::SendQueue;

/// One socket as notices see it.
pub(crate) struct Inbox {
    pub client_id: u64,
    pub room: Uuid,
    queue: Arc<SendQueue>,
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    /// Notice ids already queued to this socket.
    seen: HashSet<i64>,
    /// The highest of them.
    last: i64,
    /// While the socket's join backlog is read from Postgres, live notices
    /// wait here so the socket gets everything in id order.
    held: Option<Vec<(i64, Arc<Frame>)>>,
}

impl Inbox {
    pub fn new(client_id: u64, room: Uuid, queue: Arc<SendQueue>) -> Self {
        Inbox {
            client_id,
            room,
            queue,
            state: Mutex::new(InboxState {
                held: Some(Vec::new()),
                ..InboxState::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers a live notice; true if it was queued now.
    fn offer(&self, id: i64, frame: &Arc<Frame>) -> bool {
        let mut state = self.lock();
        if state.seen.contains(&id) {
            return false;
        }
        if let Some(held) = state.held.as_mut() {
            held.push((id, frame.clone()));
            return false;
        }
        state.queue_one(&self.queue, id, frame)
    }

    /// Ends the join: the backlog and the notices held meanwhile, in id
    /// order, each once. Returns the ids queued from each.
    pub fn finish_join(&self, backlog: Vec<(i64, Arc<Frame>)>) -> (Vec<i64>, Vec<i64>) {
        let mut state = self.lock();
        let held = state.held.take().unwrap_or_default();
        let from_backlog: HashSet<i64> = backlog.iter().map(|(id, _)| *id).collect();
        let mut all: Vec<(i64, Arc<Frame>)> = backlog.into_iter().chain(held).collect();
        all.sort_by_key(|(id, _)| *id);
        let (mut joined, mut live) = (Vec::new(), Vec::new());
        for (id, frame) in all {
            if state.queue_one(&self.queue, id, &frame) {
                if from_backlog.contains(&id) {
                    joined.push(id);
                } else {
                    live.push(id);
                }
            }
        }
        (joined, live)
    }

    /// The highest notice id this socket got.
    fn last(&self) -> i64 {
        self.lock().last
    }
}

impl InboxState {
    fn queue_one(&mut self, queue: &SendQueue, id: i64, frame: &Arc<Frame>) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.last = self.last.max(id);
        // Notices ride the control lane: never dropped; a socket too slow to
        // take one is closed as slow and resumes with `notices_after`.
        queue.push(frame, None, false).is_ok()
    }
}

/// The sockets of this node, by user.
#[derive(Default)]
pub(crate) struct NoticeRouter {
    users: Mutex<HashMap<String, Vec<Arc<Inbox>>>>,
}

impl NoticeRouter {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Inbox>>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, user: &str, inbox: Arc<Inbox>) {
        self.lock().entry(user.to_string()).or_default().push(inbox);
    }

    pub fn remove(&self, user: &str, client_id: u64) {
        let mut users = self.lock();
        if let Some(inboxes) = users.get_mut(user) {
            inboxes.retain(|i| i.client_id != client_id);
            if inboxes.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Queues a notice to the user's sockets in scope (`room` `None`: all);
    /// returns how many got it now.
    pub fn deliver(&self, user: &str, room: Option<Uuid>, id: i64, frame: &Arc<Frame>) -> usize {
        let inboxes: Vec<Arc<Inbox>> = match self.lock().get(user) {
            Some(inboxes) => inboxes.clone(),
            None => return 0,
        };
        inboxes
            .iter()
            .filter(|i| room.is_none_or(|r| r == i.room))
            .filter(|i| i.offer(id, frame))
            .count()
    }

    /// Each local user with the lowest last id of their sockets: where a
    /// catch-up after a gap in the live feed starts.
    pub fn positions(&self) -> (Vec<String>, Vec<i64>) {
        self.lock()
            .iter()
            .map(|(user, inboxes)| {
                let low = inboxes.iter().map(|i| i.last()).min().unwrap_or(0);
                (user.clone(), low)
            })
            .unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Lane;

    fn frame(id: i64) -> Arc<Frame> {
        Arc::new(Frame {
            offset: 0,
            lane: Lane::Control,
            from: None,
            ts_ms: 0,
            text: format!("n{id}").into(),
        })
    }

    fn drained(queue: &SendQueue) -> Vec<String> {
        let mut out = Vec::new();
        queue.drain(100, &mut out);
        out.iter().map(|f| f.text.as_str().to_string()).collect()
    }

    #[test]
    fn live_notices_wait_for_the_join_backlog_and_come_out_in_order_once() {
        let queue = Arc::new(SendQueue::new(10_000));
        let room = Uuid::new_v4();
        let router = NoticeRouter::default();
        let inbox = Arc::new(Inbox::new(1, room, queue.clone()));
        router.add("u", inbox.clone());
        assert_eq!(router.deliver("u", None, 3, &frame(3)), 0, "held during the join");
        let (joined, live) = inbox.finish_join(vec![(1, frame(1)), (3, frame(3)), (2, frame(2))]);
        assert_eq!((joined, live), (vec![1, 2, 3], vec![]));
        assert_eq!(router.deliver("u", None, 3, &frame(3)), 0, "a repeat is skipped");
        assert_eq!(router.deliver("u", Some(room), 4, &frame(4)), 1);
        assert_eq!(
            router.deliver("u", Some(Uuid::new_v4()), 5, &frame(5)),
            0,
            "another room's"
        );
        assert_eq!(router.deliver("v", None, 6, &frame(6)), 0, "another user's");
        assert_eq!(drained(&queue), ["n1", "n2", "n3", "n4"]);
        router.remove("u", 1);
        assert_eq!(router.deliver("u", None, 7, &frame(7)), 0);
        assert!(router.positions().0.is_empty());
    }
}
