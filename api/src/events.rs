//! `GET /v1/events`: the creator's job transitions, live, as Server-Sent Events.
//!
//! A trigger on `publish_jobs` writes one `job_events` row per mirrored transition, with the job
//! as it then stood, and notifies `job_events`. One [`EventHub`] per API process listens and wakes
//! the streams of that creator through a broadcast channel; each stream then reads its rows from
//! Postgres after its cursor.
//!
//! Ordering: an event's id is taken before its transaction commits, so ids can commit out of
//! order. A stream therefore emits in (transaction id, event id) order, and only events of
//! transactions older than every transaction still running (`pg_snapshot_xmin`). That set only
//! grows at its end: whatever commits later has a transaction id at or above that horizon, so
//! it sorts after everything already emitted. A stream resumed from an event's id continues
//! after that event's (transaction id, id), and misses nothing. The same order is why ids are
//! not always increasing within a stream; clients keep, per job, the highest `version` seen.
//!
//! A lost notification, or a horizon held back by a long transaction elsewhere, is caught by the
//! hub's rescan every second: it wakes the creators of rows that passed the horizon since.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{
        IntoResponse,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::{
    ApiState,
    auth::Creator,
    error::{ApiError, ErrorBody, responses},
    views::{JobRow, JobView},
};

/// The channel the `job_events` trigger notifies, with the creator id as payload.
const CHANNEL: &str = "job_events";

/// A comment is sent when nothing else was for this long, so proxies keep the stream open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// How often the hub looks for events that passed the horizon without a notification.
const RESCAN: Duration = Duration::from_secs(1);

/// Events one read of a stream takes at most.
const BATCH: i64 = 200;

/// Events are kept 7 days (the migration's `created_at`); this often the hub deletes older ones.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/events", get(stream_events))
}

/// The `data:` of a `job.updated` event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobEvent {
    /// The job as this transition left it: the view `GET /v1/publish-jobs/{id}` answers.
    pub job: JobView,
    /// The job's mirror version after this transition; it grows with every transition of the
    /// job. An event with a version below the one a client holds for the job is stale. A
    /// warning or first comment added after a transition comes at that transition's version.
    pub version: i64,
}

/// Why a stream is woken.
#[derive(Clone, Debug)]
enum Wake {
    /// This creator has new events.
    Creator(Arc<str>),
    /// Anyone may have: notifications may have been missed.
    All,
}

/// One per API process: the listener on `job_events` and the streams' wake-ups. Cheap to clone.
#[derive(Clone)]
pub struct EventHub(Arc<Hub>);

struct Hub {
    wakes: broadcast::Sender<Wake>,
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").field("streams", &self.0.wakes.receiver_count()).finish()
    }
}

impl EventHub {
    /// Starts listening (retrying in the background while Postgres does not answer) and the
    /// hourly retention of `job_events`.
    pub fn start(db: PgPool) -> Self {
        let (wakes, _) = broadcast::channel(256);
        let (stopping, _) = watch::channel(false);
        tokio::spawn(listen(db.clone(), wakes.clone(), stopping.subscribe()));
        tokio::spawn(retention(db, stopping.subscribe()));
        EventHub(Arc::new(Hub { wakes, stopping }))
    }

    /// Ends every open stream and the listener: the server's graceful shutdown does not wait on
    /// streams that would never end.
    pub fn stop(&self) {
        self.0.stopping.send_replace(true);
    }
}

