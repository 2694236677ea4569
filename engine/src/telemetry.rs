//! What the servers tell the outside about themselves, through `tracing`: log lines on
//! stderr (every binary, [`LogFormat`]) and, when the standard `OTEL_*` variables ask for
//! it, the spans exported over OTLP (HTTP/protobuf) to an OpenTelemetry collector.
//!
//! The export is off unless an OTLP endpoint is configured, so a default deployment pays
//! nothing for it. Which spans are exported is a filter of its own
//! (`GAVEL_TRACES_FILTER`): its default adds the bid-api's per-bid span, which the log
//! lines leave out at the default level.

use std::time::Duration;

use thiserror::Error;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::runtime::LogFormat;

/// The spans exported over OTLP when `GAVEL_TRACES_FILTER` is not set: every span at
/// `info` and the bid-api's `bid` span (at `debug`, so that logs do not pay for it).
pub const DEFAULT_TRACES_FILTER: &str = "info,gavel_bid_api=debug";

/// Why telemetry could not be set up (a start-up error: the binary exits with it).
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// An `OTEL_*` or `GAVEL_TRACES_FILTER` variable has a value this build cannot honour.
    #[error("{variable}={value:?}: {reason}")]
    Setting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What was expected instead.
        reason: &'static str,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Where and how spans are exported, read from the standard OpenTelemetry variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpExport {
    /// The time an export request may take (`OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT`, ms).
    pub timeout: Duration,
    /// Which spans are exported (`GAVEL_TRACES_FILTER`, `RUST_LOG` syntax).
    pub filter: String,
}

impl OtlpExport {
    /// Decides from the environment (`var` looks a variable up) whether spans are
    /// exported: yes when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp`; never when
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Values this build cannot
    /// honour (another exporter or protocol, a bad timeout) are errors, not ignored.
    /// The endpoint, headers and sampler are read by the OpenTelemetry SDK itself.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let signal = |specific: &'static str, general: &'static str| {
            var(specific)
                .map(|value| (specific, value))
                .or_else(|| var(general).map(|value| (general, value)))
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let exporter = var("OTEL_TRACES_EXPORTER").map(|value| value.trim().to_ascii_lowercase());
        match exporter.as_deref() {
            Some("none") => return Ok(None),
            None | Some("otlp") => {}
            Some(other) => {
                return Err(TelemetryError::Setting {
                    variable: "OTEL_TRACES_EXPORTER",
                    value: other.to_owned(),
                    reason: "Gavel exports traces with `otlp` only (or `none`)",
                });
            }
        }
        let endpoint = signal(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        );
        if endpoint.is_none() && exporter.is_none() {
            return Ok(None);
        }
        if let Some((variable, value)) = signal(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) && value.trim() != "http/protobuf"
        {
            return Err(TelemetryError::Setting {
                variable,
                value,
                reason: "Gavel speaks OTLP over `http/protobuf` only",
            });
        }
        let timeout = match signal(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            None => Duration::from_secs(10),
            Some((variable, value)) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(TelemetryError::Setting {
                        variable,
                        value,
                        reason: "expected a whole number of milliseconds above 0",
                    });
                }
            },
        };
        let filter = var("GAVEL_TRACES_FILTER").unwrap_or_else(|| DEFAULT_TRACES_FILTER.to_owned());
        if EnvFilter::try_new(&filter).is_err() {
            return Err(TelemetryError::Setting {
                variable: "GAVEL_TRACES_FILTER",
                value: filter,
                reason: "expected a filter in RUST_LOG syntax, e.g. info,gavel_bid_api=debug",
            });
        }
        Ok(Some(Self { timeout, filter }))
    }
}

/// The installed telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "call shutdown() at exit, or buffered spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter. It blocks (up to the export
    /// timeout), so async code calls it through `spawn_blocking`.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}

