//! `GET /v1/events`: job transitions as Server-Sent Events, in order, resumable with
//! `Last-Event-ID` without gaps even when transactions commit out of id order, scoped to the
//! creator, and exempt from the request timeout and the concurrency limit.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{CREATOR, Options, TestApp};

/// One `job.updated` event as a client reads it.
#[derive(Clone, Debug, PartialEq)]
struct Received {
    id: i64,
    job: Value,
    version: i64,
}

/// An open event stream, read frame by frame.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(client: &reqwest::Client, api: &str, last_event_id: Option<i64>) -> Stream {
        let mut request = client.get(format!("{api}/v1/events"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream { response, buffer: String::new() }
    }

    /// The next event within `wait`; `None` if none came. Comments (heartbeats) are skipped.
    async fn next(&mut self, wait: Duration) -> Option<Received> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let Some(id) = id else { continue };
                assert_eq!(kind.as_deref(), Some("job.updated"), "{frame}");
                let data: Value = serde_json::from_str(&data).unwrap();
                return Some(Received { id, version: data["version"].as_i64().unwrap(), job: data["job"].clone() });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None)) => panic!("the stream ended"),
                Ok(Err(e)) => panic!("the stream failed: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// The next event, which must come within 10 s.
    async fn expect(&mut self) -> Received {
        self.next(Duration::from_secs(10)).await.expect("an event within 10 s")
    }

    /// Every event until none comes for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Received> {
        let mut events = Vec::new();
        while let Some(event) = self.next(quiet).await {
            events.push(event);
        }
        events
    }
}

fn id_of(job: &Value) -> &str {
    job["id"].as_str().unwrap()
}

/// A job far in the future for [`CREATOR`] on a fresh Instagram account.
async fn far_job(app: &TestApp, account: &str) -> Value {
    let media = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    app.schedule(account, Utc::now() + chrono::Duration::days(3), "later", media).await
}

/// A mirror write as the worker makes one: the job's version goes up.
async fn bump<'e>(db: impl sqlx::PgExecutor<'e>, job: &Value) {
    sqlx::query("UPDATE publish_jobs SET version = version + 1, updated_at = now() WHERE id = $1::uuid")
        .bind(id_of(job))
        .execute(db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_streams_in_order_and_last_event_id_resumes_after_it() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "ig-token").await;
    let mut stream = Stream::open(&app.http, &app.api, None).await;
    let media = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(2), "live", media).await;

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events.last().is_none_or(|e: &Received| e.job["status"] != "published") {
        assert!(Instant::now() < deadline, "never published: {events:?}");
        let event = stream.expect().await;
        assert_eq!(event.job["id"], job["id"], "only this creator's only job: {event:?}");
        events.push(event);
    }
    // Whatever the run still writes (its close) comes too.
    events.extend(stream.drain(Duration::from_millis(1500)).await);
    let mut statuses: Vec<&str> = events.iter().map(|e| e.job["status"].as_str().unwrap()).collect();
    statuses.dedup();
    assert_eq!(statuses, ["scheduled", "publishing", "published"], "{events:?}");
    assert!(events.windows(2).all(|w| w[0].version < w[1].version), "versions grow: {events:?}");
    // The last event is the job as the API shows it.
    let (_, shown) = app.get(&format!("/v1/publish-jobs/{}", id_of(&job))).await;
    assert_eq!(events.last().unwrap().job, shown);
    assert!(shown["platform_post_id"].is_string());

    // A reconnect after the first event gets exactly the later ones, as they were sent.
    let mut resumed = Stream::open(&app.http, &app.api, Some(events[0].id)).await;
    let replay = resumed.drain(Duration::from_millis(1500)).await;
    assert_eq!(replay, events[1..], "resumed after {}", events[0].id);
}

