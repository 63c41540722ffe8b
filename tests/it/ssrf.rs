//! Issue 11, item 5: a media URL cannot make the worker connect into the internal network,
//! whether it names an internal address, a hostname resolving to one, or redirects to one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::TestApp;

const WAIT: Duration = Duration::from_secs(60);

/// Stands for an internal service: counts every TCP connection it accepts.
async fn counting_listener(address: &str) -> Option<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind(address).await.ok()?;
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Some((port, accepted))
}

fn media_check(job: &Value) -> Value {
    job["readiness"]["checks"].as_array().and_then(|checks| checks.iter().find(|c| c["name"] == "media").cloned()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn media_urls_leading_to_internal_addresses_are_refused_without_any_connection() {
    let app = TestApp::spawn().await;
    let (v4_port, v4_accepted) = counting_listener("127.0.0.1:0").await.expect("an IPv4 loopback listener");
    let v6 = counting_listener("[::1]:0").await;

    let mut urls = vec![
        format!("https://127.0.0.1:{v4_port}/a.jpg"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.0.0.1/a.jpg".to_owned(),
        // A hostname: refused on the addresses it resolves to, at connect time.
        format!("https://localhost:{v4_port}/a.jpg"),
        // Plain http on the sandbox's own origin is allowed; where it redirects to is not.
        url::Url::parse_with_params(&format!("{}/_sandbox/redirect", app.sandbox), [("to", format!("https://127.0.0.1:{v4_port}/a.jpg"))])
            .unwrap()
            .to_string(),
    ];
    if let Some((v6_port, _)) = &v6 {
        urls.push(format!("https://[::1]:{v6_port}/a.jpg"));
    }

    let account = app.link_account("instagram", "token-ssrf").await;
    let publish_at = Utc::now() + chrono::Duration::seconds(3);
    let mut jobs = Vec::new();
    for url in &urls {
        let job = app.schedule(&account, publish_at, "ssrf", json!([{ "url": url, "kind": "image" }])).await;
        jobs.push((url, job["id"].as_str().unwrap().to_owned()));
    }
    // An allowed URL on the sandbox's origin still passes: the guard is not a blanket refusal.
    let fine = app
        .schedule(
            &account,
            Utc::now() + chrono::Duration::days(1),
            "fine",
            json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]),
        )
        .await;

    for (url, id) in &jobs {
        let job = app.wait_for_status(id, "needs_attention", WAIT).await;
        assert_eq!(job["last_error"]["code"], "preflight.media_forbidden_host", "{url}: {job}");
        assert_eq!(job["readiness"]["ok"], false, "{url}: {job}");
        let check = media_check(&job);
        assert_eq!(check["ok"], false, "{url}: {job}");
        let detail = check["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("not a public address"), "{url}: {detail}");
        if url.contains("/_sandbox/redirect") {
            assert!(detail.contains("redirects"), "the refused hop is the redirect: {detail}");
        }
        assert_eq!(app.attempts(id).await.len(), 0, "{url}: no publish attempt");
    }
    let fine = fine["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let fine = loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{fine}")).await;
        if job["readiness"].is_object() {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "no readiness: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(fine["readiness"]["ok"], true, "{fine}");

    assert_eq!(v4_accepted.load(Ordering::SeqCst), 0, "nothing connected to the internal IPv4 service");
    if let Some((_, v6_accepted)) = v6 {
        assert_eq!(v6_accepted.load(Ordering::SeqCst), 0, "nothing connected to the internal IPv6 service");
    }
}
