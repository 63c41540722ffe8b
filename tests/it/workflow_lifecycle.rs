//! Issue 13, part 4: workflows close and stay small. A `needs_attention` job closes its workflow
//! after the attention TTL and a command starts a new run (update-with-start); repeated commands
//! continue as new, and a command racing a continue-as-new is neither lost nor applied twice.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use crate::common::{Options, TestApp};
use chrono::{DateTime, SubsecRound, Utc};
use futures::{TryStreamExt, future::join_all};
use serde_json::{Value, json};
use temporalio_client::{Client, WorkflowExecutionStatus, WorkflowListOptions};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn in_secs(seconds: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(seconds)
}

/// Every run of the job's workflow, oldest first, once visibility shows at least `at_least`.
async fn runs(temporal: &Client, workflow_id: &str, at_least: usize) -> Vec<WorkflowExecutionStatus> {
    let query = format!("WorkflowId = '{workflow_id}'");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut found: Vec<(Option<std::time::SystemTime>, WorkflowExecutionStatus)> = temporal
            .list_workflows(query.clone(), WorkflowListOptions::default())
            .map_ok(|w| (w.start_time(), w.status()))
            .try_collect()
            .await
            .unwrap();
        found.sort_by_key(|(started, _)| *started);
        if found.len() >= at_least || Instant::now() > deadline {
            return found.into_iter().map(|(_, status)| status).collect();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run_ids(temporal: &Client, workflow_id: &str) -> Vec<String> {
    temporal
        .list_workflows(format!("WorkflowId = '{workflow_id}'"), WorkflowListOptions::default())
        .map_ok(|w| w.run_id().to_owned())
        .try_collect()
        .await
        .unwrap()
}

/// Whether the run's input carried a command over from the run before.
fn started_with_a_carried_command(history: &Value) -> bool {
    use base64::Engine;
    let data = &history["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]["input"]["payloads"][0]["data"];
    let input: Value = serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap()).unwrap()).unwrap();
    input["resume"]["carried"]["pending"].is_object()
}

/// Every run's status, once visibility (which lags) shows `expected`, or after 20 s.
async fn runs_until(temporal: &Client, workflow_id: &str, expected: &[WorkflowExecutionStatus]) -> Vec<WorkflowExecutionStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = runs(temporal, workflow_id, expected.len()).await;
        if found == expected || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The job's current run, once it has reached `status`.
async fn wait_for_run_status(temporal: &Client, workflow_id: &str, status: WorkflowExecutionStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let handle = temporal.get_workflow_handle::<autopost_workflows::PublishPostWorkflow>(workflow_id.to_owned());
        let now = handle.describe(Default::default()).await.unwrap().status();
        if now == status {
            return;
        }
        assert!(Instant::now() < deadline, "{workflow_id} is {now:?}, not {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn needs_attention(app: &TestApp, account: &str, caption: &str) -> Value {
    let unsupported = json!({ "error": { "message": "The image format is not supported.", "type": "OAuthException",
        "code": 36001, "error_subcode": 2207005, "is_transient": false, "fbtrace_id": "AbCdEf" } });
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 1, "status": 400, "body": unsupported })).await;
    let job = app.schedule(account, in_secs(1), caption, image(app)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "needs_attention", WAIT).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_left_in_needs_attention_closes_its_workflow_and_a_later_command_starts_a_new_run() {
    let app = TestApp::spawn_with(Options { attention_ttl: "2s", ..Options::default() }).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let account = app.link_account("instagram", "token-unattended").await;

    let job = needs_attention(&app, &account, "left alone").await;
    let (id, workflow_id) = (job["id"].as_str().unwrap(), job["workflow_id"].as_str().unwrap());
    wait_for_run_status(&temporal, workflow_id, WorkflowExecutionStatus::Completed).await;
    // The row still tells the creator what is wrong; the reconciler (every second here) leaves
    // the closed workflow closed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, after) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    assert_eq!(after["status"], "needs_attention", "{after}");
    assert_eq!(after["last_error"], job["last_error"], "the error stays: {after}");
    assert_eq!(runs(&temporal, workflow_id, 1).await, [WorkflowExecutionStatus::Completed], "nothing revived it");

    // The creator's retry starts a second run, which publishes.
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let published = app.wait_for_status(id, "published", WAIT).await;
    assert_eq!(published["attempt_count"], 2, "the attempt numbers go on: {published}");
    assert_eq!(app.sandbox_posts().await.len(), 1);
    assert_eq!(runs_until(&temporal, workflow_id, &[WorkflowExecutionStatus::Completed; 2]).await, [WorkflowExecutionStatus::Completed; 2]);
    // Published and closed: a command starts nothing.
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/retry"), &json!({})).await;
    assert_eq!((status, &body["error"]["status"]), (409, &json!("published")), "{body}");

    // Another unattended job: the creator cancels it instead.
    let other = needs_attention(&app, &account, "cancelled later").await;
    let other_id = other["id"].as_str().unwrap();
    wait_for_run_status(&temporal, other["workflow_id"].as_str().unwrap(), WorkflowExecutionStatus::Completed).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{other_id}/cancel"), &json!({})).await;
    assert_eq!((status, &body["status"]), (200, &json!("cancelled")), "{body}");
    let (status, body) = app.post(&format!("/v1/publish-jobs/{other_id}/retry"), &json!({})).await;
    assert_eq!((status, &body["error"]["status"]), (409, &json!("cancelled")), "{body}");
    assert_eq!(app.sandbox_posts().await.len(), 1, "the cancelled job never posted");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_reschedules_continue_as_new_and_the_job_still_publishes_once() {
    let app = TestApp::spawn_with(Options { commands_per_run: 2, ..Options::default() }).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let account = app.link_account("instagram", "token-many-reschedules").await;
    let job = app.schedule(&account, in_secs(3600), "moved around", image(&app)).await;
    let (id, workflow_id) = (job["id"].as_str().unwrap(), job["workflow_id"].as_str().unwrap());

    for minutes in 1..=7 {
        let publish_at = Utc::now().trunc_subsecs(0) + chrono::Duration::minutes(60 + minutes);
        let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/reschedule"), &json!({ "publish_at": publish_at })).await;
        assert_eq!(status, 200, "reschedule {minutes}: {body}");
        assert_eq!(body["publish_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), publish_at, "{body}");
    }
    // Seven commands, two per run: the fourth run waits for the last time.
    let expected = [
        WorkflowExecutionStatus::ContinuedAsNew,
        WorkflowExecutionStatus::ContinuedAsNew,
        WorkflowExecutionStatus::ContinuedAsNew,
        WorkflowExecutionStatus::Running,
    ];
    let statuses = runs_until(&temporal, workflow_id, &expected).await;
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses[..3].iter().all(|s| *s == WorkflowExecutionStatus::ContinuedAsNew), "{statuses:?}");
    assert_eq!(statuses[3], WorkflowExecutionStatus::Running);

    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/reschedule"), &json!({ "publish_at": in_secs(2) })).await;
    assert_eq!(status, 200, "{body}");
    let published = app.wait_for_status(id, "published", WAIT).await;
    assert_eq!(published["attempt_count"], 1, "{published}");
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_racing_a_continue_as_new_is_neither_lost_nor_applied_twice() {
    // One command per run: every accepted reschedule ends its run, so the commands that follow
    // it at once meet a run that is continuing as new.
    // A command accepted during the readiness check that follows a reschedule is carried into
    // the next run. The check is a local activity: commands reach the run during it only at the
    // SDK's workflow-task heartbeat (8 s), so one check is made slower than that, and commands
    // may take that long to be accepted.
    let app = TestApp::spawn_with(Options {
        commands_per_run: 1,
        creator_writes_per_minute: 0,
        command_timeout: "30s",
        request_timeout: "20s",
        ..Options::default()
    })
    .await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let account = app.link_account("instagram", "token-race-can").await;
    let job = app.schedule(&account, in_secs(3600), "raced", image(&app)).await;
    let (id, workflow_id) = (job["id"].as_str().unwrap(), job["workflow_id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get(&format!("/v1/publish-jobs/{id}")).await.1["readiness"]["checked_at"].is_null() {
        assert!(std::time::Instant::now() < deadline, "the creation's readiness was never checked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.sandbox_fault(json!({ "endpoint": "media", "times": 1, "delay_ms": 9000 })).await;

    let mut accepted = BTreeSet::new();
    for round in 0..6 {
        let times: Vec<DateTime<Utc>> =
            (0..3).map(|i| Utc::now().trunc_subsecs(0) + chrono::Duration::minutes(90 + round * 3 + i)).collect();
        let answers = join_all(times.iter().map(|at| {
            let app = &app;
            async move { (*at, app.post(&format!("/v1/publish-jobs/{id}/reschedule"), &json!({ "publish_at": at })).await) }
        }))
        .await;
        for (at, (status, body)) in answers {
            match status {
                200 => assert!(accepted.insert(at), "{body}"),
                // One command at a time: a concurrent one is refused, never queued behind.
                409 => assert_eq!(body["error"]["code"], "invalid_state", "{body}"),
                _ => panic!("reschedule to {at}: {status} {body}"),
            }
        }
    }
    assert!(accepted.len() >= 6, "at least one command per round went through: {accepted:?}");
    // Each accepted command was carried out exactly once: one mirrored transition each, and
    // the job's time is one of theirs.
    let (_, now) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM publish_jobs WHERE id = $1::uuid").bind(id).fetch_one(&app.db).await.unwrap();
    assert_eq!(version, accepted.len() as i64, "{now}");
    let publish_at: DateTime<Utc> = now["publish_at"].as_str().unwrap().parse().unwrap();
    assert!(accepted.contains(&publish_at), "{publish_at} is not an accepted time: {accepted:?}");
    let statuses = runs(&temporal, workflow_id, accepted.len() + 1).await;
    assert_eq!(statuses.len(), accepted.len() + 1, "one run per accepted command, and the waiting one: {statuses:?}");
    // The race happened: some runs began with a command the run before had accepted and not
    // yet carried out. Every run replays.
    let mut carried = 0;
    for run in run_ids(&temporal, workflow_id).await {
        let history = autopost_app::replay::fetch(&temporal, workflow_id, Some(&run)).await.unwrap();
        carried += usize::from(started_with_a_carried_command(&serde_json::to_value(&history).unwrap()));
        let outcomes =
            autopost_app::replay::replay(vec![autopost_app::replay::Input { source: run, format: None, history }]).await.unwrap();
        assert_eq!(outcomes[0].result, autopost_app::replay::Verdict::Ok, "{}", outcomes[0]);
    }
    assert!(carried > 0, "no command met a continue-as-new; the race was not exercised");

    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/reschedule"), &json!({ "publish_at": in_secs(2) })).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_status(id, "published", WAIT).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);
}
