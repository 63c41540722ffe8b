//! Liveness and readiness for load balancers and operators.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};
use temporalio_client::WorkflowCountOptions;

use crate::ApiState;

pub fn router() -> Router<ApiState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when Postgres answers and Temporal answers a visibility query.
async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let postgres = sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(&state.db).await.map(drop).map_err(|e| e.to_string());
    let temporal = state
        .temporal
        .count_workflows("WorkflowType = 'PublishPostWorkflow'", WorkflowCountOptions::default())
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    let check = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let ready = postgres.is_ok() && temporal.is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready, "checks": { "postgres": check(&postgres), "temporal": check(&temporal) } })))
}