#[tokio::test(flavor = "multi_thread")]
async fn transitions_committed_out_of_id_order_reach_live_and_resumed_streams() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("instagram", "ig-token").await;
    // Opened first, so both jobs' creations come on it, and once both came nothing else will:
    // a fixed quiet wait instead was too short once, on a loaded machine, where the hub's
    // rescan (every second) is what delivers a row whose horizon an unrelated commit held back.
    let mut live = Stream::open(&app.http, &app.api, None).await;
    let (one, two) = (far_job(&app, &account).await, far_job(&app, &account).await);
    let mut created = std::collections::HashSet::new();
    while created.len() < 2 {
        created.insert(id_of(&live.expect().await.job).to_owned());
    }
    bump(&app.db, &one).await;
    let before = live.expect().await;

    // The transaction holding the lower id commits last, and started first.
    let mut low = app.db.begin().await.unwrap();
    let mut high = app.db.begin().await.unwrap();
    bump(&mut *low, &one).await;
    bump(&mut *high, &two).await;
    high.commit().await.unwrap();
    assert_eq!(live.next(Duration::from_millis(1500)).await, None, "nothing is sent while a lower id may still commit");
    let mut resumed = Stream::open(&app.http, &app.api, Some(before.id)).await;
    low.commit().await.unwrap();
    let (first, second) = (live.expect().await, live.expect().await);
    assert!(first.id < second.id, "here the stream order is the id order: {first:?} {second:?}");
    assert_eq!((id_of(&first.job), id_of(&second.job)), (id_of(&one), id_of(&two)));
    assert_eq!(resumed.drain(Duration::from_secs(3)).await, [first.clone(), second.clone()]);

    // Now the transaction with the lower id started last: the higher id is sent first (its
    // transaction is older than every one running), and a client that saw it and reconnects
    // still gets the lower one.
    let mut high = app.db.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *high).await.unwrap();
    let mut low = app.db.begin().await.unwrap();
    bump(&mut *low, &one).await;
    bump(&mut *high, &two).await;
    high.commit().await.unwrap();
    let higher = live.expect().await;
    assert_eq!(id_of(&higher.job), id_of(&two));
    let mut reconnected = Stream::open(&app.http, &app.api, Some(higher.id)).await;
    low.commit().await.unwrap();
    let lower = live.expect().await;
    assert!(lower.id < higher.id, "{lower:?} was committed after {higher:?}");
    assert_eq!(reconnected.drain(Duration::from_secs(3)).await, std::slice::from_ref(&lower));

    // A repeat (a resume from further back) is the same event, id and data: applying it again,
    // or keeping the highest version per job, changes nothing.
    let mut again = Stream::open(&app.http, &app.api, Some(before.id)).await;
    assert_eq!(again.drain(Duration::from_secs(3)).await, [first, second, higher, lower]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_sees_only_its_creators_jobs() {
    let app = TestApp::spawn_api_only().await;
    let other = app.client_for("creator-2");
    let mut theirs = Stream::open(&other, &app.api, None).await;
    let mut mine = Stream::open(&app.http, &app.api, None).await;
    let account = app.link_account("instagram", "ig-token").await;
    let job = far_job(&app, &account).await;
    bump(&app.db, &job).await;
    let created = mine.expect().await;
    assert_eq!((created.job["id"].clone(), created.job["creator_id"].clone()), (job["id"].clone(), json!(CREATOR)));
    assert_eq!(mine.expect().await.version, created.version + 1);
    assert_eq!(theirs.next(Duration::from_millis(1500)).await, None);
    // Naming another creator's event does not resume into their stream.
    let mut probing = Stream::open(&other, &app.api, Some(created.id - 1)).await;
    assert_eq!(probing.next(Duration::from_millis(1500)).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_in_the_url_and_bad_last_event_ids_are_refused() {
    let app = TestApp::spawn_api_only().await;
    let token = app.token_for(CREATOR);
    let anonymous = reqwest::Client::new();
    for name in ["access_token", "token"] {
        let response = anonymous.get(format!("{}/v1/events?{name}={token}", app.api)).send().await.unwrap();
        assert_eq!(response.status(), 401, "a token in the query is no token");
        let body = response.text().await.unwrap();
        assert!(!body.contains(&token), "the answer repeats the token");
    }
    // Even with the header, a URL that carries a token is refused rather than served.
    let response = app.http.get(format!("{}/v1/events?access_token={token}", app.api)).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query");
    assert!(!body.to_string().contains(&token));

    let response = app.http.get(format!("{}/v1/events", app.api)).header("Last-Event-ID", "abc").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["error"]["code"].as_str(), body["error"]["field"].as_str()), (Some("invalid_last_event_id"), Some("Last-Event-ID")));
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_outlive_the_request_timeout_and_hold_no_request_slot() {
    let app =
        TestApp::spawn_with(Options { worker: false, api_request_timeout: "1s", max_concurrent_requests: 1, ..Options::default() }).await;
    let account = app.link_account("instagram", "ig-token").await;
    let job = far_job(&app, &account).await;
    let mut first = Stream::open(&app.http, &app.api, None).await;
    let mut second = Stream::open(&app.http, &app.api, None).await;
    // Two streams are open and the limit is one request: requests are still served.
    let (status, _) = app.get("/v1/publish-jobs").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    bump(&app.db, &job).await;
    for stream in [&mut first, &mut second] {
        let event = stream.expect().await;
        assert_eq!(event.job["id"], job["id"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_open_streams_without_waiting_for_the_grace() {
    let app = TestApp::spawn_api_only().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = app.config.api_config();
    let (db, grace) = (app.db.clone(), config.shutdown.shutdown_grace);
    let server = tokio::spawn(async move {
        autopost_app::run_api_with(&config, db, listener, metrics, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut stream = Stream::open(&app.http, &api, None).await;
    let started = Instant::now();
    stop.send(()).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(bytes) = stream.response.chunk().await.expect("the stream ends cleanly") {
            assert!(!String::from_utf8_lossy(&bytes).contains("id:"), "no events here");
        }
    });
    end.await.expect("the stream ended on shutdown");
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("the API stopped").unwrap().unwrap();
    assert!(started.elapsed() < grace, "the API waited out its {grace:?} grace");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warning_added_after_the_last_transition_is_an_event_at_its_version() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("instagram", "ig-token").await;
    let job = far_job(&app, &account).await;
    let mut stream = Stream::open(&app.http, &app.api, None).await;
    bump(&app.db, &job).await;
    // A stream opened without `Last-Event-ID` may send a few recent events again: the
    // creation's (version 0) can come before the bump's.
    let transition = loop {
        let event = stream.expect().await;
        if event.version == 1 {
            break event;
        }
        assert_eq!(event.version, 0, "{event:?}");
    };
    assert!(transition.job["warnings"].as_array().unwrap().is_empty());

    // As the first-comment activity writes it: no new version (the workflow owns it).
    let warning = autopost_activities::db::JobWarning {
        code: "instagram.first_comment_failed".into(),
        message: "the first comment could not be posted".into(),
        at: Utc::now(),
    };
    let id = id_of(&job).parse().unwrap();
    autopost_activities::db::add_warning(&app.db, id, &warning).await.unwrap();
    let warned = stream.expect().await;
    assert_eq!(warned.version, transition.version, "{warned:?}");
    assert_eq!(warned.job["warnings"][0]["code"], "instagram.first_comment_failed", "{warned:?}");
    autopost_activities::db::record_first_comment(&app.db, id, "17900000000000001").await.unwrap();
    assert_eq!(stream.expect().await.job["first_comment_id"], "17900000000000001");
    // The same warning again changes nothing, and sends nothing.
    autopost_activities::db::add_warning(&app.db, id, &warning).await.unwrap();
    assert_eq!(stream.next(Duration::from_millis(1500)).await, None);
}
