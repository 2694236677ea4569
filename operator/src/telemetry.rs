//! Logging and tracing through `tracing`, set up by [`gavel_engine::telemetry`] as for every
//! Gavel server: JSON lines on stderr by default, filtered by `RUST_LOG`, and the spans
//! exported over OTLP when the `OTEL_*` variables ask for it. Each line carries the span it
//! was logged in (a reconcile's auction, generation and step; a flush batch's consumer and
//! size).

use crate::config::LogFormat;
use gavel_engine::telemetry::Telemetry;

/// Installs the global subscriber and, if configured, the OTLP export (`service.name`
/// `gavel-operator`). Fails only on a bad `OTEL_*` setting or a second installation.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    Ok(gavel_engine::telemetry::init(format, "gavel-operator")?)
}
