//! Trying again until a condition holds.

use std::future::Future;
use std::time::Duration;

/// How long [`poll`] keeps trying.
#[derive(Clone, Copy, Debug)]
pub enum Patience {
    /// At most this many probes.
    Tries(u32),
    /// Until this much time has passed since the first probe.
    For(Duration),
}

/// Runs `probe` until `done` holds for its value or `patience` runs out,
/// sleeping `every` between probes; returns the last value, so the caller
/// asserts on it.
pub async fn poll<T, F, Fut>(
    patience: Patience,
    every: Duration,
    mut probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let started = tokio::time::Instant::now();
    let mut tries = 0;
    loop {
        let value = probe().await;
        tries += 1;
        if done(&value) {
            return value;
        }
        let spent = match patience {
            Patience::Tries(most) => tries >= most,
            Patience::For(within) => started.elapsed() >= within,
        };
        if spent {
            return value;
        }
        tokio::time::sleep(every).await;
    }
}
