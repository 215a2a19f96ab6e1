//! Latency recording of the fan-out viewers: one histogram for the whole run
//! per lane and one per second of *scheduled* send time (for the plot), in a
//! form that worker processes can send to the coordinator and it can merge.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::frame::Lane;
use crate::common::stats::{histogram, HistData, MAX_US};

/// Latencies of one process's viewers.
pub struct Recorder {
    pub host: Histogram<u64>,
    pub chat: Histogram<u64>,
    /// By scheduled second (Unix seconds): host and chat.
    pub per_second: BTreeMap<u64, (Histogram<u64>, Histogram<u64>)>,
    /// Deliveries by the second they arrived (Unix seconds).
    pub arrivals: BTreeMap<u64, u64>,
    pub deliveries: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            host: histogram(true),
            chat: histogram(true),
            per_second: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            deliveries: 0,
        }
    }
}

impl Recorder {
    pub fn record(&mut self, lane: Lane, scheduled_us: u64, now_us: u64) {
        // A frame can only arrive after it was scheduled; 1 µs is the floor.
        let latency = now_us.saturating_sub(scheduled_us).clamp(1, MAX_US);
        let second = self
            .per_second
            .entry(scheduled_us / 1_000_000)
            .or_insert_with(|| (histogram(false), histogram(false)));
        match lane {
            Lane::Host => {
                self.host.saturating_record(latency);
                second.0.saturating_record(latency);
            }
            Lane::Chat => {
                self.chat.saturating_record(latency);
                second.1.saturating_record(latency);
            }
        }
        *self.arrivals.entry(now_us / 1_000_000).or_insert(0) += 1;
        self.deliveries += 1;
    }

    pub fn data(&self) -> RecorderData {
        RecorderData {
            host: HistData::of(&self.host),
            chat: HistData::of(&self.chat),
            per_second: self
                .per_second
                .iter()
                .map(|(s, (h, c))| (*s, (HistData::of(h), HistData::of(c))))
                .collect(),
            arrivals: self.arrivals.clone(),
        }
    }

    pub fn merge(&mut self, data: &RecorderData) {
        data.host.add_to(&mut self.host);
        data.chat.add_to(&mut self.chat);
        for (second, (h, c)) in &data.per_second {
            let entry = self
                .per_second
                .entry(*second)
                .or_insert_with(|| (histogram(false), histogram(false)));
            h.add_to(&mut entry.0);
            c.add_to(&mut entry.1);
        }
        for (second, n) in &data.arrivals {
            *self.arrivals.entry(*second).or_insert(0) += n;
            self.deliveries += n;
        }
    }
}

/// A [`Recorder`] in transit from a worker process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecorderData {
    pub host: HistData,
    pub chat: HistData,
    pub per_second: BTreeMap<u64, (HistData, HistData)>,
    pub arrivals: BTreeMap<u64, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::stats::Percentiles;

    #[test]
    fn merged_recorders_keep_every_sample_and_its_bucket() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 0..1000u64 {
            a.record(Lane::Host, 10_000_000, 10_000_000 + 1000 + i);
            b.record(Lane::Chat, 11_000_000, 11_000_000 + 50_000);
        }
        a.merge(&b.data());
        assert_eq!(a.host.len(), 1000);
        assert_eq!(a.chat.len(), 1000);
        assert_eq!(a.per_second.len(), 2);
        assert_eq!(a.deliveries, 2000);
        let p = Percentiles::of(&a.chat);
        assert!((p.p99_ms - 50.0).abs() < 0.1, "{p:?}");
        let h = Percentiles::of(&a.host);
        assert!(h.max_ms >= 1.99 && h.p50_ms >= 1.4, "{h:?}");
    }

    #[test]
    fn early_arrivals_count_as_one_microsecond() {
        let mut r = Recorder::default();
        r.record(Lane::Host, 2_000_000, 1_000_000);
        assert_eq!(r.host.max(), 1);
    }
}