/// The stream of the caller's job transitions: `event: job.updated`, `id:` the event's id,
/// `data:` a `JobEvent`; a `: keep-alive` comment every 15 s of silence.
///
/// With `Last-Event-ID` (the `id:` of the last event received) the stream first sends every
/// event after it, then continues live; without it, it starts with the transitions of
/// transactions still running when it opened (and may repeat a few recent ones). An event may
/// come more than once: a client keeps, per job id, the highest `version` it has seen and
/// ignores events below it. The stream takes no query parameters: the token travels in the
/// `Authorization` header, never the URL (`EventSource` cannot send one; read it with `fetch()`).
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0,
        description = "Resume after this event: the `id:` of the last event received")),
    responses(
        (status = 200, content_type = "text/event-stream", body = JobEvent,
            description = "Server-Sent Events, open until the client or the server closes it: `event: job.updated`, `id: <event id>`, `data: <JobEvent JSON>`, and a `: keep-alive` comment every 15 s of silence"),
        (status = 400, description = "`Last-Event-ID` is not an event id (`invalid_last_event_id`, field `Last-Event-ID`), or a query parameter was sent (`invalid_query`: tokens go in the Authorization header)", body = ErrorBody),
        (status = 500, response = responses::Internal),
    ))]
async fn stream_events(
    State(state): State<ApiState>,
    creator: Creator,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if query.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            None,
            "the event stream takes no query parameters; send the token in the Authorization header, never in the URL",
        ));
    }
    let last = last_event_id(&headers)?;
    // Subscribed before the cursor is placed: no wake between the two is missed.
    let mut subscription = Subscription {
        db: state.db.clone(),
        creator: creator.id().into(),
        wakes: state.events.0.wakes.subscribe(),
        stopping: state.events.0.stopping.subscribe(),
        cursor: Cursor { txid: 0, id: 0, floor: 0 },
        ready: VecDeque::new(),
        more: true,
    };
    subscription.cursor = start(&state.db, creator.id(), last).await?;
    let events = futures::stream::unfold(subscription, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("keep-alive"));
    // Proxies such as nginx would otherwise buffer the stream.
    Ok(([(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))], sse))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let value = value.to_str().map(str::trim).unwrap_or("-");
    // An empty value is how `EventSource` says "none".
    if value.is_empty() {
        return Ok(None);
    }
    value.parse::<i64>().ok().filter(|id| *id >= 0).map(Some).ok_or_else(|| {
        ApiError::bad_request("invalid_last_event_id", Some("Last-Event-ID".into()), "Last-Event-ID must be the `id:` of an event")
    })
}

/// Where a stream reads from: after (`txid`, `id`) in the stream's order, and above `floor`.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    txid: i64,
    id: i64,
    floor: i64,
}

/// Places a new stream: after the event it resumes from, or at the horizon when it resumes from
/// nothing. An id no longer kept (older than the retention) resumes with every event above it;
/// an id above every event (another database's, say) starts afresh.
async fn start(db: &PgPool, creator: &str, last: Option<i64>) -> Result<Cursor, ApiError> {
    let at = sqlx::query!(
        r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS "horizon!",
                  (SELECT txid::text::bigint FROM job_events WHERE id = $1 AND creator_id = $2) AS txid,
                  (SELECT max(id) FROM job_events) AS max_id"#,
        last.unwrap_or(-1),
        creator
    )
    .fetch_one(db)
    .await?;
    let fresh = Cursor { txid: at.horizon, id: 0, floor: 0 };
    Ok(match (last, at.txid) {
        (None, _) => fresh,
        (Some(id), Some(txid)) => Cursor { txid, id, floor: 0 },
        (Some(id), None) if at.max_id.is_some_and(|max| id < max) => Cursor { txid: 0, id: 0, floor: id },
        (Some(_), None) => fresh,
    })
}

struct Subscription {
    db: PgPool,
    creator: Arc<str>,
    wakes: broadcast::Receiver<Wake>,
    stopping: watch::Receiver<bool>,
    cursor: Cursor,
    ready: VecDeque<Event>,
    /// The last read may have left events behind (it was a full batch, or the first).
    more: bool,
}

