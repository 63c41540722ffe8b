//! The system under test: three child processes of the `autopost` binary (an instant sandbox,
//! the API and a worker with the baseline registered), a database and a task queue of its own.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use autopost_app::{
    Config,
    config::{PostgresSettings, TemporalSettings},
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::{ConnectOptions, PgPool, postgres::PgConnectOptions};
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowGetResultOptions, WorkflowHandle, WorkflowListOptions, WorkflowStartOptions, WorkflowTerminateOptions,
};
use temporalio_common::HasWorkflowDefinition;
use tokio::process::Child;
use uuid::Uuid;

use crate::{
    BURST_CAPTION, BenchChannel, POLL_EVERY,
    baseline::BenchBaselineWorkflow,
    progress,
    report::{BaselineReport, BurstReport, Memory, Percentiles},
};

pub(crate) struct System {
    config: Config,
    api: String,
    sandbox: String,
    http: reqwest::Client,
    db: PgPool,
    temporal: Client,
    children: Vec<(&'static str, Child)>,
    log_dir: PathBuf,
}

/// The creator every bench job belongs to.
const BENCH_CREATOR: &str = "bench-creator";

impl System {
    pub(crate) async fn start(postgres: &PostgresSettings, temporal: &TemporalSettings, arm: ArmTiming) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string();
        let mut config = Config::with_defaults();
        config.temporal = temporal.clone();
        let mut url = url::Url::parse(postgres.database_url.expose_secret()).context("DATABASE_URL is not a URL")?;
        url.set_path(&format!("autopost_bench_{}", &id[..12]));
        config.postgres.database_url = SecretString::from(url.to_string());
        config.temporal.task_queue = format!("autopost-bench-{id}");
        config.api.listen = free_port()?;
        config.sandbox.sandbox_listen = free_port()?;
        config.use_sandbox_platforms();
        // Processing is instant in the sandbox: poll often so a status read is never the wait.
        config.worker.platform_poll_interval = Duration::from_millis(50);
        // A retry must not stall the bench for the production 5 minutes; retries are counted.
        config.schedule.retry_backoff = autopost_app::config::Backoff(vec![Duration::from_secs(1); 3]);
        // The burst is created seconds before its instant: a short lead (and a spread over
        // most of it) lets its jobs sleep, then arm spread out, as jobs created long before do.
        config.schedule.arm_lead = arm.lead;
        config.schedule.arm_spread = arm.spread;
        // Every armed job's fire is a transaction at the instant: room for many at once.
        config.postgres.db_pool_size = config.postgres.db_pool_size.max(40);
        // Never the default metrics port: a `dev` stack may be running beside the bench.
        config.worker.worker_metrics_listen = "127.0.0.1:0".parse()?;

        let log_dir = std::env::temp_dir().join(format!("autopost-bench-{id}"));
        std::fs::create_dir_all(&log_dir)?;
        progress(format!(
            "database {}, task queue {}, logs in {}",
            config.postgres.redacted_url(),
            config.temporal.task_queue,
            log_dir.display()
        ));
        config.token_keys.generate_if_unset();
        crate::prepare_api(&mut config);
        let db = autopost_app::migrate(&config.postgres, &config.token_keys).await?;
        let temporal = match autopost_app::connect_temporal(&config.temporal).await {
            Ok(temporal) => temporal,
            Err(e) => {
                drop_database(&config).await;
                return Err(e);
            }
        };

        let mut system = System {
            api: format!("http://{}", config.api.listen),
            sandbox: config.sandbox.url(),
            http: crate::creator_client(&config, BENCH_CREATOR, Duration::from_secs(60))?,
            db,
            temporal,
            children: Vec::new(),
            log_dir,
            config,
        };
        match system.launch().await {
            Ok(()) => Ok(system),
            Err(e) => {
                system.stop(Keep { database: false, logs: true }).await;
                Err(e)
            }
        }
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        for role in ["bench-sandbox", "api", "bench-worker"] {
            let child = self.spawn(role)?;
            self.children.push((role, child));
        }
        self.wait_ready("bench-sandbox", &format!("{}/_sandbox/posts", self.sandbox)).await?;
        self.wait_ready("api", &format!("{}/readyz", self.api)).await
    }

