//! The test harness: a whole system per test, on the real Temporal server and PostgreSQL.
//!
//! Each test gets a fresh database (on the server `DATABASE_URL` names, 127.0.0.1:5432 when
//! unset), its own Temporal task queue (so tests sharing one server never run each other's
//! workflows), an in-process sandbox and API on port 0, and, unless it only tests the API's
//! contract, a worker running as a real `autopost worker` process that it can stop and start.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use autopost_app::Config;
use autopost_workflows::JobStatus;
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{net::TcpListener, process::Child};
use uuid::Uuid;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

/// The creator the harness's `http` client acts for.
pub const CREATOR: &str = "creator-1";

/// The JWT secret of every test app.
pub const JWT_SECRET: &str = "the-test-suites-hs256-secret-of-32-plus-chars";

/// The token key of every test stack (`AUTOPOST_TOKEN_KEYS`).
pub const TEST_TOKEN_KEYS: &str = "t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

pub struct TestApp {
    pub api: String,
    /// Where the API serves `/metrics` (its own listener).
    pub api_metrics: String,
    pub sandbox: String,
    /// Sends [`CREATOR`]'s bearer token with every request.
    pub http: reqwest::Client,
    pub db: PgPool,
    pub config: Config,
    worker: Option<Child>,
    worker_log: PathBuf,
    /// More environment for the `autopost` processes this app starts (`OTEL_*`, say).
    pub child_env: Vec<(String, String)>,
}

pub struct Options {
    /// `AUTOPOST_RETRY_BACKOFF` for this app.
    pub retry_backoff: &'static str,
    /// `AUTOPOST_PUBLISH_NOW`.
    pub publish_now: bool,
    /// Start a worker process; contract tests of the API need none.
    pub worker: bool,
    /// `AUTOPOST_HEARTBEAT_TIMEOUT`: short, so a dead worker's attempt is taken over quickly.
    pub heartbeat_timeout: &'static str,
    /// `AUTOPOST_COMMAND_TIMEOUT`.
    pub command_timeout: &'static str,
    /// `AUTOPOST_STUCK_AFTER`.
    pub stuck_after: &'static str,
    /// `AUTOPOST_PLATFORM_OUTCOME_WAIT`.
    pub outcome_wait: &'static str,
    /// `AUTOPOST_PLATFORM_REQUEST_TIMEOUT`.
    pub request_timeout: &'static str,
    /// `AUTOPOST_PREFLIGHT_DEADLINE`.
    pub preflight_deadline: &'static str,
    /// `AUTOPOST_CREATOR_WRITES_PER_MINUTE` (`0`: no limit).
    pub creator_writes_per_minute: u32,
    /// `AUTOPOST_REQUEST_TIMEOUT` (the API's).
    pub api_request_timeout: &'static str,
    /// `AUTOPOST_MAX_CONCURRENT_REQUESTS`.
    pub max_concurrent_requests: usize,
    /// `AUTOPOST_ATTENTION_TTL`.
    pub attention_ttl: &'static str,
    /// `AUTOPOST_COMMANDS_PER_RUN`.
    pub commands_per_run: u32,
    /// `AUTOPOST_SHUTDOWN_GRACE`.
    pub shutdown_grace: &'static str,
    /// `AUTOPOST_ARM_LEAD`.
    pub arm_lead: &'static str,
    /// `AUTOPOST_ARM_SPREAD`.
    pub arm_spread: &'static str,
    /// `AUTOPOST_INSTAGRAM_QUOTA_RECHECK`.
    pub instagram_quota_recheck: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry_backoff: "1s,1s,1s",
            publish_now: false,
            worker: true,
            heartbeat_timeout: "3s",
            command_timeout: "10s",
            stuck_after: "10m",
            outcome_wait: "3s",
            request_timeout: "5s",
            preflight_deadline: "60s",
            creator_writes_per_minute: 120,
            api_request_timeout: "60s",
            max_concurrent_requests: 512,
            attention_ttl: "30days",
            commands_per_run: 100,
            shutdown_grace: "20s",
            arm_lead: "2m",
            arm_spread: "1m",
            instagram_quota_recheck: "1h",
        }
    }
}