impl Subscription {
    /// The next event, waiting as long as it takes; `None` once the API is stopping.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if *self.stopping.borrow() {
                return None;
            }
            if !self.more && !self.wait().await {
                return None;
            }
            match self.read().await {
                Ok(read) => self.more = read == BATCH as usize,
                Err(e) => {
                    // Postgres is away: the cursor stays, and the next read takes up from it.
                    tracing::warn!(error = %e, "reading job events failed; retrying");
                    self.more = true;
                    tokio::select! {
                        () = tokio::time::sleep(RESCAN) => {}
                        _ = self.stopping.changed() => return None,
                    }
                }
            }
        }
    }

    /// Until this creator may have new events (`true`) or the API stops (`false`).
    async fn wait(&mut self) -> bool {
        loop {
            tokio::select! {
                // The value only ever turns true.
                _ = self.stopping.changed() => return false,
                wake = self.wakes.recv() => match wake {
                    Ok(Wake::Creator(creator)) if creator != self.creator => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
            }
        }
    }

    /// Reads the events after the cursor that no running transaction can precede.
    async fn read(&mut self) -> Result<usize, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT id, txid::text::bigint AS "txid!", version, job FROM job_events
               WHERE creator_id = $1 AND (txid, id) > ($2::bigint::text::xid8, $3) AND id > $4
                 AND txid < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY txid, id
               LIMIT $5"#,
            &*self.creator,
            self.cursor.txid,
            self.cursor.id,
            self.cursor.floor,
            BATCH
        )
        .fetch_all(&self.db)
        .await?;
        let read = rows.len();
        for row in rows {
            self.cursor.txid = row.txid;
            self.cursor.id = row.id;
            match event(row.id, row.version, row.job) {
                Ok(event) => self.ready.push_back(event),
                // A row this code cannot show: a bug, logged; the stream goes on without it.
                Err(e) => tracing::error!(event_id = row.id, error = %e, "a job event cannot be shown; skipped"),
            }
        }
        Ok(read)
    }
}

/// A `job_events.job` snapshot: the `publish_jobs` row as the transition left it.
#[derive(Deserialize)]
struct Snapshot {
    id: Uuid,
    account_id: Uuid,
    creator_id: String,
    channel: String,
    status: String,
    publish_at: DateTime<Utc>,
    caption: String,
    media: serde_json::Value,
    options: Option<serde_json::Value>,
    attempt_count: i32,
    last_error_code: Option<String>,
    last_error_message: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    published_at: Option<DateTime<Utc>>,
    platform_post_id: Option<String>,
    workflow_id: String,
    readiness: Option<serde_json::Value>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    first_comment_id: Option<String>,
    warnings: serde_json::Value,
}

fn event(id: i64, version: i64, job: serde_json::Value) -> anyhow::Result<Event> {
    Ok(Event::default().event("job.updated").id(id.to_string()).json_data(job_event(version, job)?)?)
}

/// The `JobEvent` of a `job_events` row (its `version` and `job` snapshot): what a stream's
/// `data:` and a webhook's `data` carry.
pub fn job_event(version: i64, job: serde_json::Value) -> anyhow::Result<JobEvent> {
    let s: Snapshot = serde_json::from_value(job)?;
    let row = JobRow {
        id: s.id,
        account_id: s.account_id,
        creator_id: s.creator_id,
        channel: s.channel,
        status: s.status,
        publish_at: s.publish_at,
        caption: s.caption,
        media: s.media,
        options: s.options,
        attempt_count: s.attempt_count,
        last_error_code: s.last_error_code,
        last_error_message: s.last_error_message,
        next_attempt_at: s.next_attempt_at,
        published_at: s.published_at,
        platform_post_id: s.platform_post_id,
        workflow_id: s.workflow_id,
        readiness: s.readiness,
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
        first_comment_id: s.first_comment_id,
        warnings: s.warnings,
    };
    let job = JobView::try_from(row).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(JobEvent { job, version })
}

/// What woke the hub.
enum Heard {
    Stop,
    Rescan,
    Notified(String),
    /// The connection dropped; the listener reconnects on its next call.
    Lost,
    Failed(sqlx::Error),
}

