//! One seeded run: the jobs, the faults and commands on a timeline, the wait for every job to
//! settle, and the checker.

use std::time::{Duration, Instant};

use anyhow::Context;
use autopost_workflows::{JobStatus, workflow_id};
use chrono::Utc;
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};
use temporalio_client::{WorkflowDescribeOptions, WorkflowExecutionStatus};

use super::stack::{Stack, WORKERS};

/// Every kind of violation the checker knows, in the report's order.
pub(crate) const VIOLATION_KINDS: [&str; 7] = [
    "posted_twice",
    "cancelled_but_posted",
    "needs_attention_but_posted",
    "published_without_post",
    "published_wrong_content",
    "not_settled",
    "postgres_temporal_disagree",
];

/// How long every job has to settle once the faults are over.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);
/// How long a job's workflow has to close once its row is final.
const CLOSE_WITHIN: Duration = Duration::from_secs(30);

pub(crate) struct Outcome {
    pub jobs: usize,
    pub faults: Vec<String>,
    pub violations: Vec<String>,
    pub violation_kinds: Vec<(&'static str, String)>,
    pub final_statuses: Vec<&'static str>,
}

/// The fault's kind, for the totals: the text before its first space.
pub(crate) fn fault_kind(fault: &str) -> &'static str {
    const KINDS: [&str; 9] = [
        "platform_error",
        "platform_error_after_accept",
        "token_error",
        "slow_answer",
        "worker_sigkill",
        "worker_sigterm",
        "temporal_restart",
        "postgres_restart",
        "api_killed_during_create",
    ];
    let head = fault.split(' ').next().unwrap_or("");
    KINDS.into_iter().find(|k| *k == head).unwrap_or("other")
}

struct Job {
    id: String,
    caption: String,
    media_url: String,
    channel: &'static str,
    /// A command whose answer was 200: what the creator was told.
    confirmed: Option<&'static str>,
}

enum Event {
    KillWorker(usize),
    TermWorker(usize),
    StartWorker(usize),
    RestartTemporal(Duration),
    RestartPostgres,
    Command { job: usize, command: &'static str },
}

pub(crate) async fn run_once(stack: &mut Stack, seed: u64, run: usize) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = stack.client(Duration::from_secs(20))?;
    let sandbox = stack.sandbox_url();
    post_ok(&http, &format!("{sandbox}/_sandbox/reset"), &json!({})).await?;
    let accounts = link_accounts(&http, stack, run).await?;
    let mut faults = Vec::new();

    // Platform faults, taken by the next calls to their endpoint.
    for _ in 0..rng.random_range(0..=2) {
        faults.push(platform_fault(&mut rng, &http, &sandbox).await?);
    }

