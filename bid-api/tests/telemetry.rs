//! The OTLP export of spans: a real `gavel-bid-api` process configured by the standard
//! `OTEL_*` variables sends its spans over HTTP/protobuf to a receiver that decodes the
//! OTLP wire format, and a setting it cannot honour stops it at start-up.

mod common;

use std::process::{Command, Stdio};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::sync::mpsc;

/// An OTLP/HTTP trace receiver on a free port: every export request, decoded.
async fn receiver() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (sent, received) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |State(sent): State<mpsc::UnboundedSender<_>>, body: Bytes| async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let _ = sent.send(request);
                    ExportTraceServiceResponse::default().encode_to_vec()
                },
            ),
        )
        .with_state(sent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, received)
}

fn string(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(&kv.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_the_last_ones_are_sent_at_shutdown() {
    let env = Env::new().await;
    let (endpoint, mut received) = receiver().await;
    // A schedule far longer than the test: the spans can only arrive through the
    // flush at shutdown.
    let mut server = env.server_with_vars(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("RUST_LOG", "info"),
        ],
    );
    let id = env.auction(10).await;
    let mut alice = Client::connect(&server, Some(&token("alice", "Alice", 600))).await;
    let reply = alice.bid(&id, Some(100), None, "otlp-1").await;
    assert_eq!(reply["outcome"], "leading", "{reply}");
    drop(alice);

    server.signal("TERM");
    assert!(server.wait_exit(), "{}", server.logs());

    let mut spans: Vec<(Vec<KeyValue>, Span)> = Vec::new();
    while let Ok(request) = received.try_recv() {
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default().attributes;
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (resource.clone(), s)));
            }
        }
    }
    let (resource, bid) = spans
        .iter()
        .find(|(_, span)| span.name == "bid")
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|(_, s)| &s.name).collect();
            panic!("no bid span among {names:?}:\n{}", server.logs())
        });
    assert_eq!(
        attribute(resource, "service.name").as_deref(),
        Some("gavel-bid-api")
    );
    assert_eq!(attribute(&bid.attributes, "auction"), Some(id.to_string()));
    assert_eq!(
        attribute(&bid.attributes, "bidder").as_deref(),
        Some("alice")
    );
    assert_eq!(attribute(&bid.attributes, "ref").as_deref(), Some("otlp-1"));
    assert_eq!(
        attribute(&bid.attributes, "outcome").as_deref(),
        Some("leading")
    );
    assert_eq!(attribute(&bid.attributes, "seq").as_deref(), Some("1"));
    assert_eq!(bid.trace_id.len(), 16);
}

#[test]
fn an_otlp_setting_the_build_cannot_honour_stops_the_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_gavel-bid-api"))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--redis-url", "redis://127.0.0.1:1"])
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .stdin(Stdio::null())
        .output()
        .expect("run gavel-bid-api");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\"") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
}
