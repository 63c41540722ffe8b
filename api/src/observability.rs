//! Request ids and Prometheus metrics for the API.

use std::time::Instant;

use autopost_workflows::JobStatus;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
    routing::get,
};

use crate::{ApiState, error::ApiError};

pub const REQUEST_ID: &str = "x-request-id";

pub fn router() -> Router<ApiState> {
    Router::new().route("/metrics", get(metrics))
}

/// The request's id (set by the request-id layer when the caller sent none).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Runs the request with its span's trace as the current OpenTelemetry context, so that the
/// Temporal client's spans (a workflow start, a command) join the request's trace. Without
/// OTLP export configured the context is empty and this costs nothing.
pub async fn in_request_trace(request: Request, next: Next) -> Response {
    use opentelemetry::trace::FutureExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    next.run(request).with_context(context).await
}

/// Records every request's latency by route template (not raw path: ids would explode the
/// label set), method and status.
pub async fn record_latency(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    metrics::histogram!("autopost_http_request_duration_seconds",
        "route" => route, "method" => method, "status" => response.status().as_u16().to_string())
    .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus text: request latencies, and jobs by status counted in Postgres at scrape time.
/// Served on its own listener (`AUTOPOST_METRICS_LISTEN`), not the API's.
pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<String, ApiError> {
    let counts = sqlx::query!(r#"SELECT status, count(*) AS "count!" FROM publish_jobs GROUP BY status"#).fetch_all(&state.db).await?;
    for status in JobStatus::ALL {
        let count = counts.iter().find(|c| c.status == status.as_str()).map_or(0, |c| c.count);
        metrics::gauge!("autopost_jobs", "status" => status.as_str()).set(count as f64);
    }
    Ok(state.metrics.as_ref().map(|h| h.render()).unwrap_or_default())
}
