//! Latency histograms (HDR, in microseconds), their percentiles, and a form
//! of them that worker processes can send to the coordinator and it can merge.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency kept exactly: 10 minutes, in microseconds; longer ones
/// are saturated (a run is at most a few minutes anyway).
pub const MAX_US: u64 = 600_000_000;

/// Bounds and precision are constants of this module, valid by construction.
#[allow(clippy::expect_used)]
pub fn histogram(precise: bool) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, if precise { 3 } else { 2 })
        .expect("constant histogram bounds are valid")
}

/// A histogram as `(value, count)` pairs: serializable and mergeable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistData(pub Vec<(u64, u64)>);

impl HistData {
    pub fn of(hist: &Histogram<u64>) -> Self {
        HistData(
            hist.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, hist: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = hist.record_n(value.clamp(1, MAX_US), count);
        }
    }
}

/// p50 … max of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1000.0,
        }
    }
}
