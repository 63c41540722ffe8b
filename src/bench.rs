//! `autopost bench`: what happens when thousands of posts fall due in the same second.
//!
//! The bench starts its own system from this very binary, as separate processes (so each has its
//! own /proc peak memory): `autopost sandbox --instant`, `autopost api` and `autopost worker`, on
//! free loopback ports, with a fresh database and a fresh task queue on the given Temporal
//! server. Then it runs three scenarios:
//!
//! 1. create: N jobs through the REST API from C concurrent clients (due in a day, so nothing
//!    fires); throughput and latency.
//! 2. burst: N more jobs, all due at one instant chosen after their creation ends; the lag from
//!    that instant to the sandbox accepting each post (the sandbox's own `received_at`), and the
//!    time until Postgres shows all N `published`.
//! 3. baseline: N `BenchBaselineWorkflow`s due at one instant, each running a single no-op
//!    activity: the same measures, i.e. what Temporal and the SDK cost without our work.
//!
//! Everything it started is stopped and its database dropped at the end, also on failure.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use autopost_workflows::bench::BenchBaselineWorkflow;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, PgPool, postgres::PgConnectOptions};
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowGetResultOptions, WorkflowHandle, WorkflowListOptions, WorkflowStartOptions,
    WorkflowTerminateOptions,
};
use temporalio_common::HasWorkflowDefinition;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::Config;

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Jobs (and baseline workflows) per scenario.
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Concurrent REST clients creating jobs (also concurrent baseline starts).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The platform the posts go to; `mixed` alternates between both.
    #[arg(long, value_enum, default_value = "tiktok")]
    pub channel: BenchChannel,
    /// Slack between the expected end of a scenario's creates and the instant its jobs are due.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub margin: Duration,
    /// Longest wait for a scenario's jobs to finish after their instant.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep the database and the processes' logs afterwards, for investigation.
    #[arg(long)]
    pub keep: bool,
}

/// Where the benchmark's posts go. TikTok by default: the sandbox's `received_at` of a TikTok
/// post is the moment it accepted the publish request, the closest thing to "the platform has
/// it"; an Instagram post is received at `media_publish`, after the container round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchChannel {
    Tiktok,
    Instagram,
    Mixed,
}

