//! The floor: what this machine can do at best. One warm process (this one) makes the N
//! publishing calls straight at the sandbox at the instant, through the same platform clients
//! the worker uses, with no engine and no database. Everything it can do early (Instagram's
//! containers, TikTok's creator info, one open connection per call) is done before the instant.

use std::time::Duration;

use anyhow::Context;
use autopost_activities::platforms::{
    instagram::{ContainerRequest, InstagramClient},
    tiktok::TiktokClient,
};
use autopost_workflows::{InstagramPostType, MediaItem, MediaKind, TiktokOptions};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::{
    progress,
    report::{FloorReport, Percentiles},
    system::{Account, System, sleep_until},
};

/// The caption prefix of the floor's posts.
pub(crate) const FLOOR_CAPTION: &str = "bench floor";

/// Calls prepared before the instant run this many at a time (the burst's arming is spread too).
const PREPARE_CONCURRENCY: usize = 64;

enum Call<'a> {
    InstagramPublish { account: &'a Account, container: String },
    TiktokInit { account: &'a Account, caption: String },
}

pub(crate) async fn run(system: &System, accounts: &[Account], n: usize, instant: DateTime<Utc>) -> anyhow::Result<FloorReport> {
    progress(format!("floor: {n} publishing calls straight at the sandbox at {instant}"));
    // As many idle connections as calls at the instant, kept past the wait.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_idle_timeout(Duration::from_secs(600)).build()?;
    let platforms = &system.config().platforms;
    let instagram = InstagramClient::new(http.clone(), &platforms.instagram_api_base);
    let tiktok = TiktokClient::new(http, &platforms.tiktok_api_base);

    let calls: Vec<Call> = futures::stream::iter(0..n)
        .map(|i| {
            let account = &accounts[i % accounts.len()];
            let caption = format!("{FLOOR_CAPTION} {i}");
            let (instagram, tiktok) = (&instagram, &tiktok);
            async move {
                match account.channel {
                    "instagram" => {
                        let media = MediaItem { url: account.media_url().to_owned(), kind: MediaKind::Image };
                        let options = autopost_workflows::InstagramOptions::default();
                        let request = ContainerRequest::Single {
                            post_type: InstagramPostType::Feed,
                            caption: &caption,
                            media: &media,
                            options: &options,
                        };
                        let container = instagram.create_container(&account.platform_user_id, &account.token, &request).await?.value;
                        instagram.container_status(&account.token, &container).await?;
                        anyhow::Ok(Call::InstagramPublish { account, container })
                    }
                    _ => {
                        tiktok.creator_info(&account.token).await?;
                        Ok(Call::TiktokInit { account, caption })
                    }
                }
            }
        })
        .buffer_unordered(PREPARE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("preparing the floor's calls")?;

    // What the engine sends for the bench's jobs (bench/src/system.rs).
    let options: TiktokOptions = serde_json::from_value(serde_json::json!({ "privacy_level": "PUBLIC_TO_EVERYONE" }))?;
    sleep_until(instant).await;
    let results = futures::future::join_all(calls.iter().map(|call| async {
        match call {
            Call::InstagramPublish { account, container } => {
                instagram.publish_container(&account.platform_user_id, &account.token, container).await.map(drop)
            }
            Call::TiktokInit { account, caption } => {
                tiktok.init_video(&account.token, caption, &options, account.media_url()).await.map(drop)
            }
        }
    }))
    .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    anyhow::ensure!(failed == 0, "{failed} of the floor's {n} calls failed");
    let lags = system.received_lags(instant, FLOOR_CAPTION).await?;
    anyhow::ensure!(lags.len() == n, "the floor made {n} calls but the sandbox received {} posts", lags.len());
    Ok(FloorReport { count: n, instant, lag_ms: Percentiles::of(lags) })
}
