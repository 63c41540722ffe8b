//! Outbound webhooks (issue 15 item 2): every job transition reaches `AUTOPOST_WEBHOOK_URL`
//! signed, in order per job, again after a failed delivery (with doubling waits) and after the
//! delivering worker is killed, from one worker at a time.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::common::{Options, TestApp};

const SECRET: &str = "a-webhook-secret-the-receiver-shares-32+";
/// The receiver's path: a credential in many real receivers, so it must never be logged.
const PATH: &str = "/hooks/path-credential-7f3a";
/// How old a timestamp a receiver accepts (the README's advice).
const TOLERANCE_SECS: i64 = 300;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    at: Instant,
    event_id: i64,
    job_id: String,
    version: i64,
    status: String,
    body: Value,
    /// Answered 2xx.
    acknowledged: bool,
}

#[derive(Default)]
struct Inner {
    deliveries: Vec<Delivery>,
    /// Requests still to answer 500.
    fail_next: u32,
    /// Answer 500 to everything while set.
    fail_all: bool,
    in_flight: u32,
    max_in_flight: u32,
    /// What failed verification, said in words (a panic in a handler would only drop the
    /// connection, which the deliverer would retry).
    problems: Vec<String>,
}

/// A webhook receiver, as the web app would run one: it verifies every signature.
#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

type HmacSha256 = Hmac<Sha256>;

/// `Autopost-Signature` checked as the README tells receivers to: `v1` is hex
/// HMAC-SHA256(secret, "<t>.<raw body>"), compared in constant time, with `t` recent.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<i64, String> {
    let header = headers.get("autopost-signature").and_then(|v| v.to_str().ok()).ok_or("no Autopost-Signature")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => return Err(format!("unknown part in {header}")),
        }
    }
    let (t, v1) = (t.ok_or("no t=")?, v1.ok_or("no v1=")?);
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: Vec<u8> = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v1.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "v1 is not hex")?;
    mac.verify_slice(&expected).map_err(|_| "the signature does not match".to_owned())?;
    if (Utc::now().timestamp() - t).abs() > TOLERANCE_SECS {
        return Err(format!("timestamp {t} is too old"));
    }
    Ok(t)
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    {
        let mut inner = inner.lock().unwrap();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
    }
    // Widens the window in which a second deliverer's request would overlap this one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut inner = inner.lock().unwrap();
    inner.in_flight -= 1;
    let mut problems = Vec::new();
    let signed_at = verify(SECRET, &headers, &body).map_err(|e| problems.push(e)).ok();
    if verify("not-the-secret-but-as-long-as-the-real-one", &headers, &body).is_ok() {
        problems.push("a wrong secret verifies too".into());
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if signed_at.is_some_and(|t| header("autopost-timestamp") != t.to_string()) {
        problems.push(format!("Autopost-Timestamp {} is not the signature's t", header("autopost-timestamp")));
    }
    if header("content-type") != "application/json" {
        problems.push(format!("content-type {}", header("content-type")));
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let event_id = parsed["id"].as_i64().unwrap_or(-1);
    if header("autopost-event-id") != event_id.to_string() {
        problems.push(format!("Autopost-Event-Id {} for event {event_id}", header("autopost-event-id")));
    }
    if parsed["type"] != "job.updated" || parsed["created_at"].as_str().and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok()).is_none() {
        problems.push(format!("not a job.updated event: {parsed}"));
    }
    let job = &parsed["data"]["job"];
    let version = parsed["data"]["version"].as_i64().unwrap_or(-1);
    if version < 0 || !job["id"].is_string() {
        problems.push(format!("no data.version or data.job: {parsed}"));
    }
    let verified = problems.is_empty();
    inner.problems.extend(problems);
    let fail = inner.fail_all || inner.fail_next > 0;
    inner.fail_next = inner.fail_next.saturating_sub(1);
    let acknowledged = verified && !fail;
    inner.deliveries.push(Delivery {
        at: Instant::now(),
        event_id,
        job_id: job["id"].as_str().unwrap_or_default().to_owned(),
        version,
        status: job["status"].as_str().unwrap_or_default().to_owned(),
        body: parsed.clone(),
        acknowledged,
    });
    match (verified, fail) {
        (false, _) => StatusCode::BAD_REQUEST,
        (true, true) => StatusCode::INTERNAL_SERVER_ERROR,
        (true, false) => StatusCode::NO_CONTENT,
    }
}

