//! The hub's counters (`hawker_hub_…` on each node's `/metrics`) over the
//! measured window.

use serde::Serialize;

use crate::common::probe::{self, sum};

/// The hub counters the report uses, summed over label sets unless a label is given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubCounters {
    pub sockets: f64,
    pub events_out: f64,
    pub bytes_out: f64,
    pub chat_thinned: f64,
    pub chat_queue_full: f64,
    pub chat_rate_limited: f64,
    pub slow_closes: f64,
    pub redis_reconnects: f64,
    pub recovery_gaps: f64,
    /// Room events a node took in (`hawker_hub_events_in_total`).
    pub events_in: f64,
    /// Samples of `hawker_hub_fanout_latency_seconds`: one per room event
    /// and, before `hawker_hub_socket_writes_total` existed, one per socket
    /// write, so the difference counted writes.
    pub fanout_latency_samples: f64,
    /// `hawker_hub_socket_writes_total` (0 on builds without it).
    pub socket_writes: f64,
}

impl HubCounters {
    pub fn parse(text: &str) -> Self {
        HubCounters {
            sockets: sum(text, "hawker_hub_sockets", None),
            events_out: sum(text, "hawker_hub_events_out_total", None),
            bytes_out: sum(text, "hawker_hub_bytes_out_total", None),
            chat_thinned: sum(text, "hawker_hub_chat_dropped_total", Some("reason=\"thinned\"")),
            chat_queue_full: sum(
                text,
                "hawker_hub_chat_dropped_total",
                Some("reason=\"queue_full\""),
            ),
            chat_rate_limited: sum(
                text,
                "hawker_hub_chat_dropped_total",
                Some("reason=\"rate_limited\""),
            ),
            slow_closes: sum(text, "hawker_hub_slow_closes_total", None),
            redis_reconnects: sum(text, "hawker_hub_redis_reconnects_total", None),
            recovery_gaps: sum(text, "hawker_hub_recovery_gaps_total", None),
            events_in: sum(text, "hawker_hub_events_in_total", None),
            fanout_latency_samples: sum(text, "hawker_hub_fanout_latency_seconds_count", None),
            socket_writes: sum(text, "hawker_hub_socket_writes_total", None),
        }
    }

    pub fn add(&mut self, o: &HubCounters) {
        self.sockets += o.sockets;
        self.events_out += o.events_out;
        self.bytes_out += o.bytes_out;
        self.chat_thinned += o.chat_thinned;
        self.chat_queue_full += o.chat_queue_full;
        self.chat_rate_limited += o.chat_rate_limited;
        self.slow_closes += o.slow_closes;
        self.redis_reconnects += o.redis_reconnects;
        self.recovery_gaps += o.recovery_gaps;
        self.events_in += o.events_in;
        self.fanout_latency_samples += o.fanout_latency_samples;
        self.socket_writes += o.socket_writes;
    }

    /// `self − before`, for counters (gauges keep their latest value).
    pub fn since(&self, before: &HubCounters) -> HubCounters {
        HubCounters {
            sockets: self.sockets,
            events_out: self.events_out - before.events_out,
            bytes_out: self.bytes_out - before.bytes_out,
            chat_thinned: self.chat_thinned - before.chat_thinned,
            chat_queue_full: self.chat_queue_full - before.chat_queue_full,
            chat_rate_limited: self.chat_rate_limited - before.chat_rate_limited,
            slow_closes: self.slow_closes - before.slow_closes,
            redis_reconnects: self.redis_reconnects - before.redis_reconnects,
            recovery_gaps: self.recovery_gaps - before.recovery_gaps,
            events_in: self.events_in - before.events_in,
            fanout_latency_samples: self.fanout_latency_samples - before.fanout_latency_samples,
            socket_writes: self.socket_writes - before.socket_writes,
        }
    }

    /// Socket writes (each one flush of a batch of frames), if the counters allow.
    pub fn writes(&self) -> Option<f64> {
        if self.socket_writes > 0.0 {
            return Some(self.socket_writes);
        }
        let writes = self.fanout_latency_samples - self.events_in;
        (writes > 0.0).then_some(writes)
    }
}

/// Reads every node's counters and sums them; nodes that do not answer are named.
pub async fn scrape(admins: &[String]) -> (HubCounters, Vec<String>) {
    let mut total = HubCounters::default();
    let mut missing = Vec::new();
    for admin in admins {
        match probe::metrics(admin).await {
            Ok(body) => total.add(&HubCounters::parse(&body)),
            Err(e) => missing.push(format!("{admin}: {e:#}")),
        }
    }
    (total, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_label_sets_or_picked_by_label() {
        let text = "# HELP x\n\
            hawker_hub_chat_dropped_total{reason=\"thinned\"} 10\n\
            hawker_hub_chat_dropped_total{reason=\"queue_full\"} 2\n\
            hawker_hub_events_out_total 1500\n\
            hawker_hub_events_out_total_other 7\n\
            hawker_hub_sockets 3\n";
        let c = HubCounters::parse(text);
        assert_eq!(c.chat_thinned, 10.0);
        assert_eq!(c.chat_queue_full, 2.0);
        assert_eq!(c.events_out, 1500.0);
        assert_eq!(c.sockets, 3.0);
    }
}
