//! The sandbox's in-memory world: containers, publishes, recorded posts,
//! uploaded media, tokens (issued, bound and revoked), pending faults and call counters.
//!
//! Everything that changes with time (container readiness, TikTok publish
//! progress) is computed lazily from timestamps when read, so the sandbox
//! needs no background tasks and behaves the same under any scheduling.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::SandboxOptions;
use crate::faults::{Endpoint, Fault};
use crate::tokens::Tokens;

/// Shared by every request handler (behind an `Arc`).
pub(crate) struct Shared {
    pub options: SandboxOptions,
    state: Mutex<State>,
    /// Ids are never reused, not even across `/_sandbox/reset`, so a stale id
    /// held by a client can never name a new object.
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(options: SandboxOptions) -> Self {
        Self { options, state: Mutex::new(State::default()), next_id: AtomicU64::new(1) }
    }

    /// Locks the state. A panic while the lock was held cannot leave the
    /// state half-updated in a way that matters for an emulator, so a
    /// poisoned lock is simply taken over. Never hold the guard across `.await`.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct State {
    /// Instagram posts are pushed here when published; TikTok posts when
    /// [`State::settle_tiktok`] sees their publish complete.
    pub posts: Vec<PostRecord>,
    pub faults: HashMap<Endpoint, VecDeque<Fault>>,
    pub calls: BTreeMap<&'static str, u64>,
    /// Revoked access and refresh tokens (both platforms share one set).
    pub revoked: HashSet<String>,
    /// Issued tokens, and made-up ones once bound (see [`crate::tokens`]).
    pub tokens: Tokens,
    pub containers: HashMap<String, Container>,
    pub publishes: HashMap<String, Publish>,
    /// Media stored with `PUT /media/{name}`; shadows built-ins of the same name.
    pub uploaded_media: HashMap<String, MediaObject>,
    /// How long a published Instagram container still reads `FINISHED` (`POST
    /// /_sandbox/consistency`): the Graph API's reads are eventually consistent, and a client
    /// must not take a lagging status for "not published".
    pub instagram_status_lag: Duration,
    /// TikTok creators' settings as `creator_info` reports them, by `open_id` (`POST
    /// /_sandbox/tiktok/creators`); a creator not here has the defaults.
    pub tiktok_creators: HashMap<String, CreatorSettings>,
    /// The domains TikTok pulls media from (`POST /_sandbox/tiktok/verified-domains`), each
    /// also covering its subdomains. `None`, the default: every domain counts as verified.
    pub tiktok_verified_domains: Option<Vec<String>>,
    /// Instagram usernames that exist besides the sandbox's own users' (`POST
    /// /_sandbox/instagram/users`), lower-cased: tags and collaborators must name one.
    pub instagram_usernames: HashSet<String>,
    /// Containers created while one of these is part of their media URL end in `ERROR`
    /// (`POST /_sandbox/instagram/processing-errors`).
    pub instagram_processing_errors: Vec<String>,
    /// Publishing quotas of single accounts (`POST /_sandbox/instagram/quota`), instead of
    /// [`crate::SandboxOptions::instagram_quota_total`].
    pub instagram_quota_totals: HashMap<String, u32>,
}

impl State {
    /// The posts `ig_user_id` may publish per 24 h.
    pub fn instagram_quota_total(&self, ig_user_id: &str, default: u32) -> u32 {
        self.instagram_quota_totals.get(ig_user_id).copied().unwrap_or(default)
    }
}

/// What a TikTok creator offers and allows: every privacy level and every interaction unless
/// a test says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CreatorSettings {
    pub privacy_level_options: Vec<String>,
    pub comment_disabled: bool,
    pub duet_disabled: bool,
    pub stitch_disabled: bool,
    /// The longest video the creator may post, in seconds (TikTok's API allows 10 minutes).
    pub max_video_post_duration_sec: u64,
}

impl Default for CreatorSettings {
    fn default() -> Self {
        CreatorSettings {
            privacy_level_options: crate::tiktok::PRIVACY_LEVELS.map(String::from).to_vec(),
            comment_disabled: false,
            duet_disabled: false,
            stitch_disabled: false,
            max_video_post_duration_sec: crate::tiktok::MAX_VIDEO_POST_DURATION_SEC,
        }
    }
}

impl State {
    pub fn tiktok_creator(&self, open_id: &str) -> CreatorSettings {
        self.tiktok_creators.get(open_id).cloned().unwrap_or_default()
    }

    pub fn is_revoked(&self, token: &str) -> bool {
        self.revoked.contains(token)
    }