impl Receiver {
    async fn start(fail_next: u32) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner { fail_next, ..Inner::default() }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{PATH}", listener.local_addr().unwrap());
        let app = Router::new().route(PATH, post(receive)).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, inner }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().deliveries.clone()
    }

    fn acknowledged(&self) -> Vec<Delivery> {
        self.deliveries().into_iter().filter(|d| d.acknowledged).collect()
    }

    fn fail_all(&self, fail: bool) {
        self.inner.lock().unwrap().fail_all = fail;
    }

    /// Every check the receiver made passed, and no two requests overlapped.
    fn assert_sound(&self) {
        let inner = self.inner.lock().unwrap();
        assert!(inner.problems.is_empty(), "the receiver refused deliveries: {:?}", inner.problems);
        assert_eq!(inner.max_in_flight, 1, "two deliveries were in flight at once");
    }

    /// Waits until every event in the database was acknowledged, and returns what was.
    async fn wait_for_all(&self, app: &TestApp, timeout: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = stored_events(app).await;
            let acknowledged = self.acknowledged();
            let got: BTreeSet<i64> = acknowledged.iter().map(|d| d.event_id).collect();
            if stored.iter().all(|id| got.contains(id)) {
                return acknowledged;
            }
            let problems: Vec<String> = self.inner.lock().unwrap().problems.iter().take(3).cloned().collect();
            assert!(
                Instant::now() < deadline,
                "events {:?} never acknowledged; received {:?}, refused for {:?}\nworker log:\n{}",
                stored.iter().filter(|id| !got.contains(id)).collect::<Vec<_>>(),
                self.deliveries().iter().map(|d| (d.event_id, d.acknowledged)).collect::<Vec<_>>(),
                problems,
                app.worker_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every event id in `job_events`.
async fn stored_events(app: &TestApp) -> BTreeSet<i64> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM job_events").fetch_all(&app.db).await.unwrap().into_iter().collect()
}

/// An app whose workers deliver to `receiver`, with `max_backoff` as their cap, its first
/// worker delivering (its cursor placed) before anything happens.
async fn spawn(receiver: &Receiver, max_backoff: &str) -> TestApp {
    let mut app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    app.config.worker.webhook_url = Some(SecretString::from(receiver.url.clone()));
    app.config.worker.webhook_secret = Some(SecretString::from(SECRET));
    app.config.worker.webhook_max_backoff = humantime::parse_duration(max_backoff).unwrap();
    app.start_worker();
    wait_for_deliverers(&app, 1).await;
    app
}

/// Until `count` times, in all, a worker said it delivers.
async fn wait_for_deliverers(app: &TestApp, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.worker_events("this worker delivers the webhooks").len() < count {
        assert!(Instant::now() < deadline, "no worker took over the deliveries\n{}", app.worker_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each job's acknowledged events came once each, in version order, starting with its creation.
fn assert_in_order_per_job(acknowledged: &[Delivery]) -> HashMap<String, Vec<Delivery>> {
    let mut per_job: HashMap<String, Vec<Delivery>> = HashMap::new();
    for delivery in acknowledged {
        per_job.entry(delivery.job_id.clone()).or_default().push(delivery.clone());
    }
    let ids: Vec<i64> = acknowledged.iter().map(|d| d.event_id).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "an event was acknowledged twice: {ids:?}");
    for (job, deliveries) in &per_job {
        // A job's events are written in id order (under its row lock); a warning added after a
        // transition repeats its version.
        let versions: Vec<i64> = deliveries.iter().map(|d| d.version).collect();
        let ids: Vec<i64> = deliveries.iter().map(|d| d.event_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "job {job}'s events arrived as {ids:?} (versions {versions:?})");
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "job {job}'s versions arrived as {versions:?}");
        assert_eq!((versions[0], deliveries[0].status.as_str()), (0, "scheduled"), "job {job}'s first event is its creation: {versions:?}");
    }
    per_job
}

fn statuses(deliveries: &[Delivery]) -> Vec<String> {
    let mut statuses: Vec<String> = deliveries.iter().map(|d| d.status.clone()).collect();
    statuses.dedup();
    statuses
}

/// Cancels a job and waits until it is (a loaded machine may answer `202 pending` first).
async fn cancel(app: &TestApp, id: &str) {
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
    assert!(status == 200 || status == 202, "{status} {body}");
    app.wait_for_status(id, "cancelled", Duration::from_secs(60)).await;
}

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

#[tokio::test(flavor = "multi_thread")]
async fn each_transition_arrives_signed_in_order_and_again_after_failures_with_doubling_waits() {
    // The first four deliveries are refused: the creation is sent five times.
    let receiver = Receiver::start(4).await;
    let app = spawn(&receiver, "2s").await;
    let account = app.link_account("instagram", "ig-webhooks").await;
    let published = app.schedule(&account, Utc::now() + chrono::Duration::seconds(3), "hooked", image(&app)).await;
    let cancelled = app.schedule(&account, Utc::now() + chrono::Duration::days(3), "never", image(&app)).await;
    let (published_id, cancelled_id) = (published["id"].as_str().unwrap(), cancelled["id"].as_str().unwrap());
    cancel(&app, cancelled_id).await;
    app.wait_for_status(published_id, "published", Duration::from_secs(60)).await;

    let acknowledged = receiver.wait_for_all(&app, Duration::from_secs(60)).await;
    receiver.assert_sound();
    let per_job = assert_in_order_per_job(&acknowledged);
    assert_eq!(statuses(&per_job[published_id]), ["scheduled", "publishing", "published"]);
    assert_eq!(statuses(&per_job[cancelled_id]), ["scheduled", "cancelled"]);
    // The last event carries the job as the API shows it (the SSE `data:`, the same view).
    let (_, shown) = app.get(&format!("/v1/publish-jobs/{published_id}")).await;
    assert_eq!(per_job[published_id].last().unwrap().body["data"]["job"], shown);

    // The refused creation came again and again, 1 s, 2 s, then capped at 2 s apart, and
    // nothing else was sent before it was acknowledged.
    let deliveries = receiver.deliveries();
    let first = &deliveries[..5];
    assert!(first.iter().all(|d| d.event_id == first[0].event_id && d.job_id == published_id), "{first:?}");
    assert_eq!(first.iter().map(|d| d.acknowledged).collect::<Vec<_>>(), [false, false, false, false, true]);
    let gaps: Vec<f64> = first.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect();
    assert!((0.95..1.9).contains(&gaps[0]), "first wait 1 s: {gaps:?}");
    for gap in &gaps[1..] {
        assert!((1.95..3.9).contains(gap), "then 2 s, doubled and capped: {gaps:?}");
    }

    let metrics = reqwest::get(app.worker_metrics_url().await).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"autopost_webhook_deliveries_total{outcome="rejected"} 4"#), "{metrics}");
    let delivered = format!(r#"autopost_webhook_deliveries_total{{outcome="delivered"}} {}"#, acknowledged.len());
    assert!(metrics.contains(&delivered), "{delivered} in {metrics}");
    assert!(metrics.contains("autopost_webhook_delivering 1"), "{metrics}");
    // Logs name the receiver's host only, and never the secret or a signature.
    let log = app.worker_log();
    assert!(!log.contains(SECRET) && !log.contains("path-credential") && !log.contains("v1="), "{log}");
    assert!(app.worker_events("webhook not delivered: the receiver answered 500 Internal Server Error").len() >= 4, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_event_whose_transaction_sorts_first_waits_for_the_jobs_earlier_one() {
    let receiver = Receiver::start(0).await;
    let app = spawn(&receiver, "2s").await;
    let account = app.link_account("instagram", "ig-webhooks-order").await;
    let job = app.schedule(&account, Utc::now() + chrono::Duration::days(3), "later", image(&app)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    receiver.wait_for_all(&app, Duration::from_secs(30)).await;

    // `late` takes its transaction id first; `early` then moves the job on, and `late`'s own
    // move waits for it: `late`'s event (the higher version) has the lower transaction id.
    let bump = "UPDATE publish_jobs SET version = version + 1, updated_at = now() WHERE id = $1::uuid";
    let mut late = app.db.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *late).await.unwrap();
    let mut early = app.db.begin().await.unwrap();
    sqlx::query(bump).bind(&id).execute(&mut *early).await.unwrap();
    let waiting = tokio::spawn(async move {
        sqlx::query(bump).bind(&id).execute(&mut *late).await.unwrap();
        late.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    early.commit().await.unwrap();
    waiting.await.unwrap();
    let (inverted,): (bool,) = sqlx::query_as(
        "SELECT (array_agg(txid ORDER BY version))[1] > (array_agg(txid ORDER BY version))[2] FROM
           (SELECT txid, version FROM job_events WHERE job_id = $1::uuid ORDER BY version DESC LIMIT 2) last_two",
    )
    .bind(job["id"].as_str().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(inverted, "the setup did not make the stream order disagree with the job's");

    let acknowledged = receiver.wait_for_all(&app, Duration::from_secs(30)).await;
    receiver.assert_sound();
    let per_job = assert_in_order_per_job(&acknowledged);
    let versions: Vec<i64> = per_job[job["id"].as_str().unwrap()].iter().map(|d| d.version).collect();
    assert_eq!(versions[versions.len() - 2..], [versions[versions.len() - 2], versions[versions.len() - 2] + 1]);
    // Delivered once each: the event sent ahead of its place is not sent again when reached.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.deliveries().len(), acknowledged.len(), "{:?}", receiver.deliveries());
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_delivering_worker_loses_no_event_and_one_worker_delivers_at_a_time() {
    let receiver = Receiver::start(0).await;
    let mut app = spawn(&receiver, "2s").await;
    // A second worker stands by while the first delivers.
    let mut standby = app.spawn_worker_process();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.worker_events("webhooks on").len() < 2 {
        assert!(Instant::now() < deadline, "the second worker never started its deliverer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let account = app.link_account("instagram", "ig-webhooks-crash").await;
    let first = app.schedule(&account, Utc::now() + chrono::Duration::days(3), "one", image(&app)).await;
    let before = receiver.wait_for_all(&app, Duration::from_secs(30)).await;
    assert!(!before.is_empty());

    // The receiver goes down; transitions go on; the deliverer keeps retrying the next one.
    receiver.fail_all(true);
    let second = app.schedule(&account, Utc::now() + chrono::Duration::days(3), "two", image(&app)).await;
    cancel(&app, first["id"].as_str().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.deliveries().iter().filter(|d| !d.acknowledged).count() < 2 {
        assert!(Instant::now() < deadline, "the deliverer did not retry: {:?}", receiver.deliveries());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.worker_events("this worker delivers the webhooks").len(), 1, "only one worker delivers");

    // The deliverer dies mid-retry; the standby takes over and sends everything after the last
    // acknowledged event, the refused one first.
    app.kill_worker().await;
    let refused = receiver.deliveries().into_iter().find(|d| !d.acknowledged).unwrap();
    receiver.fail_all(false);
    wait_for_deliverers(&app, 2).await;
    let after_takeover = receiver.wait_for_all(&app, Duration::from_secs(30)).await;
    let resumed = &after_takeover[before.len()..];
    assert_eq!(resumed[0].event_id, refused.event_id, "{resumed:?}");

    // With no worker at all, events wait in the outbox; a new worker sends them.
    standby.kill().await.unwrap();
    let third = app.schedule(&account, Utc::now() + chrono::Duration::days(3), "three", image(&app)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.acknowledged().len(), after_takeover.len(), "nothing is delivered without a worker");
    app.start_worker();
    wait_for_deliverers(&app, 3).await;
    let all = receiver.wait_for_all(&app, Duration::from_secs(30)).await;
    receiver.assert_sound();
    let per_job = assert_in_order_per_job(&all);
    assert_eq!(statuses(&per_job[first["id"].as_str().unwrap()]), ["scheduled", "cancelled"]);
    for job in [&second, &third] {
        assert!(per_job.contains_key(job["id"].as_str().unwrap()), "{job} never arrived");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_what_a_live_deliverer_has_not_delivered() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("instagram", "ig-webhooks-retention").await;
    for caption in ["one", "two"] {
        app.schedule(&account, Utc::now() + chrono::Duration::days(3), caption, image(&app)).await;
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM job_events ORDER BY txid, id").fetch_all(&app.db).await.unwrap();
    assert_eq!(ids.len(), 2);
    sqlx::query("UPDATE job_events SET created_at = now() - interval '8 days'").execute(&app.db).await.unwrap();
    // The receiver acknowledged the first event only.
    sqlx::query("INSERT INTO webhook_cursor (txid, event_id) SELECT txid, id FROM job_events WHERE id = $1")
        .bind(ids[0])
        .execute(&app.db)
        .await
        .unwrap();
    let prune = || async { sqlx::query_scalar::<_, i64>("SELECT prune_job_events()").fetch_one(&app.db).await.unwrap() };
    assert_eq!(prune().await, 1);
    assert_eq!(stored_events(&app).await, BTreeSet::from([ids[1]]), "the unacknowledged event is kept past 7 days");
    // A cursor no deliverer touched for 7 days (webhooks turned off) holds nothing back.
    sqlx::query("UPDATE webhook_cursor SET alive_at = now() - interval '8 days'").execute(&app.db).await.unwrap();
    assert_eq!(prune().await, 1);
    assert!(stored_events(&app).await.is_empty());
}
