//! The ingest thread (`hub.ingest_thread`): one runtime of its own per
//! process, with one worker thread (`hawker-ingest`), for the subscriber
//! tasks and their Redis connections.
//!
//! Why: on a busy node the main runtime's run queue holds thousands of
//! socket writers, each woken by a delivery. A task woken by I/O joins the
//! back of that queue, so on the main runtime a published message would
//! wait one full round of writers before its room task saw it, on top of
//! the round the host's own frame waited. On a thread of its own the
//! subscriber reads the message as soon as the OS runs that thread (it
//! sleeps most of the time, so the scheduler runs it promptly), and the
//! room task it wakes is taken from the main runtime's injection queue,
//! which a worker checks every few dozen polls, instead of after every
//! queued writer.
//!
//! The runtime lives for the whole process and is shared by every hub in
//! it (tests start many); a subscriber task ends when its hub shuts down
//! or is dropped. If the thread cannot be started, tasks run on the
//! caller's runtime.
//!
//! Measured on one saturated core (docs/benchmarks.md), it takes a host's
//! publish delay to the reference server's, but viewers' median latency
//! rose in the same runs; the setting is off by default until that is
//! understood.

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
                .enable_all()
                .build()
                .map_err(
                    |e| tracing::warn!(error = %e, "no ingest thread; subscribers run on the main runtime"),
                )
                .ok()
        })
        .as_ref()
}

/// Spawns `task` on the ingest thread if `own_thread` (and the thread could
/// be started), else on the current runtime.
pub(super) fn spawn<F>(own_thread: bool, task: F) -> JoinHandle<F::Output>
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
}