/// The hub's loop: notifications wake their creator's streams; every [`RESCAN`], the creators of
/// events that passed the horizon since the last look are woken too (a lost notification, or an
/// event held back by an older transaction); a lost connection wakes every stream.
async fn listen(db: PgPool, wakes: broadcast::Sender<Wake>, mut stopping: watch::Receiver<bool>) {
    let mut listener: Option<PgListener> = None;
    let mut horizon: Option<i64> = None;
    let mut rescan = tokio::time::interval(RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable_logged = false;
    loop {
        if listener.is_none() {
            match connect(&db).await {
                Ok(connected) => {
                    listener = Some(connected);
                    unreachable_logged = false;
                    // Whatever committed while nobody listened.
                    let _ = wakes.send(Wake::All);
                }
                Err(e) if !unreachable_logged => {
                    tracing::warn!(error = %e, "listening for job events failed; streams rely on the rescan until it works");
                    unreachable_logged = true;
                }
                Err(_) => {}
            }
        }
        let heard = tokio::select! {
            _ = stopping.changed() => Heard::Stop,
            _ = rescan.tick() => Heard::Rescan,
            notification = notification(&mut listener) => match notification {
                Ok(Some(n)) => Heard::Notified(n.payload().to_owned()),
                Ok(None) => Heard::Lost,
                Err(e) => Heard::Failed(e),
            },
        };
        match heard {
            Heard::Stop => return,
            Heard::Rescan => match passed_horizon(&db, horizon).await {
                Ok((now, creators)) => {
                    horizon = Some(now);
                    for creator in creators {
                        let _ = wakes.send(Wake::Creator(creator.into()));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "rescanning job events failed"),
            },
            Heard::Notified(creator) => {
                let _ = wakes.send(Wake::Creator(creator.into()));
            }
            Heard::Lost => {
                tracing::warn!("the job events listener lost its connection; reconnecting");
                let _ = wakes.send(Wake::All);
            }
            Heard::Failed(e) => {
                tracing::warn!(error = %e, "the job events listener failed; reconnecting");
                listener = None;
                let _ = wakes.send(Wake::All);
            }
        }
    }
}

async fn connect(db: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn notification(listener: &mut Option<PgListener>) -> Result<Option<sqlx::postgres::PgNotification>, sqlx::Error> {
    match listener {
        Some(listener) => listener.try_recv().await,
        None => std::future::pending().await,
    }
}

/// The horizon now, and the creators of events at or above `since` that are below it.
async fn passed_horizon(db: &PgPool, since: Option<i64>) -> Result<(i64, Vec<String>), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS "horizon!",
                  ARRAY(SELECT DISTINCT creator_id FROM job_events
                        WHERE $1::bigint IS NOT NULL AND txid >= $1::bigint::text::xid8
                          AND txid < pg_snapshot_xmin(pg_current_snapshot())) AS "creators!""#,
        since
    )
    .fetch_one(db)
    .await?;
    Ok((row.horizon, row.creators))
}

/// Deletes the events older than 7 days (`prune_job_events`), hourly; every API process does,
/// harmlessly.
async fn retention(db: PgPool, mut stopping: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.changed() => return,
        }
        match sqlx::query_scalar!(r#"SELECT prune_job_events() AS "deleted!""#).fetch_one(&db).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old job events deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting old job events failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", value.parse().unwrap());
        headers
    }

    #[test]
    fn last_event_id_is_a_non_negative_integer_or_refused_by_name() {
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(last_event_id(&headers("")).unwrap(), None);
        assert_eq!(last_event_id(&headers(" 42 ")).unwrap(), Some(42));
        for bad in ["-1", "abc", "1.5", "99999999999999999999"] {
            match last_event_id(&headers(bad)) {
                Err(ApiError::Invalid { code: "invalid_last_event_id", field: Some(field), .. }) => assert_eq!(field, "Last-Event-ID"),
                other => panic!("{bad}: expected invalid_last_event_id, got {other:?}"),
            }
        }
    }
}