/// The caption prefix of burst posts: tells them apart from the warm-up post in the sandbox.
const BURST_CAPTION: &str = "bench burst";
/// How often the bench looks at Postgres while waiting for a burst.
const POLL_EVERY: Duration = Duration::from_millis(100);

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.n > 0, "--n must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let system = System::start(config).await?;
    // Ctrl-C must still clean up: without this the database and the sleeping workflows stay.
    let result = tokio::select! {
        result = scenarios(&system, &args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Read while the processes still run: VmHWM vanishes with them.
    let memory = system.memory();
    system.stop(Keep { database: args.keep, logs: args.keep || result.is_err() }).await;
    let mut report = result?;
    report.memory = memory?;
    report.print();
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

async fn scenarios(system: &System, args: &BenchArgs) -> anyhow::Result<Report> {
    // Other work on the machine skews every figure: record how busy it was.
    let load_average = load_average();
    let accounts = system.link_accounts(args.channel).await?;
    system.warm_up(&accounts).await?;

    progress(format!("create: {} jobs through the API, {} clients", args.n, args.concurrency));
    // Due in a day so nothing fires during the bench; `stop` terminates their workflows.
    let far = Utc::now() + chrono::Duration::days(1);
    let started = Instant::now();
    let created = system.create_jobs(&accounts, args.n, args.concurrency, far, "bench create").await?;
    let create_elapsed = started.elapsed();
    let create = CreateReport::new(&created, create_elapsed);

    // A second round of creates takes about as long as the first; twice that plus the margin
    // leaves every workflow asleep on its timer well before the instant.
    let instant = due_instant(create_elapsed * 2 + args.margin);
    progress(format!("burst: {} jobs due at {instant}", args.n));
    let burst_jobs = system.create_jobs(&accounts, args.n, args.concurrency, instant, BURST_CAPTION).await?;
    ensure!(Utc::now() < instant, "creating the burst took past its instant {instant}; raise --margin");
    let burst = system.await_burst(instant, &burst_jobs, args.timeout).await?;

    let instant = due_instant(create_elapsed * 2 + args.margin);
    progress(format!("baseline: {} workflows due at {instant}", args.n));
    let baseline = system.run_baseline(instant, args.n, args.concurrency, args.timeout).await?;

    let ratios = Ratios {
        lag_p50: ratio(burst.lag_ms.p50, baseline.lag_ms.p50),
        lag_p99: ratio(burst.lag_ms.p99, baseline.lag_ms.p99),
        lag_max: ratio(burst.lag_ms.max, baseline.lag_ms.max),
        all_done: ratio(burst.all_published_s, baseline.all_completed_s),
    };
    Ok(Report {
        n: args.n,
        concurrency: args.concurrency,
        channel: args.channel,
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average,
        create,
        burst,
        baseline,
        ratios,
        memory: Memory::default(),
    })
}

/// `after` from now, rounded up to a whole second, as creators' schedules are.
fn due_instant(after: Duration) -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default() + chrono::Duration::seconds(1);
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

fn progress(message: impl std::fmt::Display) {
    eprintln!("[bench] {message}");
}

// ---------------------------------------------------------------------------------------------
// The system under test: three child processes, a database and a task queue of its own.

struct System {
    config: Config,
    api: String,
    sandbox: String,
    http: reqwest::Client,
    db: PgPool,
    temporal: Client,
    children: Vec<(&'static str, Child)>,
    log_dir: PathBuf,
}

impl System {
    async fn start(base: &Config) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string();
        let mut config = base.clone();
        let mut url = url::Url::parse(base.database_url.expose_secret()).context("DATABASE_URL is not a URL")?;
        url.set_path(&format!("autopost_bench_{}", &id[..12]));
        config.database_url = SecretString::from(url.to_string());
        config.task_queue = format!("autopost-bench-{id}");
        config.listen = free_port()?;
        config.sandbox_listen = free_port()?;
        config.use_sandbox_platforms();
        // Processing is instant in the sandbox: poll often so a status read is never the wait.
        config.platform_poll_interval = Duration::from_millis(50);

        let log_dir = std::env::temp_dir().join(format!("autopost-bench-{id}"));
        std::fs::create_dir_all(&log_dir)?;
        progress(format!("database {}, task queue {}, logs in {}", url.path().trim_start_matches('/'), config.task_queue, log_dir.display()));
        let db = crate::migrate(&config).await?;
        let temporal = match crate::connect_temporal(&config).await {
            Ok(temporal) => temporal,
            Err(e) => {
                drop_database(&config).await;
                return Err(e);
            }
        };

        let mut system = System {
            api: format!("http://{}", config.listen),
            sandbox: config.sandbox_url(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?,
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
        for role in ["sandbox", "api", "worker"] {
            let child = self.spawn(role)?;
            self.children.push((role, child));
        }
        self.wait_ready("sandbox", &format!("{}/_sandbox/posts", self.sandbox)).await?;
        self.wait_ready("api", &format!("{}/readyz", self.api)).await
    }

    /// `autopost <role>` with this system's configuration, logging to its own file.
    fn spawn(&self, role: &str) -> anyhow::Result<Child> {
        let c = &self.config;
        let log = std::fs::File::create(self.log_dir.join(format!("{role}.log")))?;
        let poll_interval = format!("{}ms", c.platform_poll_interval.as_millis());
        Command::new(std::env::current_exe().context("locating the autopost binary")?)
            .arg(role)
            .env("DATABASE_URL", c.database_url.expose_secret())
            .env("TEMPORAL_ADDRESS", &c.temporal_address)
            .env("TEMPORAL_NAMESPACE", &c.temporal_namespace)
            .env("AUTOPOST_TASK_QUEUE", &c.task_queue)
            .env("AUTOPOST_LISTEN", c.listen.to_string())
            .env("AUTOPOST_SANDBOX_LISTEN", c.sandbox_listen.to_string())
            .env("AUTOPOST_SANDBOX_INSTANT", "true")
            .env("INSTAGRAM_API_BASE", &c.instagram_api_base)
            .env("TIKTOK_API_BASE", &c.tiktok_api_base)
            .env("AUTOPOST_PLATFORM_POLL_INTERVAL", poll_interval)
            // A retry must not stall the bench for the production 5 minutes; retries are counted.
            .env("AUTOPOST_RETRY_BACKOFF", "1s,1s,1s")
            .env("AUTOPOST_LOG_FORMAT", "json")
            // Never the default metrics port: a `dev` stack may be running beside the bench.
            .env("AUTOPOST_WORKER_METRICS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
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

    /// One account per platform used, linked through the API as a creator would.
    async fn link_accounts(&self, channel: BenchChannel) -> anyhow::Result<Vec<Account>> {
        let channels: &[&str] = match channel {
            BenchChannel::Tiktok => &["tiktok"],
            BenchChannel::Instagram => &["instagram"],
            BenchChannel::Mixed => &["tiktok", "instagram"],
        };
        let mut accounts = Vec::new();
        for &channel in channels {
            let token = format!("bench-{channel}-token");
            // The sandbox derives identities from the token: link the one it will answer with.
            let platform_user_id = match channel {
                "tiktok" => autopost_sandbox::tiktok_open_id(&token),
                _ => autopost_sandbox::instagram_user_id(&token),
            };
            let body = json!({
                "creator_id": "bench-creator",
                "channel": channel,
                "platform_user_id": platform_user_id,
                "access_token": token,
                "token_expires_at": Utc::now() + chrono::Duration::days(60),
            });
            let (status, reply) = self.post("/v1/accounts", &body).await?;
            ensure!(status == 201, "linking the {channel} account answered {status}: {reply}");
            let id = reply["id"].as_str().context("no account id")?.to_owned();
            // TikTok takes a video, Instagram an image: the common case of each.
            let media = match channel {
                "tiktok" => json!([{ "url": format!("{}/media/sample.mp4", self.sandbox), "kind": "video" }]),
                _ => json!([{ "url": format!("{}/media/sample.jpg", self.sandbox), "kind": "image" }]),
            };
            accounts.push(Account { id, media });
        }
        Ok(accounts)
    }

    /// One post and one baseline workflow end to end before measuring: proves the whole system
    /// works (a broken setup fails here, in seconds) and opens the connections every part keeps.
    async fn warm_up(&self, accounts: &[Account]) -> anyhow::Result<()> {
        progress("warming up: one post and one baseline workflow");
        let publish_at = Utc::now() + chrono::Duration::seconds(1);
        let jobs: Vec<Uuid> = self.create_jobs(accounts, accounts.len(), 1, publish_at, "bench warm-up").await?.iter().map(|j| j.id).collect();
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
    async fn create_jobs(
        &self,
        accounts: &[Account],
        n: usize,
        concurrency: usize,
        publish_at: DateTime<Utc>,
        caption: &str,
    ) -> anyhow::Result<Vec<Created>> {
        let next = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Vec<Value>> = Arc::new(
            (0..n)
                .map(|i| {
                    let account = &accounts[i % accounts.len()];
                    json!({ "account_id": account.id, "publish_at": publish_at, "caption": format!("{caption} {i}"), "media": account.media })
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
                    let Some(body) = requests.get(i) else { return anyhow::Ok(created) };
                    let started = Instant::now();
                    let response = http.post(&url).json(body).send().await.context("POST /v1/publish-jobs")?;
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

    async fn await_burst(&self, instant: DateTime<Utc>, jobs: &[Created], timeout: Duration) -> anyhow::Result<BurstReport> {
        sleep_until(instant).await;
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        self.wait_published(&ids, timeout + Duration::from_secs(1)).await?;

        // `updated_at` of the final mirror write is Postgres' own commit clock: the moment the API
        // could first show the job as published, independent of how often the bench polls.
        let (last_published, retried): (DateTime<Utc>, i64) = sqlx::query_as(
            "SELECT max(updated_at), count(*) FILTER (WHERE attempt_count > 1) FROM publish_jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&self.db)
        .await?;

        let posts: Value = self.http.get(format!("{}/_sandbox/posts", self.sandbox)).send().await?.error_for_status()?.json().await?;
        let mut lags = Vec::new();
        for post in posts["posts"].as_array().context("no posts in the sandbox's answer")? {
            if !post["caption"].as_str().unwrap_or("").starts_with(BURST_CAPTION) {
                continue;
            }
            let received_at: DateTime<Utc> = post["received_at"].as_str().context("a post without received_at")?.parse()?;
            lags.push(millis(received_at - instant));
        }
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

    async fn start_baseline(
        &self,
        index: usize,
        due_at: DateTime<Utc>,
    ) -> anyhow::Result<BaselineHandle> {
        let id = format!("bench-baseline:{}:{index}:{}", self.config.task_queue, Uuid::new_v4().simple());
        let options = WorkflowStartOptions::new(self.config.task_queue.clone(), id).build();
        Ok(self.temporal.start_workflow(BenchBaselineWorkflow::run, due_at, options).await?)
    }

    async fn run_baseline(&self, instant: DateTime<Utc>, n: usize, concurrency: usize, timeout: Duration) -> anyhow::Result<BaselineReport> {
        // Started straight on Temporal from `concurrency` tasks, as the API starts publish workflows.
        let handles = futures::stream::iter(0..n)
            .map(|i| self.start_baseline(i, instant))
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
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
            instant,
            lag_ms: Percentiles::of(completed.iter().map(|at| millis(*at - instant)).collect()),
            // The no-op activity is the workflow's last step: its completion is the end.
            all_completed_s: millis(last - instant) / 1000.0,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", self.api)).json(body).send().await.with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        let peak = |role: &str| -> anyhow::Result<Option<u64>> {
            let Some((_, child)) = self.children.iter().find(|(r, _)| *r == role) else { return Ok(None) };
            let pid = child.id().with_context(|| format!("`autopost {role}` already exited"))?;
            vm_hwm_kib(pid).map(Some)
        };
        Ok(Memory { worker_vm_hwm_kib: peak("worker")?, api_vm_hwm_kib: peak("api")?, sandbox_vm_hwm_kib: peak("sandbox")? })
    }

    /// Terminates the bench's workflows still running (the create scenario's, which would
    /// otherwise sleep for a day on a queue nobody polls), stops the processes, drops the
    /// database. Best effort: problems are reported, not returned, so cleanup goes on.
    async fn stop(mut self, keep: Keep) {
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
            progress(format!("kept database {}", self.config.database_url.expose_secret()));
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
        let query = format!("TaskQueue = '{}' AND ExecutionStatus = 'Running'", self.config.task_queue);
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
struct Keep {
    database: bool,
    logs: bool,
}

/// Drops the bench database even if a killed process's session lingers (`WITH (FORCE)`), on a
/// connection that does not log the (slow, harmless) statement into the bench's output.
async fn drop_database(config: &Config) {
    let result = async {
        let options: PgConnectOptions = config.database_url.expose_secret().parse()?;
        let name = options.get_database().context("no database name")?.to_owned();
        let mut admin = options.database("postgres").disable_statement_logging().connect().await?;
        sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)).execute(&mut admin).await?;
        anyhow::Ok(())
    };
    if let Err(e) = result.await {
        eprintln!("[bench] dropping the bench database: {e:#}");
    }
}

struct Account {
    id: String,
    media: Value,
}

struct Created {
    id: Uuid,
    latency: Duration,
}

/// A free loopback port: bound and released at once, for a child process to bind. Another
/// process could take it in between; on a bench machine that race is not worth more code.
fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

fn millis(d: chrono::Duration) -> f64 {
    d.num_microseconds().map_or(d.num_milliseconds() as f64, |us| us as f64 / 1000.0)
}

/// Peak resident set size of a process, from the kernel's own bookkeeping.
fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_hwm(&status).with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Figures.

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles: each figure is one of the samples, none is interpolated.
    pub fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        Percentiles { p50: rank(50.0), p99: rank(99.0), max: rank(100.0) }
    }
}

/// `None` when the baseline is zero: no ratio to report, rather than infinity.
fn ratio(ours: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| ours / baseline)
}

#[derive(Serialize)]
struct Report {
    n: usize,
    concurrency: usize,
    channel: BenchChannel,
    build: &'static str,
    cpus: usize,
    /// The 1-minute load average before the bench's scenarios started.
    load_average: Option<f64>,
    create: CreateReport,
    burst: BurstReport,
    baseline: BaselineReport,
    /// burst / baseline, figure by figure.
    ratios: Ratios,
    memory: Memory,
}

#[derive(Serialize)]
struct CreateReport {
    count: usize,
    elapsed_s: f64,
    throughput_per_s: f64,
    latency_ms: Percentiles,
}

impl CreateReport {
    fn new(created: &[Created], elapsed: Duration) -> Self {
        CreateReport {
            count: created.len(),
            elapsed_s: elapsed.as_secs_f64(),
            throughput_per_s: created.len() as f64 / elapsed.as_secs_f64(),
            latency_ms: Percentiles::of(created.iter().map(|c| c.latency.as_secs_f64() * 1000.0).collect()),
        }
    }
}

#[derive(Serialize)]
struct BurstReport {
    count: usize,
    instant: DateTime<Utc>,
    /// From the instant to the sandbox receiving each post.
    lag_ms: Percentiles,
    /// From the instant to the last job's `published` row in Postgres.
    all_published_s: f64,
    /// Jobs that needed more than one attempt (0 unless something failed under load).
    jobs_retried: usize,
}

#[derive(Serialize)]
struct BaselineReport {
    count: usize,
    instant: DateTime<Utc>,
    /// From the instant to each no-op activity's completion.
    lag_ms: Percentiles,
    /// From the instant to the last completion.
    all_completed_s: f64,
}

#[derive(Serialize)]
struct Ratios {
    lag_p50: Option<f64>,
    lag_p99: Option<f64>,
    lag_max: Option<f64>,
    /// all_published_s / all_completed_s.
    all_done: Option<f64>,
}

#[derive(Serialize, Default)]
struct Memory {
    worker_vm_hwm_kib: Option<u64>,
    api_vm_hwm_kib: Option<u64>,
    sandbox_vm_hwm_kib: Option<u64>,
}

impl Report {
    fn print(&self) {
        let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.1}x"));
        let mib = |kib: Option<u64>| kib.map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let (c, b, base) = (&self.create, &self.burst, &self.baseline);
        println!();
        let channel = serde_json::to_value(self.channel).unwrap_or_default();
        let load = self.load_average.map_or("?".into(), |l| format!("{l:.2}"));
        println!("autopost bench: n={} concurrency={} channel={} {} build, {} cpus, load average {load} at start", self.n, self.concurrency, channel.as_str().unwrap_or("?"), self.build, self.cpus);
        println!("{:<34}{:>10}{:>10}{:>10}{:>14}", "", "p50 ms", "p99 ms", "max ms", "all done s");
        println!("{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14}", format!("create  {:.0} jobs/s (latency)", c.throughput_per_s), c.latency_ms.p50, c.latency_ms.p99, c.latency_ms.max, format!("{:.2}", c.elapsed_s));
        println!("{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14.2}", "burst  (publish_at -> platform)", b.lag_ms.p50, b.lag_ms.p99, b.lag_ms.max, b.all_published_s);
        println!("{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14.2}", "baseline  (instant -> activity)", base.lag_ms.p50, base.lag_ms.p99, base.lag_ms.max, base.all_completed_s);
        println!("{:<34}{:>10}{:>10}{:>10}{:>14}", "burst / baseline", ratio(self.ratios.lag_p50), ratio(self.ratios.lag_p99), ratio(self.ratios.lag_max), ratio(self.ratios.all_done));
        println!(
            "peak memory (VmHWM): worker {}, api {}, sandbox {}; burst jobs retried: {}",
            mib(self.memory.worker_vm_hwm_kib),
            mib(self.memory.api_vm_hwm_kib),
            mib(self.memory.sandbox_vm_hwm_kib),
            b.jobs_retried
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(p, Percentiles { p50: 50.0, p99: 99.0, max: 100.0 });
        let one = Percentiles::of(vec![7.0]);
        assert_eq!(one, Percentiles { p50: 7.0, p99: 7.0, max: 7.0 });
        assert_eq!(Percentiles::of(vec![]).max, 0.0);
    }

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        assert_eq!(parse_vm_hwm("Name:\tautopost\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\n"), Some(12345));
        assert_eq!(parse_vm_hwm("Name:\tautopost\n"), None);
        assert!(vm_hwm_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn ratios_need_a_baseline() {
        assert_eq!(ratio(30.0, 10.0), Some(3.0));
        assert_eq!(ratio(30.0, 0.0), None);
    }
}
