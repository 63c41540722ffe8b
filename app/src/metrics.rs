//! Prometheus metrics. Our own metrics are recorded with the `metrics` crate into one
//! process-wide recorder; the worker adds the Temporal SDK's own metrics to its `/metrics`.

use std::{net::SocketAddr, sync::OnceLock};

use axum::{Router, extract::State, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use temporalio_common::telemetry::{PrometheusExporterOptions, TelemetryOptions, metrics::CoreMeter, start_prometheus_metric_exporter};

/// The process's recorder; installed on first use (`dev` runs API and worker in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The SDK's Prometheus exporter, on a loopback port of its own; its text is appended to ours.
pub struct SdkMetrics {
    pub telemetry: TelemetryOptions,
    address: SocketAddr,
}

impl SdkMetrics {
    pub fn start() -> anyhow::Result<Self> {
        let options = PrometheusExporterOptions::builder().socket_addr(SocketAddr::from(([127, 0, 0, 1], 0))).build();
        let server = start_prometheus_metric_exporter(options)?;
        let meter: std::sync::Arc<dyn CoreMeter> = server.meter;
        Ok(SdkMetrics { telemetry: TelemetryOptions::builder().metrics(meter).build(), address: server.bound_addr })
    }
}

#[derive(Clone)]
struct Sources {
    ours: PrometheusHandle,
    sdk: Option<SocketAddr>,
    http: reqwest::Client,
}

/// Serves the worker's `GET /metrics` (our metrics, then the Temporal SDK's), and `probes`.
pub async fn serve_worker_metrics(listener: tokio::net::TcpListener, sdk: Option<&SdkMetrics>, probes: Router) -> anyhow::Result<()> {
    let sources = Sources { ours: handle(), sdk: sdk.map(|s| s.address), http: reqwest::Client::new() };
    let app = Router::new().route("/metrics", get(render)).with_state(sources).merge(probes);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn render(State(sources): State<Sources>) -> String {
    let mut text = sources.ours.render();
    if let Some(address) = sources.sdk
        && let Ok(response) = sources.http.get(format!("http://{address}/metrics")).send().await
        && let Ok(sdk) = response.text().await
    {
        text.push_str(&sdk);
    }
    text
}