    /// Records every TikTok publish that has completed since the last call.
    /// Called before anything reads publishes or posts.
    pub fn settle_tiktok(&mut self, complete_after: Duration) {
        let now = Instant::now();
        for publish in self.publishes.values_mut() {
            if publish.recorded || publish.status(now, complete_after) != PublishStatus::Complete {
                continue;
            }
            publish.recorded = true;
            self.posts.push(PostRecord {
                channel: "tiktok",
                platform_user_id: publish.open_id.clone(),
                caption: publish.caption.clone(),
                media: publish.media.clone(),
                platform_post_id: publish.post_id.to_string(),
                received_at: publish.accepted_at,
                options: Some(publish.options.clone()),
                comments: None,
            });
        }
    }

    /// Instagram posts published for `ig_user_id` within the last 24 hours.
    pub fn instagram_quota_usage(&self, ig_user_id: &str) -> usize {
        let since = Utc::now() - chrono::Duration::hours(24);
        self.posts.iter().filter(|p| p.channel == "instagram" && p.platform_user_id == ig_user_id).filter(|p| p.received_at > since).count()
    }

    /// Forgets everything a test or demo did; built-in media stay.
    pub fn reset(&mut self) {
        *self = State::default();
    }
}

/// One post the sandbox published, as listed by `GET /_sandbox/posts`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PostRecord {
    pub channel: &'static str,
    pub platform_user_id: String,
    pub caption: String,
    pub media: Vec<String>,
    pub platform_post_id: String,
    #[serde(serialize_with = "rfc3339_millis")]
    pub received_at: DateTime<Utc>,
    /// What the post was published with beyond caption and media (TikTok: `privacy_level`,
    /// the interaction and disclosure settings, a photo post's `title` and
    /// `photo_cover_index`), exactly as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
    /// Instagram: the comments made on the post through the API, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comments: Option<Vec<CommentRecord>>,
}

/// A comment on an Instagram post.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CommentRecord {
    pub id: String,
    pub text: String,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
}

fn rfc3339_millis<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// What an Instagram container publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContainerKind {
    /// A feed image (no `media_type`, or `IMAGE`).
    Image,
    Reel,
    Story,
    /// A carousel parent (`CAROUSEL`); its media are its children's.
    Carousel,
    /// A carousel child (`is_carousel_item=true`) image.
    CarouselImage,
    /// A carousel child video (`media_type=VIDEO`).
    CarouselVideo,
}

impl ContainerKind {
    pub fn is_carousel_item(self) -> bool {
        matches!(self, Self::CarouselImage | Self::CarouselVideo)
    }
}

/// An Instagram media container.
#[derive(Clone)]
pub(crate) struct Container {
    pub ig_user_id: String,
    pub kind: ContainerKind,
    /// Empty for stories and carousel children, which have none.
    pub caption: String,
    /// Empty for a carousel parent.
    pub media_url: String,
    /// What the post (or, for a child, its entry in the parent's `children`) is published with:
    /// `media_type` and the options sent, as `GET /_sandbox/posts` shows them.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// A carousel parent's child container ids, in order.
    pub children: Vec<String>,
    /// A child: the carousel parent it was given to (a child serves one carousel only).
    pub carousel_parent: Option<String>,
    /// Processing ends in `ERROR` with this error code (a processing-error fault matched).
    pub processing_error: Option<u32>,
    pub created: Instant,
    /// How long processing takes (image and video containers differ).
    pub ready_after: Duration,
    pub published_media_id: Option<String>,
    pub published_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContainerStatus {
    InProgress,
    Finished,
    /// Processing failed, with the error code the `status` text names.
    Error(u32),
    Published,
    Expired,
}

/// Containers not published within 24 hours expire (platforms.md).
const CONTAINER_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

impl Container {
    /// The status as a status read reports it: a publication becomes visible `lag` after it
    /// happened.
    pub fn visible_status(&self, now: Instant, lag: Duration) -> ContainerStatus {
        match self.published_at {
            Some(at) if now.saturating_duration_since(at) < lag => {
                Container { published_media_id: None, published_at: None, ..self.clone() }.status(now)
            }
            _ => self.status(now),
        }
    }

    /// The true status, as the platform itself acts on it.
    pub fn status(&self, now: Instant) -> ContainerStatus {
        let age = now.saturating_duration_since(self.created);
        if self.published_media_id.is_some() {
            ContainerStatus::Published
        } else if let (Some(code), true) = (self.processing_error, age >= self.ready_after) {
            ContainerStatus::Error(code)
        } else if age >= CONTAINER_LIFETIME {
            ContainerStatus::Expired
        } else if age >= self.ready_after {
            ContainerStatus::Finished
        } else {
            ContainerStatus::InProgress
        }
    }
}

impl ContainerStatus {
    pub fn code(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Finished => "FINISHED",
            Self::Error(_) => "ERROR",
            Self::Published => "PUBLISHED",
            Self::Expired => "EXPIRED",
        }
    }

