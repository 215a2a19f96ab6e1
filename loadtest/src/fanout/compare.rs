//! `fanout --reference`: hawker's run against the reference server's run
//! of the same invocation (same load, same generator, same pinning, minutes
//! apart), as ratios hawker / reference. The ratios, unlike the absolute
//! figures, hold from one day to the next on a shared machine.

use serde::Serialize;

use super::report::Cost;
use crate::common::out;

/// hawker / reference for each figure; `None` where the reference's is 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratios {
    pub deliveries_per_s: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub cpu_s_per_million_deliveries: Option<f64>,
    pub rss_per_viewer_socket: Option<f64>,
}

/// Both runs and their ratios, as the result's `reference` part.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub about: &'static str,
    pub reference: Cost,
    pub hawker: Cost,
    pub ratios: Ratios,
}

impl Comparison {
    pub fn new(hawker: &Cost, reference: &Cost) -> Comparison {
        Comparison {
            about: "hawker / the reference server (a bare tokio-tungstenite fan-out: no Redis, one shared \
                    frame per event, feed + one flush per drain), same load, generator and pinning, run \
                    just before; above 1 = hawker costs more or is slower, except deliveries_per_s \
                    (below 1 = hawker delivered less). At one offered load both deliver the same unless \
                    one falls behind: throughput at a latency bound needs runs at rising rates",
            reference: reference.clone(),
            hawker: hawker.clone(),
            ratios: Ratios {
                deliveries_per_s: ratio(hawker.deliveries_per_s, reference.deliveries_per_s),
                p50: ratio(hawker.p50_ms, reference.p50_ms),
                p99: ratio(hawker.p99_ms, reference.p99_ms),
                cpu_s_per_million_deliveries: ratio(
                    hawker.server_cpu_s_per_million_deliveries,
                    reference.server_cpu_s_per_million_deliveries,
                ),
                rss_per_viewer_socket: ratio(hawker.rss_bytes_per_viewer, reference.rss_bytes_per_viewer),
            },
        }
    }

    /// The summary's lines: each figure of both runs and the ratio.
    pub fn print(&self) {
        let (h, r, x) = (&self.hawker, &self.reference, &self.ratios);
        out!(
            "vs reference   run {} ({}), {} room(s), host lost {}, chat missing {}; hawker / reference:",
            r.run,
            r.json,
            r.rooms,
            r.host_lost,
            r.chat_missing
        );
        if r.rooms != h.rooms {
            out!(
                "               (not the same rooms: {} for hawker, {} for the reference)",
                h.rooms,
                r.rooms
            );
        }
        let rows = [
            (
                "deliveries/s",
                format!("{:.0} / {:.0}", h.deliveries_per_s, r.deliveries_per_s),
                x.deliveries_per_s,
            ),
            (
                "latency p50",
                format!("{:.2} / {:.2} ms", h.p50_ms, r.p50_ms),
                x.p50,
            ),
            (
                "latency p99",
                format!("{:.2} / {:.2} ms", h.p99_ms, r.p99_ms),
                x.p99,
            ),
            (
                "CPU per million",
                format!(
                    "{:.2} / {:.2} s",
                    h.server_cpu_s_per_million_deliveries, r.server_cpu_s_per_million_deliveries
                ),
                x.cpu_s_per_million_deliveries,
            ),
            (
                "RSS per viewer",
                format!("{:.0} / {:.0} B", h.rss_bytes_per_viewer, r.rss_bytes_per_viewer),
                x.rss_per_viewer_socket,
            ),
        ];
        for (name, figures, ratio) in rows {
            out!("               {name:<16} {figures:<22} {}", times(ratio));
        }
    }
}

/// `a / b`, when `b` is a positive number.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or("n/a".to_string(), |r| format!("× {r:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(per_s: f64, p50: f64, p99: f64, cpu: f64, rss: f64) -> Cost {
        Cost {
            scenario: "s".into(),
            run: "r".into(),
            deliveries: 1000,
            deliveries_per_s: per_s,
            server_cpu_s: 1.0,
            server_cpu_us_per_delivery: 1.0,
            server_cpu_s_per_million_deliveries: cpu,
            p50_ms: p50,
            p99_ms: p99,
            rss_bytes_per_viewer: rss,
            host_lost: 0,
            chat_missing: 0,
            rooms: 2000,
            json: "x.json".into(),
        }
    }

    #[test]
    fn ratios_are_hawker_over_reference_and_absent_without_a_reference_figure() {
        let hawker = cost(9000.0, 2.0, 30.0, 4.0, 6000.0);
        let reference = cost(10000.0, 1.0, 10.0, 1.0, 0.0);
        let ratios = Comparison::new(&hawker, &reference).ratios;
        assert_eq!(
            ratios,
            Ratios {
                deliveries_per_s: Some(0.9),
                p50: Some(2.0),
                p99: Some(3.0),
                cpu_s_per_million_deliveries: Some(4.0),
                rss_per_viewer_socket: None,
            }
        );
        assert_eq!(ratio(1.0, f64::NAN), None);
        assert_eq!(ratio(1.0, -2.0), None);
        assert_eq!(times(Some(2.345)), "× 2.35");
        assert_eq!(times(None), "n/a");
    }
}
