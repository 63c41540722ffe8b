//! TikTok videos that TikTok cannot pull (their host is not a domain verified for the app) are
//! fetched by the worker and uploaded in chunks (`FILE_UPLOAD`), and posted exactly once: through
//! a chunk the platform refuses, and through a worker killed or frozen in the middle of an upload.

use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, kill};
use serde_json::{Value, json};

use crate::common::{Options, TestApp, platform_user_id};

const WAIT: Duration = Duration::from_secs(90);
const MB: usize = 1024 * 1024;
/// The only domain verified for the app, on both sides: never the sandbox's own host.
const VERIFIED: &str = "media.example.com";

/// A stack where TikTok pulls from nothing the tests use: the worker is told only [`VERIFIED`]
/// is verified, and the sandbox refuses to pull from any other host, its own included. A video
/// that went by `PULL_FROM_URL` would fail with `url_ownership_unverified`.
async fn upload_only_app(options: Options) -> TestApp {
    let mut app = TestApp::spawn_with(Options { worker: false, ..options }).await;
    app.config.worker.tiktok_verified_domains = Some(vec![VERIFIED.to_owned()]);
    let response = app
        .http
        .post(format!("{}/_sandbox/tiktok/verified-domains", app.sandbox))
        .json(&json!({ "domains": [VERIFIED] }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    app.start_worker();
    app
}

/// The sandbox's 3 s sample padded to `size` bytes with a `free` box (still a valid MP4), put on
/// the sandbox's media host as `name`; returns its URL and bytes.
async fn store_video(app: &TestApp, name: &str, size: usize) -> (String, Vec<u8>) {
    let mut video = include_bytes!("../../sandbox/assets/sample.mp4").to_vec();
    if size > video.len() {
        let padding = size - video.len();
        video.extend_from_slice(&u32::try_from(padding).unwrap().to_be_bytes());
        video.extend_from_slice(b"free");
        video.resize(size, 0);
    }
    let url = app.media_url(name);
    let response = app.http.put(&url).header("content-type", "video/mp4").body(video.clone()).send().await.unwrap();
    assert!(response.status().is_success(), "storing {name}: {}", response.status());
    (url, video)
}

/// How the sandbox names an upload's bytes in `/_sandbox/posts`: FNV-1a-64 and the size.
fn upload_media(video: &[u8]) -> Value {
    let hash = video.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3));
    json!([format!("upload:{hash:016x}:{}", video.len())])
}

/// Schedules a public TikTok video of `url` due in 3 s; returns the job's id.
async fn schedule_video(app: &TestApp, account: &str, caption: &str, url: &str) -> String {
    let media = json!([{ "url": url, "kind": "video" }]);
    let job = app.schedule(account, Utc::now() + chrono::Duration::seconds(3), caption, media).await;
    job["id"].as_str().unwrap().to_owned()
}

