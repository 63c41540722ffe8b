//! An HTTP emulator of the Instagram Graph API (content publishing) and the
//! TikTok Content Posting API, on their real paths, payloads and error
//! envelopes, so that an adapter pointed at it talks to it exactly as it would
//! talk to the real hosts: only the base URL differs.
//!
//! # Base URLs
//!
//! | client              | base URL                                  | real host                      |
//! |---------------------|-------------------------------------------|--------------------------------|
//! | Instagram Graph API | `http://HOST:PORT/instagram/v25.0`        | `https://graph.facebook.com/v25.0` |
//! | TikTok              | `http://HOST:PORT/tiktok`                 | `https://open.tiktokapis.com`  |
//! | media host          | `http://HOST:PORT/media/{name}`           | any public media URL           |
//! | control API         | `http://HOST:PORT/_sandbox/...`           | (sandbox only)                 |
//!
//! Any `vNN.N` version segment is accepted for Instagram.
//!
//! # Identities
//!
//! The sandbox has no user directory. Every non-empty token is valid until
//! revoked through `POST /_sandbox/tokens/revoke`, and identities are derived
//! from the token's *subject*, the part before its first `.` (or the whole
//! token): see [`instagram_user_id`] (what `GET /me` answers) and
//! [`tiktok_open_id`] (the `platform_user_id` of TikTok posts in
//! `GET /_sandbox/posts`, and the `open_id` of `/v2/oauth/token/`). Refreshed
//! tokens keep their subject, so identities survive refreshes. Instagram posts
//! are listed under the `{ig-user-id}` of the publishing path instead.
//!
//! # Media
//!
//! The sandbox never fetches over the network. Media URLs that point at its
//! own `/media/{name}` (same host and port as the API call; any loopback name
//! counts as the same host) are checked: they must exist and have a suitable
//! type. Other URLs are accepted unchecked.

mod control;
mod faults;
mod ids;
mod instagram;
mod media;
mod state;
mod tiktok;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use ids::{instagram_user_id, tiktok_open_id, token_subject};

/// How the emulated platforms behave in time and quota.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// How long an Instagram image container stays `IN_PROGRESS`.
    pub container_ready_after: Duration,
    /// How long an Instagram REELS container stays `IN_PROGRESS`.
    pub video_ready_after: Duration,
    /// How long a TikTok publish stays `PROCESSING_DOWNLOAD`.
    pub tiktok_complete_after: Duration,
    /// Instagram's `quota_total`: posts per user per 24 h. Publishing beyond
    /// it fails with `9/2207042`, as on the real platform.
    pub instagram_quota_total: u32,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            container_ready_after: Duration::from_millis(300),
            video_ready_after: Duration::from_secs(1),
            tiktok_complete_after: Duration::from_secs(1),
            instagram_quota_total: 50,
        }
    }
}

impl SandboxOptions {
    /// No processing delays anywhere (for benchmarks); the quota is unchanged.
    pub fn instant() -> Self {
        Self {
            container_ready_after: Duration::ZERO,
            video_ready_after: Duration::ZERO,
            tiktok_complete_after: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// One emulator instance: both platforms, the media host and the control
/// API share its state. Cloning shares the same state.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<state::Shared>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self::with_options(SandboxOptions::default())
    }

    pub fn with_options(options: SandboxOptions) -> Self {
        Self { shared: Arc::new(state::Shared::new(options)) }
    }

    /// All routes: `/instagram/{version}/...`, `/tiktok/v2/...`,
    /// `/media/{name}` and `/_sandbox/...`.
    pub fn router(&self) -> Router {
        Router::new()
            .nest("/instagram", instagram::router())
            .nest("/tiktok", tiktok::router())
            .nest("/media", media::router())
            .nest("/_sandbox", control::router())
            .with_state(Arc::clone(&self.shared))
    }

    /// Serves this sandbox on `listener` until the future is dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "sandbox listening");
        }
        axum::serve(listener, self.router()).await?;
        Ok(())
    }
}

/// Serves a new default [`Sandbox`] on `listener` (binds nothing itself)
/// until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    Sandbox::new().serve(listener).await
}
