//! Periodic work on a shared grid. Each background task of a node (the
//! hub's tick, the schedulers, the relays, the announcers) wakes on its own
//! timer; on a node with nothing to do, those wake-ups are most of its CPU.
//! [`interval`] starts every timer on a multiple of its own period, counted
//! from one instant per process, so timers whose periods divide one another
//! (100, 200, 250, 1000 ms) fall due in the same millisecond and the
//! runtime wakes once for all of them.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The instant every grid counts from (the first call's).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The first multiple of `period` after `now`, counted from `origin`.
fn next_on_grid(origin: Instant, now: Instant, period: Duration) -> Instant {
    let period_ns = period.as_nanos().max(1);
    let since = now.saturating_duration_since(origin).as_nanos();
    let steps = since / period_ns + 1;
    let offset = u64::try_from(steps.saturating_mul(period_ns)).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset)
}

/// A timer that ticks every `period`, on the grid of `period`: its first
/// tick is the next multiple of `period` since the process's first timer
/// (not at once). A tick missed because the task was busy is skipped, so
/// the timer stays on the grid.
pub fn interval(period: Duration) -> Interval {
    let period = period.max(Duration::from_millis(1));
    let mut timer = tokio::time::interval_at(next_on_grid(origin(), Instant::now(), period), period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
    timer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_whose_periods_divide_one_another_fall_due_together() {
        let origin = Instant::now();
        let now = origin + Duration::from_millis(1234);
        let a = next_on_grid(origin, now, Duration::from_millis(100));
        let b = next_on_grid(origin, now, Duration::from_millis(200));
        let c = next_on_grid(origin, now, Duration::from_millis(250));
        assert_eq!(a - origin, Duration::from_millis(1300));
        assert_eq!(b - origin, Duration::from_millis(1400));
        assert_eq!(c - origin, Duration::from_millis(1250));
        // Every second tick of the 100 ms timer is one of the 200 ms timer's.
        assert_eq!((b - a).as_millis() % 100, 0);
        // Exactly on the grid: the next one, not now.
        let on = origin + Duration::from_millis(1400);
        assert_eq!(
            next_on_grid(origin, on, Duration::from_millis(200)) - origin,
            Duration::from_millis(1600)
        );
    }
}