    /// `autopost <role>` with this system's configuration, logging to its own file.
    fn spawn(&self, role: &str) -> anyhow::Result<Child> {
        crate::autopost_command(role, &self.config, &self.log_dir.join(format!("{role}.log")))?
            .spawn()
            .with_context(|| format!("starting `autopost {role}`"))
    }

    async fn wait_ready(&self, role: &str, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "`autopost {role}` did not become ready; see {}", self.log_dir.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `count` accounts, each of its own creator, spread over the platforms used and linked
    /// through the API as a creator would: a burst is many creators posting at once, not one
    /// account posting hundreds of times (which the platforms forbid).
    pub(crate) async fn link_accounts(&self, channel: BenchChannel, count: usize) -> anyhow::Result<Vec<Account>> {
        let channels: &[&str] = match channel {
            BenchChannel::Tiktok => &["tiktok"],
            BenchChannel::Instagram => &["instagram"],
            BenchChannel::Mixed => &["tiktok", "instagram"],
        };
        let count = count.max(channels.len());
        let mut accounts = Vec::new();
        for i in 0..count {
            let channel = channels[i % channels.len()];
            let creator = format!("bench-creator-{i}");
            let bearer = autopost_api::auth::issue_token(&self.config.auth.verifier(), &creator, Duration::from_secs(24 * 3600))?;
            let token = format!("bench-{channel}-token-{i}");
            // The sandbox derives identities from the token: link the one it will answer with.
            let platform_user_id = match channel {
                "tiktok" => autopost_sandbox::tiktok_open_id(&token),
                _ => autopost_sandbox::instagram_user_id(&token),
            };
            let body = json!({
                "channel": channel,
                "platform_user_id": platform_user_id,
                "access_token": token,
                "token_expires_at": Utc::now() + chrono::Duration::days(60),
            });
            let response = self.http.post(format!("{}/v1/accounts", self.api)).bearer_auth(&bearer).json(&body).send().await?;
            let status = response.status().as_u16();
            let reply: Value = response.json().await.unwrap_or(Value::Null);
            ensure!(status == 201, "linking the {channel} account answered {status}: {reply}");
            let id = reply["id"].as_str().context("no account id")?.to_owned();
            // TikTok takes a video, Instagram an image: the common case of each.
            let media = match channel {
                "tiktok" => json!([{ "url": format!("{}/media/sample.mp4", self.sandbox), "kind": "video" }]),
                _ => json!([{ "url": format!("{}/media/sample.jpg", self.sandbox), "kind": "image" }]),
            };
            accounts.push(Account { id, media, bearer, channel, token: SecretString::from(token), platform_user_id });
        }
        Ok(accounts)
    }

    /// One post and one baseline workflow end to end before measuring: proves the whole system
    /// works (a broken setup fails here, in seconds) and opens the connections every part keeps.
    pub(crate) async fn warm_up(&self, accounts: &[Account]) -> anyhow::Result<()> {
        progress("warming up: one post and one baseline workflow");
        let publish_at = Utc::now() + chrono::Duration::seconds(1);
        let jobs: Vec<Uuid> =
            self.create_jobs(accounts, accounts.len(), 1, publish_at, "bench warm-up", None).await?.iter().map(|j| j.id).collect();
        self.wait_published(&jobs, Duration::from_secs(60)).await.context("warming up the publish path")?;
        let handle = self.start_baseline(0, Utc::now()).await?;
        tokio::time::timeout(Duration::from_secs(60), handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .context("the warm-up baseline workflow did not complete; is the worker running?")?
            .context("the warm-up baseline workflow failed")?;
        Ok(())
    }

    /// Creates `n` jobs due at `publish_at` from `concurrency` clients, each sending its next
    /// request when the previous one is answered. Returns each job's id and request latency.
    pub(crate) async fn create_jobs(
        &self,
        accounts: &[Account],
        n: usize,
        concurrency: usize,
        publish_at: DateTime<Utc>,
        caption: &str,
        rate: Option<f64>,
    ) -> anyhow::Result<Vec<Created>> {
        let next = Arc::new(AtomicUsize::new(0));
        // With a rate, request i is not sent before i / rate seconds from now, whichever client
        // takes it: the creators' pace, not the clients' best.
        let paced_from = tokio::time::Instant::now();
        // Each request as its account's creator.
        let requests: Arc<Vec<(String, Value)>> = Arc::new(
            (0..n)
                .map(|i| {
                    let account = &accounts[i % accounts.len()];
                    let mut body = json!({ "account_id": account.id, "publish_at": publish_at, "caption": format!("{caption} {i}"), "media": account.media });
                    if account.channel == "tiktok" {
                        body["options"] = json!({ "channel": "tiktok", "privacy_level": "PUBLIC_TO_EVERYONE" });
                    }
                    (account.bearer.clone(), body)
                })
                .collect(),
        );
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..concurrency.min(n) {
            let (next, requests, http, url) = (next.clone(), requests.clone(), self.http.clone(), format!("{}/v1/publish-jobs", self.api));
            clients.spawn(async move {
                let mut created = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((bearer, body)) = requests.get(i) else { return anyhow::Ok(created) };
                    if let Some(rate) = rate {
                        tokio::time::sleep_until(paced_from + Duration::from_secs_f64(i as f64 / rate)).await;
                    }
                    let started = Instant::now();
                    let response = http.post(&url).bearer_auth(bearer).json(body).send().await.context("POST /v1/publish-jobs")?;
                    let status = response.status();
                    let reply: Value = response.json().await.unwrap_or(Value::Null);
                    let latency = started.elapsed();
                    ensure!(status.as_u16() == 201, "creating job {i} answered {status}: {reply}");
                    let id = reply["id"].as_str().and_then(|id| id.parse().ok()).context("no job id in the reply")?;
                    created.push(Created { id, latency });
                }
            });
        }
        let mut all = Vec::with_capacity(n);
        while let Some(result) = clients.join_next().await {
            all.extend(result??);
        }
        Ok(all)
    }

    pub(crate) async fn await_burst(&self, instant: DateTime<Utc>, jobs: &[Created], timeout: Duration) -> anyhow::Result<BurstReport> {
        sleep_until(instant).await;
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        self.wait_published(&ids, timeout + Duration::from_secs(1)).await?;

        // `updated_at` of the final mirror write is Postgres' own commit clock: the moment the API
        // could first show the job as published, independent of how often the bench polls.
        let (last_published, retried): (DateTime<Utc>, i64) =
            sqlx::query_as("SELECT max(updated_at), count(*) FILTER (WHERE attempt_count > 1) FROM publish_jobs WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_one(&self.db)
                .await?;

        let lags = self.received_lags(instant, BURST_CAPTION).await?;
        ensure!(lags.len() == jobs.len(), "{} jobs published but the sandbox received {} posts", jobs.len(), lags.len());
        Ok(BurstReport {
            count: lags.len(),
            instant,
            lag_ms: Percentiles::of(lags),
            all_published_s: millis(last_published - instant) / 1000.0,
            jobs_retried: retried as usize,
        })
    }

    /// Polls Postgres until every job is `published`; fails early on a job needing attention.
    async fn wait_published(&self, ids: &[Uuid], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM publish_jobs WHERE id = ANY($1) GROUP BY status")
                .bind(ids)
                .fetch_all(&self.db)
                .await?;
            let count = |status: &str| counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n as usize);
            if count("published") == ids.len() {
                return Ok(());
            }
            if count("needs_attention") > 0 {
                let (id, code, message): (Uuid, Option<String>, Option<String>) = sqlx::query_as(
                    "SELECT id, last_error_code, last_error_message FROM publish_jobs WHERE id = ANY($1) AND status = 'needs_attention' LIMIT 1",
                )
                .bind(ids)
                .fetch_one(&self.db)
                .await?;
                bail!("job {id} needs attention: {} {}", code.unwrap_or_default(), message.unwrap_or_default());
            }
            ensure!(Instant::now() < deadline, "after {timeout:?} the jobs stand at {counts:?}, not all published");
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn start_baseline(&self, index: usize, due_at: DateTime<Utc>) -> anyhow::Result<BaselineHandle> {
        let id = format!("bench-baseline:{}:{index}:{}", self.config.temporal.task_queue, Uuid::new_v4().simple());
        let options = WorkflowStartOptions::new(self.config.temporal.task_queue.clone(), id).build();
        Ok(self.temporal.start_workflow(BenchBaselineWorkflow::run, due_at, options).await?)
    }

    pub(crate) async fn run_baseline(
        &self,
        instant: DateTime<Utc>,
        n: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<BaselineReport> {
        // Started straight on Temporal from `concurrency` tasks, as the API starts publish
        // workflows: also the bare `start_workflow` throughput that creates are measured against.
        let starting = Instant::now();
        let handles = futures::stream::iter(0..n)
            .map(|i| self.start_baseline(i, instant))
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        let starts_per_s = n as f64 / starting.elapsed().as_secs_f64();
        ensure!(Utc::now() < instant, "starting the baseline took past its instant {instant}; raise --margin");
        sleep_until(instant).await;

        let results = tokio::time::timeout(
            timeout,
            futures::stream::iter(handles)
                .map(|handle| async move { handle.get_result(WorkflowGetResultOptions::default()).await })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>(),
        )
        .await
        .with_context(|| format!("baseline workflows still running {timeout:?} after their instant"))?;
        let completed: Vec<DateTime<Utc>> = results.into_iter().collect::<Result<_, _>>().context("a baseline workflow failed")?;
        let last = completed.iter().max().copied().unwrap_or(instant);
        Ok(BaselineReport {
            count: completed.len(),
            starts_per_s,
            instant,
            lag_ms: Percentiles::of(completed.iter().map(|at| millis(*at - instant)).collect()),
            // The no-op activity is the workflow's last step: its completion is the end.
            all_completed_s: millis(last - instant) / 1000.0,
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Every post the sandbox received whose caption starts with `prefix`, as the lag of its
    /// `received_at` after `instant`.
    pub(crate) async fn received_lags(&self, instant: DateTime<Utc>, prefix: &str) -> anyhow::Result<Vec<f64>> {
        let posts: Value = self.http.get(format!("{}/_sandbox/posts", self.sandbox)).send().await?.error_for_status()?.json().await?;
        let mut lags = Vec::new();
        for post in posts["posts"].as_array().context("no posts in the sandbox's answer")? {
            if !post["caption"].as_str().unwrap_or("").starts_with(prefix) {
                continue;
            }
            let received_at: DateTime<Utc> = post["received_at"].as_str().context("a post without received_at")?.parse()?;
            lags.push(millis(received_at - instant));
        }
        Ok(lags)
    }

    pub(crate) fn db(&self) -> &PgPool {
        &self.db
    }

    /// The bench worker's `VmRSS` or `VmHWM`, in KiB.
    pub(crate) fn worker_memory(&self, field: &str) -> anyhow::Result<u64> {
        let (_, child) = self.children.iter().find(|(r, _)| *r == "bench-worker").context("no bench worker")?;
        vm_kib(child.id().context("the bench worker exited")?, field)
    }

    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        let peak = |role: &str| -> anyhow::Result<Option<u64>> {
            let Some((_, child)) = self.children.iter().find(|(r, _)| *r == role) else { return Ok(None) };
            let pid = child.id().with_context(|| format!("`autopost {role}` already exited"))?;
            vm_hwm_kib(pid).map(Some)
        };
        Ok(Memory { worker_vm_hwm_kib: peak("bench-worker")?, api_vm_hwm_kib: peak("api")?, sandbox_vm_hwm_kib: peak("bench-sandbox")? })
    }

    /// Terminates the bench's workflows still running (the create scenario's, which would
    /// otherwise sleep for a day on a queue nobody polls), stops the processes, drops the
    /// database. Best effort: problems are reported, not returned, so cleanup goes on.
    pub(crate) async fn stop(mut self, keep: Keep) {
        if let Err(e) = self.terminate_running().await {
            eprintln!("[bench] could not terminate the bench's workflows: {e:#}");
        }
        self.db.close().await;
        // SIGKILL: the measurements are taken and the task queue is thrown away, so there is
        // nothing a graceful shutdown would save.
        for (role, child) in &mut self.children {
            if let Err(e) = child.kill().await {
                eprintln!("[bench] stopping `autopost {role}`: {e}");
            }
        }
        if keep.database {
            progress(format!("kept database {}", self.config.postgres.redacted_url()));
        } else {
            drop_database(&self.config).await;
        }
        if keep.logs {
            progress(format!("kept the processes' logs in {}", self.log_dir.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }

    async fn terminate_running(&self) -> anyhow::Result<()> {
        let query = format!("TaskQueue = '{}' AND ExecutionStatus = 'Running'", self.config.temporal.task_queue);
        let ids: Vec<String> = self
            .temporal
            .list_workflows(query, WorkflowListOptions::default())
            .map(|w| w.map(|w| w.id().to_owned()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        progress(format!("terminating {} workflows left asleep", ids.len()));
        let options = WorkflowTerminateOptions::builder().reason("autopost bench finished").build();
        let failures = futures::stream::iter(ids)
            .map(|id| {
                let options = options.clone();
                async move { self.temporal.get_workflow_handle::<UntypedWorkflow>(id).terminate(options).await }
            })
            .buffer_unordered(16)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        ensure!(failures == 0, "{failures} terminations failed");
        Ok(())
    }
}

/// The `#[workflow]` macro's run marker type is private; reach it through the trait.
type BaselineHandle = WorkflowHandle<Client, <BenchBaselineWorkflow as HasWorkflowDefinition>::Run>;

#[derive(Clone, Copy)]
pub(crate) struct Keep {
    pub(crate) database: bool,
    pub(crate) logs: bool,
}

/// Drops the bench database even if a killed process's session lingers (`WITH (FORCE)`), on a
/// connection that does not log the (slow, harmless) statement into the bench's output.
async fn drop_database(config: &Config) {
    let result = async {
        let options: PgConnectOptions = config.postgres.database_url.expose_secret().parse()?;
        let name = options.get_database().context("no database name")?.to_owned();
        let mut admin = options.database("postgres").disable_statement_logging().connect().await?;
        sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)).execute(&mut admin).await?;
        anyhow::Ok(())
    };
    if let Err(e) = result.await {
        eprintln!("[bench] dropping the bench database: {e:#}");
    }
}

pub(crate) struct Account {
    id: String,
    media: Value,
    /// The API bearer token of the account's creator.
    bearer: String,
    pub(crate) channel: &'static str,
    /// The platform token (the sandbox's), for the floor's direct calls.
    pub(crate) token: SecretString,
    pub(crate) platform_user_id: String,
}

impl Account {
    pub(crate) fn media_url(&self) -> &str {
        self.media[0]["url"].as_str().unwrap_or_default()
    }
}

/// The arming lead and spread of the bench's jobs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArmTiming {
    pub(crate) lead: Duration,
    pub(crate) spread: Duration,
}

pub(crate) struct Created {
    pub(crate) id: Uuid,
    pub(crate) latency: Duration,
}

/// A free loopback port: bound and released at once, for a child process to bind. Another
/// process could take it in between; on a bench machine that race is not worth more code.
fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

pub(crate) fn millis(d: chrono::Duration) -> f64 {
    d.num_microseconds().map_or(d.num_milliseconds() as f64, |us| us as f64 / 1000.0)
}

/// Peak resident set size of a process, from the kernel's own bookkeeping.
fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    vm_kib(pid, "VmHWM")
}

/// A memory figure of a process (`VmRSS`: now, `VmHWM`: its peak), from `/proc/{pid}/status`.
pub(crate) fn vm_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm(&status, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn parse_vm(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let status = "Name:\tautopost\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(parse_vm(status, "VmHWM"), Some(12345));
        assert_eq!(parse_vm(status, "VmRSS"), Some(2048));
        assert_eq!(parse_vm("Name:\tautopost\n", "VmHWM"), None);
        assert!(vm_hwm_kib(std::process::id()).unwrap() > 0);
    }
}
