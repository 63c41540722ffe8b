//! Logging: JSON lines for machines or pretty text for people, levels from `RUST_LOG`. Traces:
//! OTLP (http/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
//! configured by the standard `OTEL_*` variables; off otherwise.
//!
//! One trace follows a post: the API request's span, the workflow start or command (the Temporal
//! SDK's OpenTelemetry plugin, which carries the context in Temporal headers), the workflow, each
//! activity, and the platform calls inside it. Only Autopost's own `tracing` spans become OTLP
//! spans (with their fields, which never hold a token: the adapters skip them); the SDK's
//! internal spans would start traces of their own.

use std::sync::OnceLock;

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use temporalio_sdk::opentelemetry::WorkflowIdGenerator;
use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, fmt, prelude::*};

use crate::config::LogFormat;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether this process exports traces (then its Temporal clients carry the context too).
pub fn tracing_enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Logs, and traces when configured. `service` names the process in traces unless
/// `OTEL_SERVICE_NAME` does (`autopost-api`, `autopost-worker`, ...).
pub fn init(format: LogFormat, service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,temporalio_sdk_core=warn,sqlx=warn"));
    let traces = otlp_provider(service).map(|provider| {
        let tracer = provider.tracer("autopost");
        let _ = PROVIDER.set(provider);
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter_fn(|metadata| metadata.target().starts_with("autopost")))
    });
    let registry = tracing_subscriber::registry().with(traces).with(filter);
    // A second init (tests that start several components) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
}

fn otlp_provider(service: &str) -> Option<SdkTracerProvider> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OTLP traces are off: {error}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Workflow spans get the same ids when a workflow is replayed.
        .with_id_generator(WorkflowIdGenerator::default())
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    Some(provider)
}

/// Exports the spans still buffered; call before the process exits.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        eprintln!("flushing traces: {error}");
    }
}
