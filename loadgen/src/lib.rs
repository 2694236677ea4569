//! Gavel's load generator: how does a hot auction's last minute hold?
//!
//! It opens real WebSocket connections to one or more bid-api servers — bidders that bid
//! as fast as they can or at a target rate, watchers that follow the live feed, idle
//! connections that only hold a subscription — and measures what users feel:
//! accepted bids per second, bid → `bid_result` latency, bid → `price` broadcast latency
//! seen by watchers, lost or reordered events, connections held, and the server's memory
//! per connection.
//!
//! - [`config`]: the command line.
//! - [`clients`]: the three kinds of connection, speaking protocol v1.
//! - [`cpu`]: CPU time of the servers and of the load generator, per bid and per frame.
//! - [`stats`]: counters and latency histograms shared by the connections.
//! - [`report`]: the JSON result and the SVG chart under `target/bench/`.
//! - [`run`]: provisioning, starting the connections, progress, collecting the result.

pub mod clients;
pub mod config;
pub mod cpu;
pub mod report;
pub mod run;
pub mod stats;
