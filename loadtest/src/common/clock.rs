//! Microseconds since the Unix epoch, read from a monotonic clock anchored
//! once per process: a wall-clock step during a run cannot bend latencies,
//! and every process on the machine agrees to within the anchoring error
//! (a few microseconds), so a worker process can time events that the
//! coordinator scheduled.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    unix_us: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
    })
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    let a = anchor();
    a.unix_us + a.instant.elapsed().as_micros() as u64
}

/// The `Instant` at which [`now_us`] will read `unix_us`.
pub fn instant_at(unix_us: u64) -> Instant {
    let a = anchor();
    match unix_us.checked_sub(a.unix_us) {
        Some(ahead) => a.instant + Duration::from_micros(ahead),
        None => a.instant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_and_maps_back_to_instants() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
        let later = instant_at(b + 5_000);
        let d = later.saturating_duration_since(Instant::now());
        assert!(d <= Duration::from_millis(5));
    }
}
