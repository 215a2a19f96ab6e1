//! The node's second thread, `hawker-ingest`: one runtime of its own per
//! process, with one worker, for what must not wait behind the node's
//! socket writers.
//!
//! Why: on a busy node the main runtime's run queue holds thousands of
//! socket writers, each woken by a delivery. A task woken by I/O joins the
//! back of that queue, and a task woken from another thread joins the
//! injection queue, behind the writers that overflowed a full run queue.
//! So on the main runtime a host's frame waits one full round of writers
//! to be read, and its publish's answer from Redis another. On a thread of
//! its own the work runs as soon as the OS runs that thread (it sleeps most
//! of the time, so the scheduler runs it promptly).
//!
//! What runs here:
//! - with `hub.command_thread` (on by default): every socket that may host,
//!   its reader and its writer ([`crate::connection`]), and a publisher
//!   task with a Redis connection of its own for them
//!   ([`crate::publisher`]). Measured on one saturated core (10,000 viewers
//!   × 100 events/s, docs/benchmarks.md), a host's publish delay falls to
//!   the reference server's, and viewers' p99 with it. Every room's task
//!   ([`crate::room`]) too, whoever opens the room: the fan-out here, the
//!   viewers' sockets and commands on the main runtime. With the rooms on
//!   the main runtime, 2,000 small rooms at 12,000 commands/s had three
//!   chat lines in four refused `unavailable`;
//! - with `hub.ingest_thread` (off by default): the Redis subscriber tasks
//!   and their connections. Measured when rooms still ran where they were
//!   opened, viewers' median latency rose (a room it woke waited in the
//!   main runtime's injection queue); with the rooms here too it changed
//!   nothing measurable at 2,000 rooms × 12,000 commands/s. Hence off.
//!
//! The runtime lives for the whole process and is shared by every hub in
//! it (tests start many); a task here ends when its socket, its hub or its
//! publisher's last handle does. If the thread cannot be started, tasks run
//! on the caller's runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// The process's ingest runtime, started on first use.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("hawker-ingest")
                .on_thread_start(|| HERE.with(|here| here.set(true)))
                .enable_all()
                .build()
                .map_err(
                    |e| tracing::warn!(error = %e, "no ingest thread; subscribers run on the main runtime"),
                )
                .ok()
        })
        .as_ref()
}

thread_local! {
    /// Whether this thread is the ingest runtime's.
    static HERE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs on the ingest thread.
pub(crate) fn here() -> bool {
    HERE.with(Cell::get)
}

/// Spawns `task` on the ingest thread if `own_thread` (and the thread could
/// be started), else on the current runtime.
pub(crate) fn spawn<F>(own_thread: bool, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // The thread is started only when asked for: a node with the setting
    // off never has it.
    match own_thread.then(runtime).flatten() {
        Some(runtime) => runtime.spawn(task),
        None => tokio::spawn(task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_runs_on_the_ingest_thread_and_is_awaited_from_the_callers_runtime() {
        let name = spawn(true, async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("hawker-ingest"));
        let name = spawn(false, async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_ne!(name.as_deref(), Some("hawker-ingest"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_knows_whether_it_runs_on_the_ingest_thread() {
        assert!(spawn(true, async { here() }).await.unwrap());
        assert!(!spawn(false, async { here() }).await.unwrap());
        assert!(!here());
    }
}
