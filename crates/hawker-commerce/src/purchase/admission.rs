//! Admission calls, grouped: while a node's admission call is under way, the
//! attempts that arrive wait, and go to Redis together once it returns — one
//! script call per deal, all deals at once. A lone attempt goes at once, so
//! an idle node adds no delay; a stampede pays one round trip and one script
//! run for many buyers instead of one each.
//!
//! Each attempt is admitted exactly as a call of its own would be (the
//! script takes them in arrival order), so grouping changes cost, not
//! outcomes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::gate::{Admission, Attempt, Gate};
use hawker_core::error::{Error, Result};

/// Most attempts in one script call: the script holds Redis for its whole
/// run (a few µs per attempt), so a bigger group is split.
const MOST_PER_CALL: usize = 256;

/// A waiting attempt gets its answer within this even if the call carrying it
/// hangs (each call is bounded by the gate's Redis timeout as well).
const WAIT_AT_MOST: Duration = Duration::from_secs(5);

/// The attempts waiting for the next admission call.
#[derive(Default)]
pub(super) struct Admissions {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A task is sending the queue's attempts (then new ones just wait).
    draining: bool,
}

struct Waiting {
    deal: Uuid,
    attempt: Attempt,
    reply: oneshot::Sender<Result<Admission>>,
}

impl Admissions {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing is left half-done under the lock, so a poisoned one is usable.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `attempt` and waits for its answer; starts the sending task if
    /// none is running.
    pub(super) async fn admit(&self, gate: &Gate, deal: Uuid, attempt: Attempt) -> Result<Admission> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push(Waiting { deal, attempt, reply });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            tokio::spawn(drain(gate.clone()));
        }
        match tokio::time::timeout(WAIT_AT_MOST, answer).await {
            Ok(Ok(admission)) => admission,
            _ => Err(Error::Unavailable { what: "redis" }),
        }
    }

    /// Everything waiting, or `None` (and the task ends) when nothing is.
    fn take(&self) -> Option<Vec<Waiting>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            queue.draining = false;
            return None;
        }
        Some(std::mem::take(&mut queue.waiting))
    }
}

/// Sends what waits, one script call per deal (and per [`MOST_PER_CALL`]),
/// all at once; then what arrived meanwhile; until nothing waits.
async fn drain(gate: Gate) {
    // Should this task end early (a panic, the runtime shutting down), the
    // next attempt starts another; without the guard every later attempt
    // would wait for a task that is gone.
    let mut guard = Draining {
        admissions: gate.admissions(),
        done: false,
    };
    while let Some(waiting) = guard.admissions.take() {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut by_deal: HashMap<Uuid, Vec<Waiting>> = HashMap::new();
        for w in waiting {
            by_deal.entry(w.deal).or_default().push(w);
        }
        let calls = by_deal.into_iter().flat_map(|(deal, mut group)| {
            let mut chunks = Vec::new();
            while group.len() > MOST_PER_CALL {
                let rest = group.split_off(MOST_PER_CALL);
                chunks.push((deal, group));
                group = rest;
            }
            chunks.push((deal, group));
            chunks
        });
        futures_util::future::join_all(calls.map(|(deal, group)| call(&gate, deal, group, now_ms))).await;
    }
    // `take` found the queue empty and cleared the flag itself.
    guard.done = true;
}

/// Clears the queue's `draining` flag if the sending task ends before
/// finding the queue empty.
struct Draining<'a> {
    admissions: &'a Admissions,
    done: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.admissions.queue().draining = false;
        }
    }
}

/// One script call for `group` (attempts on `deal`, in arrival order); each
/// attempt gets its own answer, or the call's error.
async fn call(gate: &Gate, deal: Uuid, group: Vec<Waiting>, now_ms: i64) {
    let attempts: Vec<&Attempt> = group.iter().map(|w| &w.attempt).collect();
    match gate.admit_batch(deal, &attempts, now_ms).await {
        Ok(admissions) => {
            for (w, admission) in group.into_iter().zip(admissions) {
                let _ = w.reply.send(Ok(admission));
            }
        }
        Err(error) => {
            let unavailable = matches!(error, Error::Unavailable { .. });
            if !unavailable {
                tracing::warn!(error = %error, attempts = group.len(), "admission call failed");
            }
            for w in group {
                let _ = w.reply.send(Err(if unavailable {
                    Error::Unavailable { what: "redis" }
                } else {
                    Error::Internal(anyhow::anyhow!("admission call failed"))
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sending_task_that_ends_early_lets_the_next_attempt_start_another() {
        let admissions = Admissions::default();
        admissions.queue().draining = true;
        drop(Draining {
            admissions: &admissions,
            done: false,
        });
        assert!(!admissions.queue().draining, "a task cut short clears the flag");
        admissions.queue().draining = true;
        drop(Draining {
            admissions: &admissions,
            done: true,
        });
        assert!(
            admissions.queue().draining,
            "a task that ended normally leaves the flag to whoever set it since"
        );
    }
}
