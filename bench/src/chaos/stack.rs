//! The system the fault suite breaks, all of it its own so it can be killed freely: a PostgreSQL
//! cluster (`initdb` into a temporary folder, another port), a Temporal dev server (own port and
//! database file, so it survives a restart), the sandbox, the API and two workers, each a child
//! process of this binary.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use autopost_app::Config;
use nix::{sys::signal::Signal, unistd::Pid};
use secrecy::SecretString;
use tokio::process::{Child, Command};

use crate::progress;

pub(crate) const WORKERS: usize = 2;
const SEARCH_ATTRIBUTES: [&str; 4] = ["PublishStatus=Keyword", "Channel=Keyword", "CreatorId=Keyword", "PublishAt=Datetime"];

/// Where the Temporal CLI and PostgreSQL's server programs are.
#[derive(Clone, Debug)]
pub(crate) struct Tools {
    pub temporal: PathBuf,
    pub pg_bin: PathBuf,
}

impl Tools {
    /// `temporal` from `--temporal-bin`, PATH or `temporal-dev/.bin`; `initdb` from
    /// `/usr/lib/postgresql/*/bin` (newest) or PATH.
    pub fn find(temporal: Option<PathBuf>) -> anyhow::Result<Self> {
        let temporal = temporal
            .or_else(|| which("temporal"))
            .or_else(|| Some(PathBuf::from("temporal-dev/.bin/bin/temporal")).filter(|p| p.exists()))
            .context("no Temporal CLI: pass --temporal-bin (temporal-dev/test installs one into temporal-dev/.bin)")?;
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
            .unwrap_or_default();
        versions.sort();
        let pg_bin = versions
            .pop()
            .or_else(|| which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
            .context("no PostgreSQL server programs (initdb, pg_ctl): install the postgresql package")?;
        Ok(Tools { temporal, pg_bin })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The private PostgreSQL cluster. `initdb` and `postgres` refuse to run as root: as root they
/// run as the `postgres` user.
pub(crate) struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let as_postgres = nix::unistd::geteuid().is_root();
        let data = dir.join("pg");
        let pg = Postgres { bin: bin.to_owned(), data, port: free_port()?, as_postgres };
        let data = pg.data.to_string_lossy().into_owned();
        pg.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]).await?;
        pg.ctl("start").await?;
        Ok(pg)
    }

    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command.args(args).stdin(Stdio::null()).output().await.with_context(|| format!("running {program}"))?;
        ensure!(output.status.success(), "{program} failed: {}", String::from_utf8_lossy(&output.stderr));
        Ok(())
    }

    async fn ctl(&self, action: &str) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off", self.port);
        let log = self.data.with_extension("log").to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-m", "fast", action]).await
    }

    pub async fn restart(&self) -> anyhow::Result<()> {
        self.ctl("restart").await
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/autopost_chaos", self.port)
    }
}

/// The Temporal dev server, restartable on the same database file.
pub(crate) struct Temporal {
    bin: PathBuf,
    port: u16,
    db_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Temporal {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let mut temporal = Temporal {
            bin: bin.to_owned(),
            port: free_port()?,
            db_file: dir.join("temporal.db"),
            log: dir.join("temporal.log"),
            child: None,
        };
        temporal.spawn().await?;
        Ok(temporal)
    }

    /// Starts the server. Its HTTP and metrics ports are found free and released before it binds
    /// them, so another process (a test's ephemeral port) can take one first; the server then
    /// exits at once, and it is started again on other ports.
    async fn spawn(&mut self) -> anyhow::Result<()> {
        for _ in 0..3 {
            if self.spawn_once().await? {
                return Ok(());
            }
        }
        anyhow::bail!("the Temporal dev server exited at start three times; see {}", self.log.display())
    }

