//! Issue 16, part 2: Postgres for production. Pool size, acquire and statement timeouts are
//! settings; the API and the worker need no more than the grants docs/deploy.md lists; a role
//! that may not create the database is told to create it first.

use std::time::Duration;

use crate::common::{Options, TestApp};
use autopost_app::config::{PostgresSettings, TokenKeySettings};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

fn with_user(settings: &PostgresSettings, user: &str, database: Option<&str>) -> PostgresSettings {
    let mut url = url::Url::parse(settings.database_url.expose_secret()).unwrap();
    url.set_username(user).unwrap();
    if let Some(database) = database {
        url.set_path(database);
    }
    PostgresSettings { database_url: SecretString::from(url.to_string()), ..settings.clone() }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_takes_its_size_and_statement_timeout_from_the_settings() {
    let app = TestApp::spawn_api_only().await;
    let settings = PostgresSettings {
        db_pool_size: 3,
        db_statement_timeout: Duration::from_millis(500),
        db_acquire_timeout: Duration::from_secs(1),
        ..app.config.postgres.clone()
    };
    let pool = autopost_app::connect_db(&settings).await.unwrap();
    assert_eq!(pool.options().get_max_connections(), 3);
    let shown: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(&pool).await.unwrap();
    assert_eq!(shown, "500ms");
    let stuck = sqlx::query("SELECT pg_sleep(3)").execute(&pool).await.expect_err("the statement is cancelled");
    assert!(matches!(&stuck, sqlx::Error::Database(e) if e.code().as_deref() == Some("57014")), "{stuck}");
    // Every connection busy: the next request waits the acquire timeout, then fails.
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| pool.acquire())).await.into_iter().map(Result::unwrap).collect();
    let started = std::time::Instant::now();
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolTimedOut)));
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    drop(held);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_may_not_create_the_database_is_told_to_create_it_first() {
    let app = TestApp::spawn_api_only().await;
    let role = format!("autopost_nocreate_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB")).execute(&app.db).await.unwrap();
    let missing = format!("autopost_test_missing_{}", uuid::Uuid::new_v4().simple());
    let settings = with_user(&app.config.postgres, &role, Some(&missing));
    let error = format!("{:#}", autopost_app::migrate(&settings, &TokenKeySettings { token_keys: None }).await.expect_err("no database"));
    assert!(error.contains("does not exist") && error.contains("may not create databases") && error.contains(&missing), "{error}");
    sqlx::query(&format!("DROP ROLE {role}")).execute(&app.db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_and_a_worker_run_as_an_application_role_with_only_the_documented_grants() {
    let mut app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    // The tables belong to the role that migrated; the app role gets docs/deploy.md's grants.
    let role = format!("autopost_app_{}", uuid::Uuid::new_v4().simple());
    for statement in [
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON social_accounts, publish_jobs, publish_attempts, idempotency_keys, platform_references TO {role}"
        ),
        format!("GRANT USAGE ON SEQUENCE platform_references_id_seq TO {role}"),
    ] {
        sqlx::query(&statement).execute(&app.db).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    app.config.postgres = with_user(&app.config.postgres, &role, None);
    app.start_worker();
    let (mut api_process, api) = app.spawn_api_process().await;
    let account = app.link_account_via(&api, "instagram", "token-app-role").await;
    let media = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let job = app.schedule_via(&api, &account, Utc::now() + chrono::Duration::seconds(2), "least privilege", media).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", Duration::from_secs(60)).await;
    assert!(!app.worker_log().contains("permission denied"), "{}", app.worker_log());

    app.kill_worker().await;
    api_process.kill().await.unwrap();
    // Roles belong to the cluster, not the test's database.
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        let _ = sqlx::query(&statement).execute(&app.db).await;
    }
}

/// A private Postgres cluster that accepts only TLS connections, with a certificate made here.
/// Stopped when dropped.
struct TlsPostgres {
    dir: std::path::PathBuf,
    pg_ctl: std::path::PathBuf,
    port: u16,
}

impl TlsPostgres {
    fn start() -> Self {
        let bin = postgres_bin();
        let dir = std::env::temp_dir().join(format!("autopost-pg-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        as_postgres_owner(&dir);
        run_as_postgres(&[bin.join("initdb").to_str().unwrap(), "-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust"]);

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        use std::io::Write;
        writeln!(conf, "ssl = on\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'", dir.display()).unwrap();
        // TCP only over TLS: a plain connection is refused.
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
        as_postgres_owner(&dir);
        std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let pg_ctl = bin.join("pg_ctl");
        run_as_postgres(&[pg_ctl.to_str().unwrap(), "start", "-D", data.to_str().unwrap(), "-w", "-l", dir.join("log").to_str().unwrap()]);
        TlsPostgres { dir, pg_ctl, port }
    }

    fn url(&self, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        run_as_postgres(&[self.pg_ctl.to_str().unwrap(), "stop", "-D", data.to_str().unwrap(), "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// initdb and pg_ctl, as temporal-dev finds them.
fn postgres_bin() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists());
    let packaged = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists());
    on_path.or(packaged).expect("initdb and pg_ctl (the PostgreSQL server package) are needed for the TLS test")
}

/// initdb and postgres refuse to run as root; as root they run as the postgres system user.
fn run_as_postgres(command: &[&str]) {
    let root = nix::unistd::geteuid().is_root();
    let mut process = if root {
        let mut p = std::process::Command::new("runuser");
        p.args(["-u", "postgres", "--"]).args(command);
        p
    } else {
        let mut p = std::process::Command::new(command[0]);
        p.args(&command[1..]);
        p
    };
    let output = process.current_dir("/").output().unwrap();
    assert!(output.status.success(), "{command:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

fn as_postgres_owner(dir: &std::path::Path) {
    if nix::unistd::geteuid().is_root() {
        let status = std::process::Command::new("chown").args(["-R", "postgres:postgres", dir.to_str().unwrap()]).status().unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_verify_full_with_a_ca_file_connects_over_tls_and_a_wrong_ca_is_refused() {
    let server = tokio::task::spawn_blocking(TlsPostgres::start).await.unwrap();
    let ca = server.dir.join("ca.pem");
    let settings = PostgresSettings::for_url(server.url(&format!("sslmode=verify-full&sslrootcert={}", ca.display())));
    let pool = autopost_app::connect_db(&settings).await.expect("verify-full with the CA connects");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&pool).await.unwrap();
    assert!(ssl, "the connection is encrypted");
    pool.close().await;

    // The machine's roots do not know this CA; without TLS the server lets no one in.
    let unknown = PostgresSettings::for_url(server.url("sslmode=verify-full"));
    let error = format!("{:#}", autopost_app::connect_db(&unknown).await.expect_err("an unknown CA is refused"));
    assert!(error.contains(&format!("127.0.0.1:{}", server.port)), "the error names the server: {error}");
    let plain = PostgresSettings::for_url(server.url("sslmode=disable"));
    assert!(autopost_app::connect_db(&plain).await.is_err(), "a plain connection is refused");
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}
