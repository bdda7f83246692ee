//! Optional OTLP traces: the spans of target [`k2_model::STAGE_SPANS`] (a span per
//! pipeline stage — parse, append, decode, write, commit — and per API request) go to an
//! OTLP/HTTP collector in protobuf, batched by the OpenTelemetry SDK on a thread of its own.
//!
//! The exporter sits in a slot of the process's subscriber that is empty unless
//! `telemetry.otlp_endpoint` is set. The spans are at `trace` level, which the log lines'
//! filter leaves out: with the slot empty no one wants them and a span costs one
//! comparison with the process's maximum level (measured by `k2 bench ingest`, which runs
//! with the exporter off and on).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::{Layer, Registry, reload};

type Exporter = tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>;
/// The subscriber's slot: the exporter, and the filter that picks its spans (none while
/// the slot is empty, so that no span is even created for it).
pub(super) type Slot =
    Filtered<reload::Layer<Option<Exporter>, Registry>, reload::Layer<Targets, Registry>, Registry>;

struct Handles {
    exporter: reload::Handle<Option<Exporter>, Registry>,
    spans: reload::Handle<Targets, Registry>,
}

static SLOT: OnceLock<Handles> = OnceLock::new();
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// How long one export may take (a collector that does not answer costs no more).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans held for export at most; more are dropped (the SDK reports how many).
const QUEUE: usize = 8192;

/// The empty slot the subscriber is built with. (The filter is outside the slot: a
/// filtered layer is registered with the subscriber once, at its start.)
pub(super) fn slot() -> Slot {
    let (exporter, exporter_handle) = reload::Layer::new(None);
    let (spans, spans_handle) = reload::Layer::new(Targets::new());
    let _ = SLOT.set(Handles {
        exporter: exporter_handle,
        spans: spans_handle,
    });
    exporter.with_filter(spans)
}

/// Why `endpoint` is no OTLP/HTTP endpoint, if it is not.
pub(super) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("'{endpoint}' is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("'{endpoint}' names no host"));
    }
    Ok(())
}

/// The traces URL of a collector: `endpoint` itself when it names the traces path, else
/// `/v1/traces` under it (as OTLP's base endpoint setting does).
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Starts exporting the stage spans to `endpoint` (replacing an exporter already on).
pub fn start(endpoint: &str) -> anyhow::Result<()> {
    check_endpoint(endpoint).map_err(|why| anyhow::anyhow!("telemetry.otlp_endpoint: {why}"))?;
    let handles = SLOT
        .get()
        .context("traces need the process's subscriber, which is not installed")?;
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("an OTLP exporter to {url}"))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("k2")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("k2"));
    handles
        .exporter
        .reload(Some(layer))
        .context("installing the trace exporter")?;
    handles
        .spans
        .reload(Targets::new().with_target(k2_model::STAGE_SPANS, tracing::Level::TRACE))
        .context("selecting the spans to export")?;
    if let Some(old) = PROVIDER.lock().expect("provider lock").replace(provider) {
        shut(old);
    }
    tracing::info!(endpoint = %url, "exporting traces over OTLP");
    Ok(())
}

/// Stops exporting: empties the slot and sends the spans still held (within the export
/// timeout). Nothing happens when traces are off.
pub fn stop() {
    let Some(provider) = PROVIDER.lock().expect("provider lock").take() else {
        return;
    };
    if let Some(handles) = SLOT.get() {
        let _ = handles.spans.reload(Targets::new());
        let _ = handles.exporter.reload(None);
    }
    shut(provider);
}

fn shut(provider: SdkTracerProvider) {
    if let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
        tracing::warn!(error = %e, "the trace exporter did not send every span");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_get_the_traces_path() {
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("https://otel.example:4318/v1/traces").is_ok());
        assert!(
            check_endpoint("127.0.0.1:4318")
                .unwrap_err()
                .contains("http://")
        );
        assert!(check_endpoint("http://").unwrap_err().contains("no host"));
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c/otlp"), "http://c/otlp/v1/traces");
    }
}