/// Installs the global subscriber of a server named `service` (the OTLP `service.name`
/// unless `OTEL_SERVICE_NAME` says otherwise): log lines on stderr in `format`, filtered
/// by `RUST_LOG` (default `info`), and the OTLP export if the environment asks for it.
/// Must run inside the Tokio runtime, which carries the export requests.
pub fn init(format: LogFormat, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let export = OtlpExport::from_env(|name| std::env::var(name).ok())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    #[cfg(feature = "otlp")]
    let (otel, provider) = match &export {
        Some(export) => {
            let (layer, provider) = otlp::layer(export, service)?;
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let otel: Option<Box<dyn Layer<Registry> + Send + Sync>> = None;
    // Without an export, one global filter (what the log lines need, nothing more is
    // even built); with one, each layer filters for itself.
    match otel {
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format))
            .try_init(),
        Some(otel) => tracing_subscriber::registry()
            .with(vec![
                log_layer::<Registry>(format).with_filter(filter).boxed(),
                otel,
            ])
            .try_init(),
    }
    .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    #[cfg(feature = "otlp")]
    if let Some(export) = &export {
        tracing::info!(filter = %export.filter, "exporting spans over OTLP");
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = service;
        if export.is_some() {
            tracing::warn!("OTEL_* asks for an OTLP export, but this binary is built without it");
        }
    }
    Ok(Telemetry {
        #[cfg(feature = "otlp")]
        provider,
    })
}

/// The log lines on stderr, in `format`.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(crate::startup::log_colours(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ));
    match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => fmt.boxed(),
    }
}

/// The OTLP exporter: the SDK's HTTP/protobuf exporter over the workspace's `reqwest`,
/// its requests run on the server's Tokio runtime.
#[cfg(feature = "otlp")]
mod otlp {
    use bytes::Bytes;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{HttpClient, HttpError};
    use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::{EnvFilter, Layer, Registry};

    use super::{OtlpExport, TelemetryError};

    /// The tracing layer that turns spans into OpenTelemetry spans, and the provider that
    /// batches and sends them.
    pub(super) fn layer(
        export: &OtlpExport,
        service: &'static str,
    ) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, SdkTracerProvider), TelemetryError> {
        let client = reqwest::Client::builder()
            .timeout(export.timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| TelemetryError::Exporter(format!("no Tokio runtime: {e}")))?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { client, runtime })
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let filter = EnvFilter::try_new(&export.filter)
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("gavel"))
            .with_filter(filter)
            .boxed();
        Ok((layer, provider))
    }

    /// An HTTP client for the SDK's export thread, which has no runtime of its own: each
    /// request is spawned on the server's runtime and awaited from there.
    #[derive(Debug)]
    struct OnRuntime {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl HttpClient for OnRuntime {
        async fn send_bytes(
            &self,
            request: http::Request<Bytes>,
        ) -> Result<http::Response<Bytes>, HttpError> {
            let request = reqwest::Request::try_from(request)?;
            let client = self.client.clone();
            let sent = self.runtime.spawn(async move {
                let response = client.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                let mut answer = http::Response::new(body);
                *answer.status_mut() = status;
                *answer.headers_mut() = headers;
                Ok::<_, reqwest::Error>(answer)
            });
            Ok(sent.await??)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(vars: &[(&str, &str)]) -> Result<Option<OtlpExport>, TelemetryError> {
        OtlpExport::from_env(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn export_is_off_unless_an_endpoint_or_the_exporter_is_named() {
        assert_eq!(decide(&[]).unwrap(), None);
        assert_eq!(decide(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            None
        );
        let on = OtlpExport {
            timeout: Duration::from_secs(10),
            filter: DEFAULT_TRACES_FILTER.into(),
        };
        assert_eq!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap(),
            Some(on.clone())
        );
        assert_eq!(
            decide(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])
            .unwrap(),
            Some(on.clone())
        );
        assert_eq!(
            decide(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap(),
            Some(on)
        );
    }

    #[test]
    fn disabled_or_none_wins_over_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            decide(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            decide(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert!(
            decide(&[endpoint, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn what_this_build_cannot_honour_is_an_error_naming_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let refused = |vars: &[(&str, &str)]| match decide(vars) {
            Err(TelemetryError::Setting { variable, .. }) => variable,
            other => panic!("{vars:?} was not refused: {other:?}"),
        };
        assert_eq!(
            refused(&[("OTEL_TRACES_EXPORTER", "zipkin")]),
            "OTEL_TRACES_EXPORTER"
        );
        assert_eq!(
            refused(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        assert_eq!(
            refused(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ]),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        );
        assert_eq!(
            refused(&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]),
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        );
        assert_eq!(
            refused(&[endpoint, ("GAVEL_TRACES_FILTER", "info,=[")]),
            "GAVEL_TRACES_FILTER"
        );
    }

    #[test]
    fn the_signal_specific_setting_wins_over_the_general_one() {
        let decided = decide(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
            ("GAVEL_TRACES_FILTER", "warn"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(decided.timeout, Duration::from_millis(250));
        assert_eq!(decided.filter, "warn");
    }
}
