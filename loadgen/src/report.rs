//! The result of a run: printed, written as JSON, and drawn as an SVG chart.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::cpu::ProcessCpu;

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct Percentiles {
    /// How many latencies were measured.
    pub count: u64,
    /// 50th percentile (the median).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Reads the percentiles of a histogram recorded in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// The probe's latencies while the load was held.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct ProbeReport {
    /// Bid → reply over the probe's WebSocket.
    pub bid: Percentiles,
    /// `GET /healthz` on a new TCP connection → status line.
    pub health: Percentiles,
    /// Probes unanswered (5 s) or not 200.
    pub failed: u64,
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Bidder, watcher and idle connections asked for.
    pub bidders: usize,
    /// Watchers asked for.
    pub watchers: usize,
    /// Idle connections asked for.
    pub idle: usize,
    /// Auctions bid on.
    pub auctions: usize,
    /// Target rate (0 = as fast as possible).
    pub target_rate: u64,
    /// Seconds of bidding.
    pub duration_s: f64,
    /// Connections that opened and subscribed.
    pub connections_held: u64,
    /// Connections that failed to open or subscribe.
    pub connections_failed: u64,
    /// Bids sent.
    pub bids_sent: u64,
    /// Accepted bids per second over the run.
    pub accepted_per_s: f64,
    /// Accepted bids.
    pub accepted: u64,
    /// Rejections by code.
    pub rejected: BTreeMap<String, u64>,
    /// Bids never answered.
    pub unanswered: u64,
    /// Bid → reply latency.
    pub bid_result_latency: Percentiles,
    /// Bid → `price` latency seen by the timed watchers.
    pub broadcast_latency: Percentiles,
    /// `price` messages received by watchers.
    pub price_messages: u64,
    /// Events watchers never saw.
    pub events_lost: u64,
    /// Events received after a later one.
    pub events_out_of_order: u64,
    /// Close codes sent by the servers, by code.
    pub close_codes: BTreeMap<u16, u64>,
    /// Resident memory of the bid-api processes before connecting, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Resident memory once every connection was open and subscribed, KiB.
    pub server_rss_connected_kib: Option<u64>,
    /// (connected - before) / connections held, bytes.
    pub server_bytes_per_connection: Option<u64>,
    /// Accepted bids in each second of the run.
    pub accepted_timeline: Vec<u64>,
    /// Slow HTTP connections the server closed that were opened again during the run.
    pub slow_reopened: u64,
    /// The probe's latencies, with `--probe`.
    pub probe: Option<ProbeReport>,
    /// Bids answered during the bidding window (the CPU figures divide by these).
    pub cpu_bids: u64,
    /// Frames delivered during the bidding window: `price` frames and bid replies.
    pub cpu_frames: u64,
    /// CPU of each `--cpu-pids` process and of the load generator (`gavel-load`) over the
    /// bidding window, in total and per bid and per frame.
    pub cpu: BTreeMap<String, ProcessCpu>,
}

impl Report {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} connections held ({} failed), {:.1}s\n  accepted {:.0} bids/s ({} accepted, {} sent, rejected {:?}, unanswered {})\n  bid -> result   p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n",
            self.scenario,
            self.connections_held,
            self.connections_failed,
            self.duration_s,
            self.accepted_per_s,
            self.accepted,
            self.bids_sent,
            self.rejected,
            self.unanswered,
            self.bid_result_latency.p50_ms,
            self.bid_result_latency.p99_ms,
            self.bid_result_latency.p999_ms,
            self.bid_result_latency.max_ms,
        );
        if self.watchers > 0 {
            s += &format!(
                "  bid -> price   p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} price messages, lost {}, out of order {})\n",
                self.broadcast_latency.p50_ms,
                self.broadcast_latency.p99_ms,
                self.broadcast_latency.p999_ms,
                self.price_messages,
                self.events_lost,
                self.events_out_of_order,
            );
        }
        if let Some(per) = self.server_bytes_per_connection {
            s += &format!("  bid-api memory: {per} bytes per connection\n");
        }
        if let Some(p) = &self.probe {
            s += &format!(
                "  probe: bid -> result p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({} probes); GET /healthz p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; failed {}\n",
                p.bid.p50_ms,
                p.bid.p99_ms,
                p.bid.max_ms,
                p.bid.count,
                p.health.p50_ms,
                p.health.p99_ms,
                p.health.max_ms,
                p.failed,
            );
        }
        if !self.cpu.is_empty() {
            s += &format!(
                "  CPU over the window ({} bids, {} frames):\n",
                self.cpu_bids, self.cpu_frames
            );
            let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
            for (name, c) in &self.cpu {
                s += &format!(
                    "    {name:<12} {:>6.1}% of a core  {:>7} µs/bid  {:>6} µs/frame\n",
                    c.core_percent,
                    opt(c.us_per_bid),
                    opt(c.us_per_frame),
                );
            }
        }
        if !self.close_codes.is_empty() {
            s += &format!("  close codes from the servers: {:?}\n", self.close_codes);
        }
        s
    }

    /// Writes `<dir>/<scenario>.json` and `<dir>/<scenario>.svg`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{}.json", self.scenario)),
            serde_json::to_string_pretty(self)?,
        )?;
        let svg = dir.join(format!("{}.svg", self.scenario));
        self.chart(&svg)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))
    }

    fn chart(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = self
            .accepted_timeline
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.1;
        let seconds = self.accepted_timeline.len().max(1) as u32;
        let caption = format!(
            "{}: accepted bids/s (p50 {:.2} ms, p99 {:.2} ms bid->result)",
            self.scenario, self.bid_result_latency.p50_ms, self.bid_result_latency.p99_ms
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0u32..seconds, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("accepted bids/s")
            .draw()?;
        chart.draw_series(LineSeries::new(
            self.accepted_timeline
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32, *v as f64)),
            &BLUE,
        ))?;
        root.present()?;
        Ok(())
    }
}
