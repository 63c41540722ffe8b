//! Issue 11, tokens at rest: encrypted in `social_accounts`, re-encrypted by key rotation and by
//! `migrate` for rows an older version stored in plain text, renewed before they expire by the
//! worker's periodic refresh, and refreshed by compare-and-swap.

use std::{sync::Arc, time::Duration};

use autopost_activities::{
    db,
    refresh::Refreshed,
    vault::{Sealed, TokenField, TokenKeys},
};
use autopost_app::config::{PostgresSettings, TokenKeySettings};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool, migrate::MigrateDatabase};
use uuid::Uuid;

use crate::common::{Options, TEST_TOKEN_KEYS, TestApp, platform_user_id};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn key_settings(spec: &str) -> TokenKeySettings {
    TokenKeySettings { token_keys: Some(SecretString::from(spec.to_owned())) }
}

fn test_keys() -> TokenKeys {
    TokenKeys::parse(TEST_TOKEN_KEYS).unwrap()
}

/// A fresh key under the id `kid`.
fn fresh_key(kid: &str) -> String {
    let spec = TokenKeys::generate_spec();
    format!("{kid}:{}", spec.split_once(':').unwrap().1)
}

/// Links an account with the given tokens; returns its id.
async fn link(app: &TestApp, channel: &str, user: &str, access: &str, refresh: Option<&str>, expires_in: chrono::Duration) -> String {
    let (status, body) = app
        .post(
            "/v1/accounts",
            &json!({
                "channel": channel, "platform_user_id": user, "access_token": access,
                "refresh_token": refresh, "token_expires_at": Utc::now() + expires_in,
            }),
        )
        .await;
    assert_eq!(status, 201, "linking failed: {body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Tokens the sandbox issues for a platform user, as a real connect flow would give them.
async fn sandbox_account(app: &TestApp, channel: &str, user: &str) -> Value {
    let response = app
        .http
        .post(format!("{}/_sandbox/accounts", app.sandbox))
        .json(&json!({ "channel": channel, "platform_user_id": user }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "sandbox account: {}", response.text().await.unwrap());
    response.json().await.unwrap()
}

/// An account row's access and refresh token ciphertexts and key id.
type StoredRow = (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn account(app: &TestApp, keys: &TokenKeys, id: &str) -> db::Account {
    db::load_account(&app.db, keys, id.parse().unwrap()).await.unwrap().expect("the account exists")
}

#[tokio::test(flavor = "multi_thread")]
async fn linked_tokens_are_stored_encrypted_and_no_column_holds_their_bytes() {
    let app = TestApp::spawn().await;
    let ig_token = "vaultig.IGQVJ-plain-access-token-5e1d0c";
    let tt_token = "vaulttt.act-plain-access-token-77b2a9";
    let tt_refresh = "vaulttt.rft-plain-refresh-token-3f8e61";
    let instagram = link(&app, "instagram", &platform_user_id("instagram", ig_token), ig_token, None, chrono::Duration::days(60)).await;
    link(&app, "tiktok", &platform_user_id("tiktok", tt_token), tt_token, Some(tt_refresh), chrono::Duration::days(60)).await;

    // Every column of every row, in its text form (bytea as hex) and as raw bytes.
    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM social_accounts a").fetch_all(&app.db).await.unwrap();
    let ciphertexts: Vec<StoredRow> =
        sqlx::query_as("SELECT access_token_ciphertext, refresh_token_ciphertext, token_key_id FROM social_accounts")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for token in [ig_token, tt_token, tt_refresh] {
        let secret_part = token.split_once('.').unwrap().1;
        for row in &rows {
            assert!(!row.contains(secret_part) && !row.contains(&hex(secret_part.as_bytes())), "{token} is stored readable: {row}");
        }
        for (access, refresh, _) in &ciphertexts {
            for bytes in [access, refresh].into_iter().flatten() {
                assert!(!contains(bytes, secret_part.as_bytes()), "{token} is inside a ciphertext");
            }
        }
    }
    assert!(ciphertexts.iter().all(|(access, _, kid)| access.is_some() && kid.as_deref() == Some("t1")), "sealed under the test key");
    let plain_columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'social_accounts' AND column_name IN ('access_token', 'refresh_token')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(plain_columns, 0, "the plain token columns are gone");

    // The worker opens what the API sealed: the post publishes with the linked token.
    let job = app.schedule(&instagram, Utc::now() + chrono::Duration::seconds(2), "sealed", image(&app)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_reencrypts_every_account_under_the_new_key_after_which_the_old_key_can_go() {
    let mut app = TestApp::spawn().await;
    let ig_token = "rotateig.access-token";
    let tt_token = "rotatett.access-token";
    let tt_refresh = "rotatett.refresh-token";
    let instagram = link(&app, "instagram", &platform_user_id("instagram", ig_token), ig_token, None, chrono::Duration::days(60)).await;
    let tiktok = link(&app, "tiktok", &platform_user_id("tiktok", tt_token), tt_token, Some(tt_refresh), chrono::Duration::days(60)).await;

    let new_key = fresh_key("new");
    let both = key_settings(&format!("{new_key},{TEST_TOKEN_KEYS}"));
    let report = autopost_app::rotate_token_key(&app.config.postgres, &both).await.unwrap();
    assert_eq!((report.reencrypted, report.changed_meanwhile), (2, 0));
    let again = autopost_app::rotate_token_key(&app.config.postgres, &both).await.unwrap();
    assert_eq!(again.reencrypted, 0, "a second run finds nothing to do");
    let kids: Vec<Option<String>> = sqlx::query_scalar("SELECT token_key_id FROM social_accounts").fetch_all(&app.db).await.unwrap();
    assert_eq!(kids, vec![Some("new".to_owned()); 2]);

    // The old key alone opens nothing any more; the new one alone opens every token.
    let old_only = test_keys();
    assert!(matches!(db::load_account(&app.db, &old_only, tiktok.parse().unwrap()).await, Err(db::DbError::Vault(_))));
    let new_only = TokenKeys::parse(&new_key).unwrap();
    let opened = account(&app, &new_only, &tiktok).await;
    assert_eq!(opened.access_token.expose_secret(), tt_token);
    assert_eq!(opened.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()).as_deref(), Some(tt_refresh));

    // A worker that holds only the new key publishes.
    app.stop_worker().await;
    app.config.token_keys = key_settings(&new_key);
    app.start_worker();
    let job = app.schedule(&instagram, Utc::now() + chrono::Duration::seconds(2), "rotated", image(&app)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
}

/// A database of its own, on the server the tests use, dropped at the end.
struct ScratchDatabase {
    settings: PostgresSettings,
}

impl ScratchDatabase {
    async fn create() -> Self {
        let raw = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut url = url::Url::parse(&raw).unwrap();
        url.set_path(&format!("autopost_test_{}", Uuid::new_v4().simple()));
        sqlx::Postgres::create_database(url.as_str()).await.unwrap();
        ScratchDatabase { settings: PostgresSettings::for_url(url.to_string()) }
    }

    async fn drop(self) {
        let _ = sqlx::Postgres::force_drop_database(self.settings.database_url.expose_secret()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_encrypts_tokens_an_older_version_left_in_plain_text_and_never_drops_one() {
    let scratch = ScratchDatabase::create().await;
    let pool: PgPool = autopost_app::connect_db(&scratch.settings).await.unwrap();
    // The schema as the previous version left it, with one account in it.
    autopost_app::migrations_through(autopost_app::ENCRYPTED_TOKENS_MIGRATION - 1).run(&pool).await.unwrap();
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO social_accounts (id, creator_id, channel, platform_user_id, access_token, token_expires_at, refresh_token)
         VALUES ($1, 'creator-1', 'tiktok', 'open-legacy', 'legacy-access-token', now() + interval '1 day', 'legacy-refresh-token')",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();

    // Migrations applied without the encryption step refuse to drop the plain columns. (On a
    // connection of its own: sqlx keeps its migration lock after a failed run, until the session ends.)
    let mut connection = sqlx::PgConnection::connect(scratch.settings.database_url.expose_secret()).await.unwrap();
    let refused = autopost_app::MIGRATOR.run(&mut connection).await.expect_err("the drop must refuse while a plain token is left");
    assert!(format!("{refused:#}").contains("plain-text tokens"), "{refused:#}");
    connection.close().await.unwrap();
    let still: Option<String> =
        sqlx::query_scalar("SELECT access_token FROM social_accounts WHERE id = $1").bind(id).fetch_one(&pool).await.unwrap();
    assert_eq!(still.as_deref(), Some("legacy-access-token"), "nothing was lost");
    pool.close().await;

    // `migrate` needs the keys for this, and says so.
    let unset = autopost_app::migrate(&scratch.settings, &TokenKeySettings { token_keys: None }).await.expect_err("no keys");
    assert!(format!("{unset:#}").contains("AUTOPOST_TOKEN_KEYS is not set"), "{unset:#}");

    let migrated = autopost_app::migrate(&scratch.settings, &key_settings(TEST_TOKEN_KEYS)).await.unwrap();
    let (access, refresh, kid): (Vec<u8>, Vec<u8>, String) =
        sqlx::query_as("SELECT access_token_ciphertext, refresh_token_ciphertext, token_key_id FROM social_accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&migrated)
            .await
            .unwrap();
    let keys = test_keys();
    let open = |field, ciphertext: Vec<u8>| keys.open(id, field, &Sealed { key_id: kid.clone(), ciphertext }).unwrap();
    assert_eq!(open(TokenField::Access, access).expose_secret(), "legacy-access-token");
    assert_eq!(open(TokenField::Refresh, refresh).expose_secret(), "legacy-refresh-token");
    let plain_columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'social_accounts' AND column_name IN ('access_token', 'refresh_token')",
    )
    .fetch_one(&migrated)
    .await
    .unwrap();
    assert_eq!(plain_columns, 0);
    // Migrating an up-to-date database again is a no-op, with or without keys.
    autopost_app::migrate(&scratch.settings, &TokenKeySettings { token_keys: None }).await.unwrap().close().await;

    migrated.close().await;
    scratch.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_periodic_refresh_renews_an_instagram_token_near_expiry_and_marks_one_the_platform_refuses() {
    let mut app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    app.config.worker.token_refresh_interval = Duration::from_secs(1);
    let renewable = sandbox_account(&app, "instagram", "17841400000000701").await;
    let refused = sandbox_account(&app, "instagram", "17841400000000702").await;
    let renewable_id =
        link(&app, "instagram", "17841400000000701", renewable["access_token"].as_str().unwrap(), None, chrono::Duration::days(60)).await;
    let refused_token = refused["access_token"].as_str().unwrap();
    let refused_id = link(&app, "instagram", "17841400000000702", refused_token, None, chrono::Duration::days(60)).await;
    app.start_worker();
    // A post a month ahead, checked ready when scheduled.
    let job = app.schedule(&refused_id, Utc::now() + chrono::Duration::days(30), "far ahead", image(&app)).await;
    let job_id = job["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{job_id}")).await;
        if job["readiness"].is_object() {
            assert_eq!(job["readiness"]["ok"], true, "{job}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no readiness: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both were linked long ago and expire in two days; the platform no longer renews the second.
    sqlx::query(
        "UPDATE social_accounts SET token_expires_at = now() + interval '2 days', updated_at = now() - interval '50 days'
         WHERE id = ANY($1)",
    )
    .bind(vec![renewable_id.parse::<Uuid>().unwrap(), refused_id.parse::<Uuid>().unwrap()])
    .execute(&app.db)
    .await
    .unwrap();
    let response =
        app.http.post(format!("{}/_sandbox/tokens/expire", app.sandbox)).json(&json!({ "token": refused_token })).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, detail) = loop {
        let (status, detail): (String, Option<String>) =
            sqlx::query_as("SELECT token_status, token_status_detail FROM social_accounts WHERE id = $1::uuid")
                .bind(&refused_id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if status != "ok" {
            break (status, detail);
        }
        assert!(std::time::Instant::now() < deadline, "the refused account was never marked\n{}", app.worker_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, "refresh_failed");
    let detail = detail.unwrap();
    assert!(detail.contains("Instagram refused to renew the token") && detail.contains("reconnect"), "{detail}");

    // The job's readiness fails at once, long before its publish time; it is still scheduled.
    let (_, job) = app.get(&format!("/v1/publish-jobs/{job_id}")).await;
    assert_eq!(job["status"], "scheduled", "{job}");
    assert_eq!(job["readiness"]["ok"], false, "{job}");
    let checks = job["readiness"]["checks"].as_array().unwrap();
    let token_check = checks.iter().find(|c| c["name"] == "token").unwrap();
    assert_eq!(token_check["ok"], false, "{job}");
    assert_eq!(token_check["detail"], detail.as_str());
    assert!(checks.iter().any(|c| c["name"] == "media" && c["ok"] == true), "the other checks stand: {job}");

    // The other token was renewed: 60 more days, healthy, and it publishes.
    let renewed = account(&app, &test_keys(), &renewable_id).await;
    assert!(renewed.token_expires_at > Utc::now() + chrono::Duration::days(50), "expires {}", renewed.token_expires_at);
    assert_ne!(renewed.access_token.expose_secret(), renewable["access_token"].as_str().unwrap(), "a new token is stored");
    assert!(renewed.refresh_failed.is_none());
    let post = app.schedule(&renewable_id, Utc::now() + chrono::Duration::seconds(2), "renewed", image(&app)).await;
    app.wait_for_status(post["id"].as_str().unwrap(), "published", WAIT).await;

    let metrics = app.http.get(app.worker_metrics_url().await).send().await.unwrap().text().await.unwrap();
    for outcome in ["refreshed", "refused"] {
        assert!(
            metrics.lines().any(|l| l.starts_with("autopost_token_refreshes_total")
                && l.contains("channel=\"instagram\"")
                && l.contains(&format!("outcome=\"{outcome}\""))),
            "no {outcome} count in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_refreshes_at_once_one_stores_its_tokens_and_the_other_uses_them() {
    let app = TestApp::spawn_api_only().await;
    let issued = sandbox_account(&app, "tiktok", "open-race-1").await;
    let id = link(
        &app,
        "tiktok",
        "open-race-1",
        issued["access_token"].as_str().unwrap(),
        issued["refresh_token"].as_str(),
        chrono::Duration::hours(1),
    )
    .await;
    let keys = Arc::new(test_keys());
    let refresher = autopost_app::token_refresh::refresher(&app.config.worker_config(), app.db.clone(), keys.clone()).unwrap();
    // Two preflights that read the account before either refreshed it.
    let (first, second) = (account(&app, &keys, &id).await, account(&app, &keys, &id).await);
    let (a, b) = tokio::join!(refresher.refresh(&first), refresher.refresh(&second));
    let (winner, loser) = match (a.unwrap(), b.unwrap()) {
        (Refreshed::Stored(winner), Refreshed::Superseded(loser)) | (Refreshed::Superseded(loser), Refreshed::Stored(winner)) => {
            (winner, loser)
        }
        _ => panic!("expected one stored refresh and one superseded"),
    };
    assert_ne!(winner.access_token.expose_secret(), issued["access_token"].as_str().unwrap());
    assert_eq!(loser.access_token.expose_secret(), winner.access_token.expose_secret(), "the loser uses the winner's token");
    let stored = account(&app, &keys, &id).await;
    assert_eq!(stored.access_token.expose_secret(), winner.access_token.expose_secret());
    assert_eq!(
        stored.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()),
        winner.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()),
        "the refresh token stored is the one issued with the stored access token"
    );
}