/// The PostgreSQL server the tests use, as a URL without a database: `DATABASE_URL`'s, so that
/// `temporal-dev/test` can point the suite at a private cluster.
fn postgres_server() -> url::Url {
    let raw = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut url = url::Url::parse(&raw).expect("DATABASE_URL is a URL");
    url.set_path("");
    url
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// The API, its database and the sandbox, without a worker: for tests of the API's contract.
    pub async fn spawn_api_only() -> Self {
        Self::spawn_with(Options { worker: false, ..Options::default() }).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let sandbox_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox_addr = sandbox_listener.local_addr().unwrap();
        let database = format!("autopost_test_{}", Uuid::new_v4().simple());
        let temporal = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".into());
        let mut database_url = postgres_server();
        database_url.set_path(&database);
        let mut config = Flags::parse_from([
            "autopost".to_owned(),
            format!("--database-url={database_url}"),
            format!("--temporal-address={temporal}"),
            // A developer's own Temporal profile never reaches the tests.
            "--temporal-config-file=/dev/null".into(),
            "--temporal-namespace=default".into(),
            format!("--task-queue=autopost-test-{}", Uuid::new_v4().simple()),
            format!("--sandbox-listen={sandbox_addr}"),
            // The calendar page offers tokens from the sandbox, as under `autopost dev`.
            format!("--dev-sandbox-url=http://{sandbox_addr}"),
            format!("--retry-backoff={}", options.retry_backoff),
            format!("--publish-now={}", options.publish_now),
            format!("--heartbeat-timeout={}", options.heartbeat_timeout),
            format!("--command-timeout={}", options.command_timeout),
            format!("--stuck-after={}", options.stuck_after),
            format!("--platform-outcome-wait={}", options.outcome_wait),
            "--platform-poll-interval=100ms".into(),
            "--platform-processing-timeout=20s".into(),
            format!("--platform-request-timeout={}", options.request_timeout),
            format!("--preflight-deadline={}", options.preflight_deadline),
            // The worker is a child process: a port of its own, never a `dev` stack's.
            "--worker-metrics-listen=127.0.0.1:0".into(),
            "--reconcile-interval=1s".into(),
            "--reconcile-grace=3s".into(),
            "--tiktok-client-key=test-client-key".into(),
            "--tiktok-client-secret=test-client-secret".into(),
            format!("--token-keys={TEST_TOKEN_KEYS}"),
            format!("--jwt-secret={JWT_SECRET}"),
            format!("--creator-writes-per-minute={}", options.creator_writes_per_minute),
            format!("--request-timeout={}", options.api_request_timeout),
            format!("--max-concurrent-requests={}", options.max_concurrent_requests),
            format!("--attention-ttl={}", options.attention_ttl),
            format!("--commands-per-run={}", options.commands_per_run),
            format!("--shutdown-grace={}", options.shutdown_grace),
            format!("--arm-lead={}", options.arm_lead),
            format!("--arm-spread={}", options.arm_spread),
            format!("--instagram-quota-recheck={}", options.instagram_quota_recheck),
        ])
        .config;
        config.use_sandbox_platforms();

        let db = autopost_app::migrate(&config.postgres, &config.token_keys).await.expect("migrating the test database");
        tokio::spawn(autopost_app::run_sandbox(sandbox_listener, std::future::pending()));
        let api = format!("http://{}", api_listener.local_addr().unwrap());
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_metrics = format!("http://{}/metrics", metrics_listener.local_addr().unwrap());
        let api_config = config.api_config();
        let api_db = db.clone();
        tokio::spawn(async move {
            autopost_app::run_api_with(&api_config, api_db, api_listener, metrics_listener, std::future::pending())
                .await
                .expect("API failed");
        });

        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let name = std::thread::current().name().unwrap_or("test").replace("::", "-");
        let mut app = TestApp {
            api,
            api_metrics,
            sandbox: config.sandbox.url(),
            http: client_for(&token_for(&config, CREATOR)),
            db,
            config,
            worker: None,
            worker_log: logs.join(format!("{name}-{database}.log")),
            child_env: Vec::new(),
        };
        if options.worker {
            app.start_worker();
        }
        app.wait_until_ready().await;
        if options.worker {
            app.wait_for_worker_polling().await;
        }
        app
    }

    /// Starts `autopost worker` as its own process, as it runs in production.
    pub fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "a worker is already running");
        self.worker = Some(self.spawn_worker_process());
    }

    /// The running worker's process id (to freeze it with SIGSTOP, say).
    pub fn worker_pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.worker.as_ref().expect("a worker runs").id().unwrap() as i32)
    }

    /// `autopost <subcommand>` with this app's configuration (and `child_env`), logging JSON to
    /// the app's process log, killed when dropped.
    fn autopost_process(&self, subcommand: &str) -> tokio::process::Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.worker_log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_autopost"));
        command
            .arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,temporalio_sdk_core=warn")
            .envs(self.config.to_env())
            .env("AUTOPOST_LOG_FORMAT", "json")
            .envs(self.child_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        command
    }

    /// One more `autopost worker` process on the same task queue, logging to the same file;
    /// the caller owns it (it is killed when dropped).
    pub fn spawn_worker_process(&self) -> Child {
        self.autopost_process("worker").spawn().expect("starting the worker process")
    }

    /// `autopost api` as its own process, as it runs in production, on a port of its own; once
    /// it answers. Returns the process (killed when dropped) and its URL.
    pub async fn spawn_api_process(&self) -> (Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = self
            .autopost_process("api")
            .env("AUTOPOST_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTOPOST_METRICS_LISTEN", "127.0.0.1:0")
            .spawn()
            .expect("starting the API process");
        let api = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{api}/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "the API process never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (child, api)
    }

    /// Stops the worker gracefully (SIGTERM) and waits for the process to exit.
    pub async fn stop_worker(&mut self) {
        let mut child = self.worker.take().expect("no worker is running");
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("worker did not stop").unwrap();
    }

    /// Kills the worker without warning (SIGKILL), as a crash or an OOM kill would.
    pub async fn kill_worker(&mut self) {
        let mut child = self.worker.take().expect("no worker is running");
        child.kill().await.unwrap();
    }

    pub fn worker_log(&self) -> String {
        std::fs::read_to_string(&self.worker_log).unwrap_or_default()
    }

    /// The worker's JSON log lines whose message is `message`.
    pub fn worker_events(&self, message: &str) -> Vec<Value> {
        self.worker_log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == message)
            .collect()
    }

    /// Where the (current) worker serves `/metrics`, from its log.
    pub async fn worker_metrics_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(event) = self.worker_events("worker metrics listening").last() {
                return format!("http://{}/metrics", event["address"].as_str().unwrap());
            }
            assert!(Instant::now() < deadline, "the worker never said where its metrics are");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the (latest) worker's own `/readyz` finds it among the task queue's pollers.
    /// A job scheduled before that waits out a slow Temporal connect and can miss its instant,
    /// which the timing tests would then blame on the product.
    pub async fn wait_for_worker_polling(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        loop {
            if let Some(event) = self.worker_events("worker metrics listening").last() {
                let url = format!("http://{}/readyz", event["address"].as_str().unwrap());
                if let Ok(r) = probe.get(url).send().await
                    && r.status().is_success()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the worker never polled its task queue:\n{}", self.worker_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.api)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the API did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn media_url(&self, name: &str) -> String {
        format!("{}/media/{name}", self.sandbox)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_to(&self.api, path, body).await
    }

    /// A POST, as [`CREATOR`], to the API at `api` (another API process, say).
    pub async fn post_to(&self, api: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(format!("{api}{path}")).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.api)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A bearer token for `creator`, signed with the app's secret.
    pub fn token_for(&self, creator: &str) -> String {
        token_for(&self.config, creator)
    }

    /// A client that sends `creator`'s bearer token.
    pub fn client_for(&self, creator: &str) -> reqwest::Client {
        client_for(&self.token_for(creator))
    }

    /// Links [`CREATOR`]'s account on `channel` owned by `token` (made-up tokens belong to the
    /// sandbox user derived from their subject, the part before the first `.`), with a token valid
    /// for 60 days; returns its id.
    pub async fn link_account(&self, channel: &str, token: &str) -> String {
        self.link_account_via(&self.api, channel, token).await
    }

    /// [`Self::link_account`] through the API at `api`.
    pub async fn link_account_via(&self, api: &str, channel: &str, token: &str) -> String {
        let (status, body) = self.post_to(api, "/v1/accounts", &link_body(channel, token)).await;
        assert_eq!(status, 201, "linking failed: {body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Links (or links again) an account; returns the HTTP status.
    pub async fn link_account_status(&self, channel: &str, token: &str) -> u16 {
        self.link(channel, token).await.0
    }

    async fn link(&self, channel: &str, token: &str) -> (u16, Value) {
        self.post("/v1/accounts", &link_body(channel, token)).await
    }

    /// Schedules a post; returns the created job.
    pub async fn schedule(&self, account_id: &str, publish_at: DateTime<Utc>, caption: &str, media: Value) -> Value {
        self.schedule_via(&self.api, account_id, publish_at, caption, media).await
    }

    /// [`Self::schedule`] through the API at `api`.
    /// TikTok posts go out public (`PUBLIC_TO_EVERYONE`), the level whose videos TikTok lists.
    pub async fn schedule_via(&self, api: &str, account_id: &str, publish_at: DateTime<Utc>, caption: &str, media: Value) -> Value {
        let mut body = json!({ "account_id": account_id, "publish_at": publish_at, "caption": caption, "media": media });
        let channel: Option<String> = sqlx::query_scalar("SELECT channel FROM social_accounts WHERE id = $1::uuid")
            .bind(account_id)
            .fetch_optional(&self.db)
            .await
            .expect("reading the account's channel");
        if channel.as_deref() == Some("tiktok") {
            body["options"] = tiktok_options("PUBLIC_TO_EVERYONE");
        }
        let (status, body) = self.post_to(api, "/v1/publish-jobs", &body).await;
        assert_eq!(status, 201, "scheduling failed: {body}");
        body
    }

    /// Waits until the sandbox has received `count` calls of `endpoint`.
    pub async fn wait_for_calls(&self, endpoint: &str, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sandbox_calls(endpoint).await < count {
            assert!(Instant::now() < deadline, "{endpoint} was never called {count} time(s)");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until its status is `status`; fails on timeout or on another final status.
    pub async fn wait_for_status(&self, job_id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, job) = self.get(&format!("/v1/publish-jobs/{job_id}")).await;
            if job["status"] == status {
                return job;
            }
            // Statuses that no timer changes: waiting longer cannot reach `status`.
            let current: Option<JobStatus> = job["status"].as_str().and_then(|s| s.parse().ok());
            let final_status = current.is_some_and(|s| s.is_final() || s == JobStatus::NeedsAttention);
            assert!(
                !final_status,
                "job ended {} while waiting for {status}: {job}\nworker log:\n{}",
                job["status"],
                self.worker_log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "job still {} after {timeout:?} waiting for {status}: {job}\nworker log:\n{}",
                job["status"],
                self.worker_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn worker_log_tail(&self) -> String {
        let log = self.worker_log();
        log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Makes the sandbox fail calls: see `POST /_sandbox/faults` in the README.
    pub async fn sandbox_fault(&self, fault: Value) {
        let response = self.http.post(format!("{}/_sandbox/faults", self.sandbox)).json(&fault).send().await.unwrap();
        assert!(response.status().is_success(), "fault refused: {}", response.text().await.unwrap());
    }

    /// Sets the Instagram publishing quota (posts per 24 h) of the account behind `token`.
    pub async fn sandbox_instagram_quota(&self, token: &str, quota_total: u32) {
        let body = json!({ "ig_user_id": platform_user_id("instagram", token), "quota_total": quota_total });
        let response = self.http.post(format!("{}/_sandbox/instagram/quota", self.sandbox)).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "quota refused: {}", response.text().await.unwrap());
    }

    pub async fn sandbox_revoke(&self, token: &str) {
        let response = self
            .http
            .post(format!("{}/_sandbox/tokens/revoke", self.sandbox))
            .json(&json!({ "access_token": token }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// How often the sandbox was called at `endpoint` (e.g. `instagram.media_publish`).
    pub async fn sandbox_calls(&self, endpoint: &str) -> u64 {
        let body: Value = self.http.get(format!("{}/_sandbox/calls", self.sandbox)).send().await.unwrap().json().await.unwrap();
        body["calls"][endpoint].as_u64().unwrap_or(0)
    }

    pub async fn attempts(&self, job_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/publish-jobs/{job_id}/attempts")).await;
        assert_eq!(status, 200, "{body}");
        body["attempts"].as_array().unwrap().clone()
    }

    /// Every post the sandbox published.
    pub async fn sandbox_posts(&self) -> Vec<Value> {
        let body: Value = self.http.get(format!("{}/_sandbox/posts", self.sandbox)).send().await.unwrap().json().await.unwrap();
        body["posts"].as_array().unwrap().clone()
    }
}

/// The sandbox's user id of the account that owns `token`, as the platform would report it.
pub fn platform_user_id(channel: &str, token: &str) -> String {
    match channel {
        "instagram" => autopost_sandbox::instagram_user_id(token),
        "tiktok" => autopost_sandbox::tiktok_open_id(token),
        other => panic!("unknown channel {other}"),
    }
}

/// The body that links the account owning `token` on `channel`, valid for 60 days.
/// TikTok options with `privacy_level` and nothing else set.
pub fn tiktok_options(privacy_level: &str) -> Value {
    json!({ "channel": "tiktok", "privacy_level": privacy_level })
}

pub fn link_body(channel: &str, token: &str) -> Value {
    json!({
        "channel": channel,
        "platform_user_id": platform_user_id(channel, token),
        "access_token": token,
        "token_expires_at": Utc::now() + chrono::Duration::days(60),
    })
}

fn token_for(config: &Config, creator: &str) -> String {
    autopost_api::auth::issue_token(&config.auth.verifier(), creator, Duration::from_secs(3600)).unwrap()
}

fn client_for(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}