    /// `false` when the server exited before it listened.
    async fn spawn_once(&mut self) -> anyhow::Result<bool> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.bin);
        command
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1", "--log-level", "error"])
            .args(["--port", &self.port.to_string(), "--db-filename"])
            .arg(&self.db_file)
            .args(["--http-port", &free_port()?.to_string(), "--metrics-port", &free_port()?.to_string()]);
        for attribute in SEARCH_ATTRIBUTES {
            command.args(["--search-attribute", attribute]);
        }
        self.child = Some(
            command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true).spawn().context("starting temporal")?,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                // The frontend accepts connections a moment before it serves.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(true);
            }
            if let Some(child) = self.child.as_mut()
                && child.try_wait()?.is_some()
            {
                self.child = None;
                return Ok(false);
            }
            ensure!(Instant::now() < deadline, "the Temporal dev server did not start; see {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL, then the same server on the same database file.
    pub async fn kill_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        tokio::time::sleep(down_for).await;
        self.spawn().await
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Everything the suite starts. Dropping it kills every process; `stop` also removes the
/// cluster and the folder.
pub(crate) struct Stack {
    pub config: Config,
    pub dir: PathBuf,
    pub pg: Postgres,
    pub temporal: Temporal,
    sandbox: Option<Child>,
    api: Option<Child>,
    workers: Vec<Option<Child>>,
}

/// The creator every chaos job belongs to.
pub const CHAOS_CREATOR: &str = "chaos";

impl Stack {
    pub async fn start(tools: &Tools) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("autopost-chaos-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        // The cluster runs as `postgres` when we are root: it must be able to enter the folder.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        progress(format!("chaos stack in {}", dir.display()));
        let pg = Postgres::start(&tools.pg_bin, &dir).await.context("starting the private PostgreSQL cluster")?;
        let temporal = Temporal::start(&tools.temporal, &dir).await?;

        let mut config = Config::with_defaults();
        config.postgres.database_url = SecretString::from(pg.url());
        config.temporal.temporal_address = Some(temporal.address());
        config.temporal.temporal_namespace = Some("default".into());
        // Its own server: no profile of the developer's applies.
        config.temporal.temporal_config_file = Some("/dev/null".into());
        config.temporal.task_queue = "autopost-chaos".into();
        config.api.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        config.api.publish_now = true;
        config.sandbox.sandbox_listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        config.use_sandbox_platforms();
        // Short waits everywhere, so every fault plays out within a run.
        config.schedule.retry_backoff = autopost_app::config::Backoff(vec![Duration::from_secs(1); 3]);
        config.schedule.heartbeat_timeout = Duration::from_secs(2);
        config.worker.platform_poll_interval = Duration::from_millis(100);
        config.worker.platform_request_timeout = Duration::from_secs(6);
        config.worker.platform_outcome_wait = Duration::from_secs(3);
        config.worker.preflight_deadline = Duration::from_secs(10);
        config.worker.reconcile_interval = Duration::from_secs(2);
        config.worker.reconcile_grace = Duration::from_secs(5);
        config.worker.worker_metrics_listen = "127.0.0.1:0".parse()?;
        config.worker.tiktok_client_key = Some("chaos-client-key".into());
        config.worker.tiktok_client_secret = Some(SecretString::from("chaos-client-secret"));
        config.api.command_timeout = Duration::from_secs(5);
        config.token_keys.generate_if_unset();
        crate::prepare_api(&mut config);
        autopost_app::migrate(&config.postgres, &config.token_keys).await.context("migrating the chaos database")?;

        let mut stack = Stack { config, dir, pg, temporal, sandbox: None, api: None, workers: (0..WORKERS).map(|_| None).collect() };
        stack.sandbox = Some(stack.spawn("sandbox", "sandbox")?);
        stack.start_api().await?;
        for i in 0..WORKERS {
            stack.start_worker(i)?;
        }
        Ok(stack)
    }

    fn spawn(&self, subcommand: &str, log_name: &str) -> anyhow::Result<Child> {
        crate::autopost_command(subcommand, &self.config, &self.dir.join(format!("{log_name}.log")))?
            .env("RUST_LOG", "info,temporalio_sdk_core=warn")
            .spawn()
            .with_context(|| format!("starting `autopost {subcommand}`"))
    }

    /// A client acting for the chaos runs' creator.
    pub fn client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        crate::creator_client(&self.config, CHAOS_CREATOR, timeout)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.config.api.listen)
    }

    pub fn sandbox_url(&self) -> String {
        self.config.sandbox.url()
    }

    pub async fn start_api(&mut self) -> anyhow::Result<()> {
        self.api = Some(self.spawn("api", "api")?);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.api_url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the API did not start; see {}", self.dir.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn kill_api(&mut self) -> anyhow::Result<()> {
        if let Some(mut api) = self.api.take() {
            api.kill().await?;
        }
        Ok(())
    }

    pub fn start_worker(&mut self, index: usize) -> anyhow::Result<()> {
        if self.workers[index].is_none() {
            self.workers[index] = Some(self.spawn("worker", &format!("worker-{index}"))?);
        }
        Ok(())
    }

    /// Sends `signal` to a worker and waits for it to exit (SIGTERM drains first).
    pub async fn stop_worker(&mut self, index: usize, signal: Signal) -> anyhow::Result<()> {
        let Some(mut child) = self.workers[index].take() else { return Ok(()) };
        if let Some(pid) = child.id() {
            nix::sys::signal::kill(Pid::from_raw(pid as i32), signal)?;
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
            child.kill().await?;
            bail!("worker {index} did not stop within 30 s of {signal}");
        }
        Ok(())
    }

    /// Stops everything and removes the folder (unless `keep`).
    pub async fn stop(mut self, keep: bool) {
        for child in self.workers.iter_mut().filter_map(Option::take).chain(self.api.take()).chain(self.sandbox.take()) {
            let mut child = child;
            let _ = child.kill().await;
        }
        if let Some(mut child) = self.temporal.child.take() {
            let _ = child.kill().await;
        }
        if let Err(e) = self.pg.ctl("stop").await {
            progress(format!("stopping the chaos PostgreSQL: {e:#}"));
        }
        if keep {
            progress(format!("kept the chaos stack's logs in {}", self.dir.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
