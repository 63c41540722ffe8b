//! Liveness and readiness for load balancers and operators.

use crate::{ApiState, engine};
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;

pub fn router() -> Router<ApiState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// Liveness: `{"status": "ok"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Readiness: whether each dependency answered, and whether any worker polls the task queue.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    ready: bool,
    checks: ReadyChecks,
    /// Jobs only publish while a worker polls: reported, but not a reason to take the API out
    /// of service (jobs wait durably until a worker is back).
    worker: WorkerCheck,
    /// Jobs still `scheduled` or `publishing` well past their publish time; reported, like the
    /// worker, without failing readiness. Absent when Postgres does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    stuck_jobs: Option<StuckJobs>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StuckJobs {
    count: i64,
    /// `AUTOPOST_STUCK_AFTER`: how long past its publish time a job counts as stuck.
    after_seconds: u64,
    /// The oldest few, for a look in the Temporal Web UI (`publish-job:{id}`).
    oldest: Vec<uuid::Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkerCheck {
    polling: bool,
    /// Workers that polled the task queue recently.
    pollers: usize,
    task_queue: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadyChecks {
    postgres: DependencyCheck,
    temporal: DependencyCheck,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DependencyCheck {
    ok: bool,
    /// Which dependency did not answer (the detail is in the API's log); absent when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready when Postgres answers and Temporal answers a visibility query.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Postgres and Temporal answer", body = Ready),
    (status = 503, description = "A dependency does not answer; `checks` says which", body = Ready),
))]
async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Ready>) {
    // The answer is public: it says which dependency failed, never its error text (which can
    // name hosts, users or databases); the log has the detail.
    let postgres = sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(&state.db).await.map(drop).map_err(|e| {
        tracing::warn!(error = %e, "readiness: Postgres did not answer");
        "Postgres did not answer".to_owned()
    });
    // Describing the task queue proves Temporal answers and says who polls it, in one cheap call.
    let pollers =
        engine::task_queue_pollers(&state.temporal, &state.settings.task_queue).await.map(|identities| identities.len()).map_err(|e| {
            tracing::warn!(error = %e.message(), "readiness: Temporal did not answer");
            "Temporal did not answer".to_owned()
        });
    let temporal = pollers.as_ref().map(drop).map_err(Clone::clone);
    let pollers = pollers.unwrap_or(0);
    let check = |r: Result<(), String>| DependencyCheck { ok: r.is_ok(), error: r.err() };
    let ready = postgres.is_ok() && temporal.is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let worker = WorkerCheck { polling: pollers > 0, pollers, task_queue: state.settings.task_queue.clone() };
    let stuck_jobs = stuck_jobs(&state).await.ok();
    (status, Json(Ready { ready, checks: ReadyChecks { postgres: check(postgres), temporal: check(temporal) }, worker, stuck_jobs }))
}

async fn stuck_jobs(state: &ApiState) -> Result<StuckJobs, sqlx::Error> {
    let after = state.settings.stuck_after;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(after).unwrap_or_default();
    let rows = sqlx::query!(
        r#"SELECT id, count(*) OVER () AS "count!" FROM publish_jobs
           WHERE status IN ('scheduled', 'publishing') AND publish_at < $1
           ORDER BY publish_at LIMIT 10"#,
        cutoff
    )
    .fetch_all(&state.db)
    .await?;
    Ok(StuckJobs {
        count: rows.first().map_or(0, |r| r.count),
        after_seconds: after.as_secs(),
        oldest: rows.into_iter().map(|r| r.id).collect(),
    })
}
