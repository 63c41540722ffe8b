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
//! # Identities and tokens
//!
//! The sandbox has no user directory. Two kinds of tokens are accepted:
//!
//! - **Issued** tokens, from `POST /_sandbox/accounts` or a refresh endpoint,
//!   belong to a platform user and expire. `POST /_sandbox/accounts
//!   {"channel": "instagram"|"tiktok", "platform_user_id": "...", "expires_in": seconds}`
//!   (`expires_in` optional, 0 to ten years) answers `{"access_token",
//!   "refresh_token", "expires_in", "token_expires_at" (RFC 3339),
//!   "platform_user_id"}`. The access token lives `expires_in`, by default
//!   the platform's own lifetime (Instagram long-lived tokens 60 days, TikTok
//!   access tokens 24 h). TikTok also gets a refresh token (365 days);
//!   Instagram Login has none (`null`): its access token refreshes itself.
//!   `platform_user_id` must have the platform's shape (Instagram: 1 to 32
//!   digits; TikTok: 1 to 128 of `A-Z a-z 0-9 . _ -`).
//! - **Made-up** tokens: any other non-empty token without whitespace. They
//!   never expire, and stand for the user derived from the token's
//!   *subject*, the part before its first `.` (or the whole token): see
//!   [`instagram_user_id`] and [`tiktok_open_id`], until an identity check
//!   binds them.
//!
//! **Identity checks** bind a made-up token to the first user it is checked
//! against (per platform), so demos with made-up tokens work; afterwards it
//! acts for that user only, like an issued token:
//!
//! - Instagram: reading the user node, `GET /{version}/{ig-user-id}?fields=id,username`,
//!   answers `{"id","username"}` for the token's user; a token bound to
//!   another user gets the Graph API's `100/33` ("Unsupported get request.
//!   Object with ID '...' does not exist, cannot be loaded due to missing
//!   permissions, or does not support this operation", HTTP 400). A bound
//!   token publishing under another `{ig-user-id}` (`/media`,
//!   `/media_publish`, `/content_publishing_limit`) fails the same way; an
//!   unbound made-up token may use any `{ig-user-id}` path. `GET /me` answers
//!   the bound user, else the derived one, and binds nothing. A node is read
//!   as a user unless it is a known container, its id is in the range of
//!   the sandbox's container and media ids (17 digits starting `179`), or
//!   container fields (`status_code`, `status`) are asked for.
//! - TikTok: `GET /v2/user/info/?fields=open_id,union_id,display_name`
//!   answers `{"data":{"user":{...}}}` with the token's bound `open_id`; an
//!   unbound made-up token has no user to be checked against there, so it
//!   answers its derived `open_id` and is bound to it. Publishes, status
//!   reads and `video/list` act for the same `open_id` (the
//!   `platform_user_id` of TikTok posts in `GET /_sandbox/posts`). Instagram
//!   posts are listed under the `{ig-user-id}` of the publishing path.
//!
//! **Refresh**: Instagram's `GET /refresh_access_token?grant_type=ig_refresh_token`
//! (unversioned, as on graph.instagram.com; a versioned path works too)
//! issues a new 60-day token for the same user (bound or not); the old one
//! stays valid until it expires. The real rule that a token must be 24 h old
//! to be refreshed is not emulated. TikTok's `POST /v2/oauth/token/`
//! (`grant_type=refresh_token`) issues a 24 h access token and a rotated
//! 365-day refresh token, both bound to the refresh token's user, and
//! answers its `open_id`; older refresh tokens stay valid until they expire
//! or are revoked. Refreshed tokens keep the subject of the token they came
//! from, so derived ids survive refreshes.
//!
//! **Refusals**, with each platform's real error: a revoked token
//! (`POST /_sandbox/tokens/revoke`) or an expired issued one
//! (`POST /_sandbox/tokens/expire {"token"}` expires one now; 404 for a
//! made-up token) is refused on every platform path: Instagram
//! `OAuthException` `190` (subcode `460` revoked, `463` "Error validating
//! access token: Session has expired on ..."), TikTok `access_token_invalid`
//! (HTTP 401). So an expired Instagram token cannot be refreshed, as on the
//! real platform; an expired, revoked or issued *access* token given to
//! TikTok's refresh endpoint gets `invalid_grant`, and an issued refresh
//! token used as a bearer token gets `access_token_invalid`.
//!
//! # Instagram content publishing
//!
//! `POST /{ig-user-id}/media` (form or JSON body) takes, by kind of container:
//!
//! | kind | parameters | also takes |
//! |------|------------|------------|
//! | feed image | `image_url` (`media_type` absent or `IMAGE`) | `caption`, `alt_text`, `user_tags` (x/y required), `collaborators`, `location_id` |
//! | reel | `media_type=REELS`, `video_url` | `caption`, `share_to_feed`, `cover_url`, `thumb_offset`, `audio_name`, `user_tags` (username only), `collaborators`, `location_id` |
//! | story | `media_type=STORIES`, `image_url` or `video_url` | `user_tags` (x/y optional, as since July 2025) |
//! | carousel item | `is_carousel_item=true`, `image_url`, or `media_type=VIDEO` + `video_url` | images: `alt_text`, `user_tags` (x/y); videos: `user_tags` (username only) |
//! | carousel | `media_type=CAROUSEL`, `children` | `caption`, `collaborators`, `location_id` |
//!
//! A parameter a kind does not take is refused (`100`, "Param X is not supported for
//! STORIES" and the like); a `caption` on a story or a carousel item is ignored, as the
//! platform does. Values: `alt_text` at most 1000 characters; `user_tags` a JSON array of
//! `{"username", "x", "y"}` with x and y numbers from 0 to 1, at most 20 (more:
//! `100/2207040`); `collaborators` a JSON array or a comma-separated list of at most 3
//! usernames; `location_id` digits (a Facebook Page id); `share_to_feed` `true`/`false`;
//! `thumb_offset` whole milliseconds, 0 or more; `cover_url` is checked like an `image_url`
//! when the sandbox hosts it; `children` 2 to 10 container ids, comma-separated or (JSON
//! bodies) an array (else `100/2207028`). Other `media_type`s, and `VIDEO` outside a
//! carousel, are `100/2207023`. Each refusal is `100` without subcode unless said otherwise.
//!
//! **Usernames** in `user_tags` and `collaborators` must exist: 1 to 30 letters, digits, `.`
//! or `_` (compared case-insensitively, no `@`), and either added with `POST
//! /_sandbox/instagram/users {"usernames": ["alice", ...]}` or the username of a user the
//! sandbox knows (`sandbox_user_` and the last six digits of the id, as the user node reports
//! it: the caller, a user with an issued or bound token, a container's owner). The real
//! error is undocumented: `100`, "The user @name cannot be tagged (user_tags): ..." or
//! "... cannot be invited as a collaborator (collaborators): ...".
//!
//! **Carousels**: every child must be a carousel item of the same user, not yet given to
//! another carousel, and `FINISHED`. A child still `IN_PROGRESS` refuses the parent with the
//! not-ready error `9007/2207027` (poll the children, then create the parent again); an
//! unknown, foreign, non-item, reused, expired or `ERROR` child refuses it with `100`
//! ("Invalid children: ..."). A refused parent reserves nothing. The parent then processes
//! like any container. Publishing a child is refused (`100`); publishing the parent makes one
//! post of the children's media in order, counted once in the quota; the children stay
//! `FINISHED` and can serve no other carousel.
//!
//! **Processing errors**: `POST /_sandbox/instagram/processing-errors {"media_url_contains":
//! "..."}` makes every container created afterwards whose media URL (a carousel parent: one
//! of its children's) contains the string end its processing in `status_code` `ERROR`, with
//! `status` "Error: Media upload has failed with error code 2207026" (videos) or `2207052`
//! (images). Such a container cannot be published (`100`). Reset clears these and the added
//! usernames.
//!
//! **Quota**: `POST /_sandbox/instagram/quota {"ig_user_id": "...", "quota_total": n}` sets one
//! account's publishing limit (posts per 24 h; `SandboxOptions::instagram_quota_total` for the
//! others): `content_publishing_limit` reports it, and `media_publish` past it answers `9/2207042`.
//!
//! **`GET /_sandbox/posts`** shows each Instagram post's `options`: its `media_type`
//! (`IMAGE`, `REELS`, `STORIES` or `CAROUSEL`) and, exactly as sent, whichever of
//! `alt_text`, `user_tags` (parsed), `collaborators` (an array), `location_id` (a string),
//! `share_to_feed` (a boolean), `cover_url`, `thumb_offset` (a number) and `audio_name` were
//! given; a carousel's also has `children`, one `{"media_type": "IMAGE"|"VIDEO", "media_url",
//! "alt_text"?, "user_tags"?}` per child in order. Each Instagram post also lists its
//! `comments`, `[{"id", "text"}]`, oldest first.
//!
//! **Comments**: `POST /{ig-media-id}/comments` with `message` (1 to 2200 characters)
//! answers `{"id"}`; `GET /{ig-media-id}/comments?fields=id,text` answers `{"data": [...]}`,
//! newest first (`id` always; without `fields`, `text` and `timestamp`). The media id is the
//! one `media_publish` answered; a token bound to another user, or an unknown id, gets
//! `100/33`. Fault endpoints: `instagram.comment_create`, `instagram.comment_list`.
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
mod redirect;
mod state;
mod tiktok;
mod tokens;

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
            .nest("/_sandbox", control::router().layer(control::cors()))
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