async fn posts_with_caption(app: &TestApp, caption: &str) -> Vec<Value> {
    app.sandbox_posts().await.into_iter().filter(|post| post["caption"] == caption).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_on_an_unverified_domain_is_uploaded_in_chunks_and_posted_once() {
    let app = upload_only_app(Options::default()).await;
    let account = app.link_account("tiktok", "tt-upload").await;
    // 25 MB: two chunks of 10 MB, the second carrying the other 15.
    let (url, video) = store_video(&app, "long-take.mp4", 25 * MB).await;
    let id = schedule_video(&app, &account, "uploaded, not pulled", &url).await;
    let job = app.wait_for_status(&id, "published", WAIT).await;

    let posts = posts_with_caption(&app, "uploaded, not pulled").await;
    assert_eq!(posts.len(), 1, "exactly one post: {posts:?}");
    assert_eq!(posts[0]["media"], upload_media(&video), "the post is the uploaded bytes");
    assert_eq!(posts[0]["platform_user_id"], platform_user_id("tiktok", "tt-upload"));
    assert_eq!(posts[0]["options"]["privacy_level"], "PUBLIC_TO_EVERYONE");
    assert_eq!(job["platform_post_id"], posts[0]["platform_post_id"], "{job}");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1);
    assert_eq!(app.sandbox_calls("tiktok.upload").await, 2, "one PUT per chunk");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_the_platform_refuses_once_is_sent_again_without_a_second_post() {
    let app = upload_only_app(Options::default()).await;
    let account = app.link_account("tiktok", "tt-upload-fault").await;
    let (url, video) = store_video(&app, "flaky.mp4", 25 * MB).await;
    app.sandbox_fault(json!({ "endpoint": "tiktok.upload", "times": 1, "status": 503 })).await;
    let id = schedule_video(&app, &account, "one chunk refused once", &url).await;
    app.wait_for_status(&id, "published", WAIT).await;

    let posts = posts_with_caption(&app, "one chunk refused once").await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["media"], upload_media(&video));
    assert_eq!(app.sandbox_calls("tiktok.upload").await, 3, "the refused chunk went twice, the other once");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1, "the upload was never initialised again");
    let attempts = app.attempts(&id).await;
    assert_eq!(attempts.len(), 1, "retried within the attempt: {attempts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_upload_leaves_an_upload_that_never_posts_and_the_retry_posts_once() {
    let mut app = upload_only_app(Options::default()).await;
    let account = app.link_account("tiktok", "tt-upload-kill").await;
    let (url, video) = store_video(&app, "interrupted.mp4", 25 * MB).await;
    // The first chunk hangs: the worker is killed while it waits.
    app.sandbox_fault(json!({ "endpoint": "tiktok.upload", "times": 1, "status": 503, "delay_ms": 30000 })).await;
    let id = schedule_video(&app, &account, "upload interrupted", &url).await;
    app.wait_for_calls("tiktok.upload", 1).await;
    app.kill_worker().await;
    app.start_worker();
    app.wait_for_status(&id, "published", WAIT).await;

    let posts = posts_with_caption(&app, "upload interrupted").await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["media"], upload_media(&video));
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 2, "the abandoned upload was replaced by a new one");
    assert_eq!(app.sandbox_calls("tiktok.upload").await, 3, "the hung chunk, then the new upload's two");
    let abandoned = app.worker_events("an earlier attempt's TikTok upload was abandoned: it can never post");
    assert_eq!(abandoned.len(), 1, "{}", app.worker_log());
    // The abandoned publish is still waiting for its chunks: it never posts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(posts_with_caption(&app, "upload interrupted").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_while_it_fetches_the_video_leaves_nothing_unresolved() {
    let mut app = upload_only_app(Options::default()).await;
    let account = app.link_account("tiktok", "tt-upload-fetch").await;
    let (url, video) = store_video(&app, "slow-host.mp4", 25 * MB).await;
    // Preflight's check of the media answers at once; the worker's download hangs.
    app.sandbox_fault(json!({ "endpoint": "media", "times": 1, "delay_ms": 1 })).await;
    app.sandbox_fault(json!({ "endpoint": "media", "times": 1, "delay_ms": 30000 })).await;
    let id = schedule_video(&app, &account, "host was slow", &url).await;
    app.wait_for_calls("media", 2).await;
    app.kill_worker().await;
    app.start_worker();
    // Nothing had reached TikTok: the retry uploads, with no "outcome unknown" to resolve.
    app.wait_for_status(&id, "published", WAIT).await;
    let posts = posts_with_caption(&app, "host was slow").await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["media"], upload_media(&video));
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_frozen_mid_upload_does_not_finish_its_upload_once_another_took_over() {
    let mut app = upload_only_app(Options::default()).await;
    let account = app.link_account("tiktok", "tt-upload-freeze").await;
    let (url, _) = store_video(&app, "frozen.mp4", 25 * MB).await;
    // The first chunk's answer comes late, and is a failure the frozen worker would retry.
    app.sandbox_fault(json!({ "endpoint": "tiktok.upload", "times": 1, "status": 503, "delay_ms": 2000 })).await;
    let id = schedule_video(&app, &account, "upload frozen", &url).await;
    app.wait_for_calls("tiktok.upload", 1).await;
    let frozen = app.worker_pid();
    kill(frozen, Signal::SIGSTOP).unwrap();
    let _second = app.spawn_worker_process();
    app.wait_for_status(&id, "published", WAIT).await;
    kill(frozen, Signal::SIGCONT).unwrap();
    // Time for the woken worker to read its chunk's answer and try to go on.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(posts_with_caption(&app, "upload frozen").await.len(), 1, "the woken worker did not finish its upload");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 2);
    app.kill_worker().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_longer_than_the_creator_may_post_needs_attention_before_any_upload() {
    let app = upload_only_app(Options::default()).await;
    let token = "tt-upload-long";
    let account = app.link_account("tiktok", token).await;
    let creator = json!({ "open_id": platform_user_id("tiktok", token), "privacy_level_options": ["PUBLIC_TO_EVERYONE"],
                          "max_video_post_duration_sec": 2 });
    let response = app.http.post(format!("{}/_sandbox/tiktok/creators", app.sandbox)).json(&creator).send().await.unwrap();
    assert!(response.status().is_success());
    // The 3 s sample, under 5 MB: uploaded whole.
    let id = schedule_video(&app, &account, "three seconds is too long", &app.media_url("sample.mp4")).await;
    // Preflight reads the length from the file's own MP4 header: no init, no upload.
    let job = app.wait_for_status(&id, "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], "preflight.video_too_long", "{job}");
    assert!(job["last_error"]["message"].as_str().unwrap().contains("up to 2 s"), "{job}");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 0);
    assert_eq!(app.sandbox_calls("tiktok.upload").await, 0);
    assert!(posts_with_caption(&app, "three seconds is too long").await.is_empty());
}