    /// The human-readable `status` field, worded like the Graph API's.
    pub fn description(self) -> String {
        match self {
            Self::InProgress => "In Progress: Media is still being processed.".into(),
            Self::Finished => "Finished: Media has been uploaded and it is complete.".into(),
            Self::Error(code) => format!("Error: Media upload has failed with error code {code}"),
            Self::Published => "Published: Media has been published.".into(),
            Self::Expired => "Expired: Media was not published within 24 hours.".into(),
        }
    }
}

/// What a TikTok publish posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishKind {
    /// From `video/init`.
    Video,
    /// From `content/init` with `media_type` `PHOTO`.
    Photo,
}

/// A TikTok publish (video or photo post).
pub(crate) struct Publish {
    pub open_id: String,
    pub kind: PublishKind,
    /// The `post_info.privacy_level` it was posted with (`PUBLIC_TO_EVERYONE`, `SELF_ONLY`, ...).
    pub privacy_level: &'static str,
    /// `post_info`'s settings (and `photo_cover_index`) as the init sent them.
    pub options: serde_json::Value,
    pub caption: String,
    pub media: Vec<String>,
    pub accepted_at: DateTime<Utc>,
    pub accepted: Instant,
    /// Decided at init (the sandbox "downloads" own-hosted media right away),
    /// but only reported once processing is over, as TikTok does.
    pub failure: Option<&'static str>,
    /// Bytes of own-hosted media, reported as `downloaded_bytes`.
    pub media_bytes: u64,
    pub post_id: u64,
    /// Whether it has been copied into [`State::posts`].
    pub recorded: bool,
    /// A `FILE_UPLOAD` video's transfer; `None` for media TikTok pulls.
    pub upload: Option<Upload>,
}

/// The chunks of a `FILE_UPLOAD` video, as `video/init` announced them and `PUT upload_url`
/// delivers them.
pub(crate) struct Upload {
    pub upload_id: String,
    /// The `upload_token` of the upload URL: the URL is the only credential a chunk carries.
    pub upload_token: String,
    pub video_size: u64,
    pub chunk_size: u64,
    pub total_chunk_count: u64,
    /// The chunks received, in order, concatenated.
    pub bytes: Vec<u8>,
    pub chunks_received: u64,
    /// When the final chunk arrived: processing starts then.
    pub completed: Option<Instant>,
}

impl Upload {
    /// The byte range (inclusive) of chunk `index`: every chunk is `chunk_size` bytes but the
    /// last, which carries the remainder.
    pub fn chunk_range(&self, index: u64) -> (u64, u64) {
        let first = index * self.chunk_size;
        let last = if index + 1 == self.total_chunk_count { self.video_size - 1 } else { first + self.chunk_size - 1 };
        (first, last)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishStatus {
    /// A `FILE_UPLOAD` video: chunks are missing, or the upload is being processed.
    ProcessingUpload,
    ProcessingDownload,
    Complete,
    Failed(&'static str),
}

impl Publish {
    pub fn status(&self, now: Instant, complete_after: Duration) -> PublishStatus {
        // An upload is processed from its final chunk on, in PROCESSING_UPLOAD all along.
        let (processing_since, processing) = match &self.upload {
            None => (self.accepted, PublishStatus::ProcessingDownload),
            Some(Upload { completed: Some(at), .. }) => (*at, PublishStatus::ProcessingUpload),
            Some(Upload { completed: None, .. }) => return PublishStatus::ProcessingUpload,
        };
        if now.saturating_duration_since(processing_since) < complete_after {
            processing
        } else if let Some(reason) = self.failure {
            PublishStatus::Failed(reason)
        } else {
            PublishStatus::Complete
        }
    }
}

/// A servable media object.
#[derive(Clone, Debug)]
pub(crate) struct MediaObject {
    pub content_type: String,
    pub bytes: Bytes,
}

impl MediaObject {
    /// The MIME type without parameters, lower-cased (`image/jpeg`).
    pub fn mime(&self) -> String {
        let essence = self.content_type.split(';').next().unwrap_or_default();
        essence.trim().to_ascii_lowercase()
    }

    pub fn is_video(&self) -> bool {
        self.mime().starts_with("video/")
    }

    pub fn len(&self) -> u64 {
        u64::try_from(self.bytes.len()).unwrap_or(u64::MAX)
    }
}