    // The jobs, due within seconds. A killed API mid-create is retried with the same key.
    let kill_api_at = rng.random_bool(0.15).then(|| rng.random_range(0..3usize));
    let count = rng.random_range(2..=4usize);
    let start = Instant::now();
    let mut jobs = Vec::new();
    let mut dues = Vec::new();
    for i in 0..count {
        let (channel, account, kind, file) =
            *[("instagram", &accounts.0, "image", "sample.jpg"), ("tiktok", &accounts.1, "video", "sample.mp4")]
                .choose(&mut rng)
                .expect("two channels");
        let due_in = Duration::from_millis(rng.random_range(3000..7000));
        let caption = format!("chaos {seed} job {i}");
        let media_url = format!("{sandbox}/media/{file}");
        let mut body = json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::from_std(due_in)?, "caption": caption,
            "media": [{ "url": media_url, "kind": kind }] });
        if channel == "tiktok" {
            body["options"] = json!({ "channel": "tiktok", "privacy_level": "PUBLIC_TO_EVERYONE" });
        }
        let key = format!("chaos-{seed}-{i}");
        let id = if kill_api_at == Some(i) {
            faults.push(format!("api_killed_during_create job {i}"));
            let url = format!("{}/v1/publish-jobs", stack.api_url());
            let in_flight = tokio::spawn(http.post(url).header("Idempotency-Key", key.clone()).json(&body).send());
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
            stack.kill_api().await?;
            let _ = in_flight.await;
            stack.start_api().await?;
            create(&http, stack, &key, &body).await?
        } else {
            create(&http, stack, &key, &body).await?
        };
        jobs.push(Job { id, caption, media_url, channel, confirmed: None });
        dues.push(start.elapsed() + due_in);
    }

    // The timeline: process faults, and commands racing each job's due instant.
    let mut timeline: Vec<(Duration, Event)> = Vec::new();
    for _ in 0..rng.random_range(0..=2) {
        let at = Duration::from_millis(rng.random_range(2000..9000));
        match rng.random_range(0..4) {
            0 => {
                let worker = rng.random_range(0..WORKERS);
                faults.push(format!("worker_sigkill worker {worker} at {}ms", at.as_millis()));
                timeline.push((at, Event::KillWorker(worker)));
                timeline.push((at + Duration::from_millis(rng.random_range(500..4000)), Event::StartWorker(worker)));
            }
            1 => {
                let worker = rng.random_range(0..WORKERS);
                faults.push(format!("worker_sigterm worker {worker} at {}ms", at.as_millis()));
                timeline.push((at, Event::TermWorker(worker)));
                timeline.push((at + Duration::from_millis(rng.random_range(500..3000)), Event::StartWorker(worker)));
            }
            2 => {
                let down = Duration::from_millis(rng.random_range(200..2000));
                faults.push(format!("temporal_restart at {}ms, down {}ms", at.as_millis(), down.as_millis()));
                timeline.push((at, Event::RestartTemporal(down)));
            }
            _ => {
                faults.push(format!("postgres_restart at {}ms", at.as_millis()));
                timeline.push((at, Event::RestartPostgres));
            }
        }
    }
    for (index, due) in dues.iter().enumerate() {
        if rng.random_bool(0.4) {
            let command = *["cancel", "reschedule", "publish-now", "retry"].choose(&mut rng).expect("commands");
            let offset = rng.random_range(-1500i64..1500);
            let at = Duration::from_millis((due.as_millis() as i64 + offset).max(0) as u64);
            timeline.push((at, Event::Command { job: index, command }));
        }
    }
    timeline.sort_by_key(|(at, _)| *at);
    for (at, event) in timeline {
        tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
        match event {
            Event::KillWorker(i) => stack.stop_worker(i, Signal::SIGKILL).await?,
            Event::TermWorker(i) => stack.stop_worker(i, Signal::SIGTERM).await?,
            Event::StartWorker(i) => stack.start_worker(i)?,
            Event::RestartTemporal(down) => stack.temporal.kill_and_restart(down).await?,
            Event::RestartPostgres => stack.pg.restart().await?,
            Event::Command { job, command } => {
                let body =
                    if command == "reschedule" { json!({ "publish_at": Utc::now() + chrono::Duration::seconds(3) }) } else { json!({}) };
                let url = format!("{}/v1/publish-jobs/{}/{command}", stack.api_url(), jobs[job].id);
                if let Ok(response) = http.post(url).json(&body).send().await
                    && response.status() == 200
                {
                    jobs[job].confirmed = Some(command);
                }
            }
        }
    }
    // The faults are over: every process runs again.
    for i in 0..WORKERS {
        stack.start_worker(i)?;
    }

    let settled = settle(&http, stack, &jobs).await;
    let posts: Vec<Value> = get_json(&http, &format!("{sandbox}/_sandbox/posts")).await?["posts"].as_array().cloned().unwrap_or_default();
    let temporal = autopost_app::connect_temporal(&stack.config.temporal).await?;
    let mut violation_kinds = Vec::new();
    let mut final_statuses = Vec::new();
    for (job, state) in jobs.iter().zip(&settled) {
        let mine: Vec<&Value> = posts.iter().filter(|p| p["caption"] == job.caption.as_str()).collect();
        let status = state["status"].as_str().and_then(|s| s.parse::<JobStatus>().ok());
        final_statuses.push(status.map_or("unknown", JobStatus::as_str));
        let code = state["last_error"]["code"].as_str().unwrap_or("");
        let mut violation =
            |kind: &'static str, detail: String| violation_kinds.push((kind, format!("{kind}: job {} ({}) {detail}", job.id, job.channel)));
        if mine.len() > 1 {
            violation("posted_twice", format!("{} posts", mine.len()));
        }
        match status {
            Some(JobStatus::Cancelled) if !mine.is_empty() => violation("cancelled_but_posted", String::new()),
            Some(JobStatus::NeedsAttention) if !mine.is_empty() && !code.ends_with("publish_outcome_unknown") => {
                violation("needs_attention_but_posted", format!("code {code}"))
            }
            Some(JobStatus::Published) if mine.is_empty() => violation("published_without_post", String::new()),
            Some(JobStatus::Published) if mine[0]["media"][0] != job.media_url.as_str() => {
                violation("published_wrong_content", format!("media {}", mine[0]["media"]))
            }
            Some(JobStatus::Published | JobStatus::Cancelled | JobStatus::NeedsAttention) => {}
            Some(JobStatus::Failed) if state["next_attempt_at"].is_string() => {}
            _ => violation("not_settled", format!("still {state}")),
        }
        if job.confirmed == Some("cancel") && !mine.is_empty() {
            violation("cancelled_but_posted", "after its cancel was confirmed".into());
        }
        // Postgres and Temporal agree: a final row's workflow has closed, an open row's runs. The
        // final mirror write comes just before the workflow closes, and a killed worker's last
        // step is redone by another a few seconds later: the workflow gets a bound to close.
        if let (Some(status), Ok(id)) = (status, job.id.parse()) {
            let handle = temporal.get_workflow_handle::<autopost_workflows::PublishPostWorkflow>(workflow_id(id));
            let deadline = Instant::now() + CLOSE_WITHIN;
            let running = loop {
                let running =
                    handle.describe(WorkflowDescribeOptions::default()).await.map(|d| d.status() == WorkflowExecutionStatus::Running);
                if !(status.is_final() && matches!(running, Ok(true))) || Instant::now() >= deadline {
                    break running;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            match running {
                Ok(true) if status.is_final() => violation("postgres_temporal_disagree", format!("row {status}, workflow still running")),
                Ok(false) if !status.is_final() => violation("postgres_temporal_disagree", format!("row {status}, workflow closed")),
                Err(e) => violation("postgres_temporal_disagree", format!("row {status}, workflow not found: {e}")),
                _ => {}
            }
        }
    }
    let violations = violation_kinds.iter().map(|(_, text)| text.clone()).collect();
    Ok(Outcome { jobs: jobs.len(), faults, violations, violation_kinds, final_statuses })
}

/// A platform error on a random endpoint: before the platform acted, or after (it did the work,
/// then answered with the error), or only a slow answer (longer than the heartbeat timeout).
async fn platform_fault(rng: &mut StdRng, http: &reqwest::Client, sandbox: &str) -> anyhow::Result<String> {
    let endpoint = *[
        "instagram.me",
        "instagram.media",
        "instagram.container_status",
        "instagram.media_publish",
        "tiktok.creator_info",
        "tiktok.video_init",
        "tiktok.status_fetch",
        "media",
    ]
    .choose(rng)
    .expect("endpoints");
    let times = rng.random_range(1..=3);
    let after_accept = rng.random_bool(0.4);
    let (spec, kind) = match rng.random_range(0..5) {
        // The platform's own token error: the job needs the creator (reconnect), never posts twice.
        4 if endpoint.starts_with("instagram") => {
            let body = json!({ "error": { "message": "Error validating access token: Session has expired.", "type": "OAuthException",
                "code": 190, "error_subcode": 463, "fbtrace_id": "ChaosTrace" } });
            (json!({ "endpoint": endpoint, "times": times, "status": 400, "body": body, "after_accept": after_accept }), "token_error")
        }
        4 if endpoint.starts_with("tiktok") => {
            let body = json!({ "data": {}, "error": { "code": "access_token_invalid", "message": "The access token is invalid.", "log_id": "chaos" } });
            (json!({ "endpoint": endpoint, "times": times, "status": 401, "body": body, "after_accept": after_accept }), "token_error")
        }
        0 => (
            json!({ "endpoint": endpoint, "times": times, "delay_ms": rng.random_range(2500..5000), "after_accept": after_accept }),
            "slow_answer",
        ),
        1 => (json!({ "endpoint": endpoint, "times": times, "status": 429, "after_accept": after_accept }), "platform_error"),
        2 => (json!({ "endpoint": endpoint, "times": times, "status": 503, "after_accept": after_accept }), "platform_error"),
        _ => (json!({ "endpoint": endpoint, "times": times, "status": 500, "after_accept": after_accept }), "platform_error"),
    };
    let kind = match kind {
        "platform_error" | "token_error" if after_accept => "platform_error_after_accept",
        kind => kind,
    };
    post_ok(http, &format!("{sandbox}/_sandbox/faults"), &spec).await?;
    Ok(format!("{kind} {endpoint} x{times}{}", if after_accept { " after accept" } else { "" }))
}

/// One Instagram and one TikTok account per run, with tokens of their own.
async fn link_accounts(http: &reqwest::Client, stack: &Stack, run: usize) -> anyhow::Result<(String, String)> {
    let mut ids = Vec::new();
    for channel in ["instagram", "tiktok"] {
        let token = format!("chaos-{channel}-{run}");
        let user = if channel == "tiktok" { autopost_sandbox::tiktok_open_id(&token) } else { autopost_sandbox::instagram_user_id(&token) };
        let body = json!({ "channel": channel, "platform_user_id": user, "access_token": token,
            "token_expires_at": Utc::now() + chrono::Duration::days(30) });
        let reply = retrying(|| http.post(format!("{}/v1/accounts", stack.api_url())).json(&body).send()).await?;
        ids.push(reply["id"].as_str().context("no account id")?.to_owned());
    }
    Ok((ids[0].clone(), ids[1].clone()))
}

/// Creates a job, retrying through API restarts and outages with the same Idempotency-Key.
async fn create(http: &reqwest::Client, stack: &Stack, key: &str, body: &Value) -> anyhow::Result<String> {
    let reply =
        retrying(|| http.post(format!("{}/v1/publish-jobs", stack.api_url())).header("Idempotency-Key", key).json(body).send()).await?;
    Ok(reply["id"].as_str().with_context(|| format!("no job id in {reply}"))?.to_owned())
}

/// Sends until a 2xx answer (for up to a minute): the stack may be mid-restart.
async fn retrying<F, Fut>(send: F) -> anyhow::Result<Value>
where
    F: Fn() -> Fut,
    Fut: Future<Output = reqwest::Result<reqwest::Response>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match send().await {
            Ok(response) if response.status().is_success() => return Ok(response.json().await?),
            Ok(response) => format!("{}: {}", response.status(), response.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        anyhow::ensure!(Instant::now() < deadline, "no success within a minute: {last}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls every job until it is published, cancelled or needs attention, or the bound ends.
async fn settle(http: &reqwest::Client, stack: &Stack, jobs: &[Job]) -> Vec<Value> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    let mut states = vec![Value::Null; jobs.len()];
    loop {
        for (job, state) in jobs.iter().zip(states.iter_mut()) {
            if let Ok(job) = get_json(http, &format!("{}/v1/publish-jobs/{}", stack.api_url(), job.id)).await {
                *state = job;
            }
        }
        let done = states.iter().all(|s| ["published", "cancelled", "needs_attention"].contains(&s["status"].as_str().unwrap_or("")));
        if done || Instant::now() >= deadline {
            // Let a closing workflow take its last step before Temporal is asked about it.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return states;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http.get(url).send().await?.error_for_status()?.json().await?)
}

async fn post_ok(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<()> {
    http.post(url).json(body).send().await?.error_for_status().with_context(|| format!("POST {url}"))?;
    Ok(())
}
