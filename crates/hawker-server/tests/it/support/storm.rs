//! The storm tests (thousands of clients against two nodes: the auction's
//! 5,000 bidders, the giveaway's 10,000 entrants) each take both cores of a
//! small machine for a minute. Two at once starve each other's nodes until
//! joins and answers miss their deadlines, which says nothing about hawker.
//! They take this guard, so they run one after the other while the rest of
//! the suite runs beside them.

use tokio::sync::{Mutex, MutexGuard};

static STORM: Mutex<()> = Mutex::const_new(());

/// Held for the whole of one storm test.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    STORM.lock().await
}
