//! The rules a post must meet for its platform, checked before anything is written, so a job
//! that is accepted can be published.

use autopost_workflows::{Channel, MediaItem, MediaKind};
use url::Url;

use crate::error::ApiError;

/// Caption limits: Instagram 2,200 characters, 30 hashtags, 20 mentions; TikTok 2,200 for a video
/// title and 4,000 for a photo description.
const INSTAGRAM_CAPTION_CHARS: usize = 2200;
const INSTAGRAM_HASHTAGS: usize = 30;
const INSTAGRAM_MENTIONS: usize = 20;
const TIKTOK_VIDEO_CAPTION_CHARS: usize = 2200;
const TIKTOK_PHOTO_CAPTION_CHARS: usize = 4000;
const TIKTOK_MAX_PHOTOS: usize = 35;

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "gif", "heic", "bmp"];
const VIDEO_EXTENSIONS: [&str; 5] = ["mp4", "mov", "webm", "m4v", "avi"];

/// Hosts (`host:port`) where plain `http` media is accepted: the sandbox's own, in development.
#[derive(Clone, Debug, Default)]
pub struct MediaPolicy {
    pub http_allowed_hosts: Vec<String>,
}

pub fn caption(channel: Channel, caption: &str, media: &[MediaItem]) -> Result<(), ApiError> {
    let chars = caption.chars().count();
    let limit = match channel {
        Channel::Instagram => INSTAGRAM_CAPTION_CHARS,
        Channel::Tiktok if media.iter().all(|m| m.kind == MediaKind::Image) => TIKTOK_PHOTO_CAPTION_CHARS,
        Channel::Tiktok => TIKTOK_VIDEO_CAPTION_CHARS,
    };
    if chars > limit {
        return Err(ApiError::unprocessable("caption_too_long", "caption", format!("{channel} allows {limit} characters here; the caption has {chars}")));
    }
    if channel == Channel::Instagram {
        let hashtags = caption.split_whitespace().filter(|w| w.starts_with('#') && w.len() > 1).count();
        if hashtags > INSTAGRAM_HASHTAGS {
            return Err(ApiError::unprocessable("too_many_hashtags", "caption", format!("Instagram allows {INSTAGRAM_HASHTAGS} hashtags; the caption has {hashtags}")));
        }
        let mentions = caption.split_whitespace().filter(|w| w.starts_with('@') && w.len() > 1).count();
        if mentions > INSTAGRAM_MENTIONS {
            return Err(ApiError::unprocessable("too_many_mentions", "caption", format!("Instagram allows {INSTAGRAM_MENTIONS} @-mentions; the caption has {mentions}")));
        }
    }
    Ok(())
}

pub fn media(channel: Channel, media: &[MediaItem], policy: &MediaPolicy) -> Result<(), ApiError> {
    if media.is_empty() {
        return Err(ApiError::unprocessable("media_missing", "media", "a post needs at least one media item"));
    }
    for (i, item) in media.iter().enumerate() {
        media_item(channel, item, &format!("media[{i}]"), policy)?;
    }
    let videos = media.iter().filter(|m| m.kind == MediaKind::Video).count();
    if videos > 0 && videos < media.len() {
        return Err(ApiError::unprocessable("media_mixed", "media", "a post is either one video or images only, not both"));
    }
    match channel {
        Channel::Instagram if media.len() > 1 => Err(ApiError::unprocessable(
            "too_many_media",
            "media",
            "an Instagram post here is one image or one reel (carousels are not supported yet)",
        )),
        Channel::Tiktok if videos > 1 => Err(ApiError::unprocessable("too_many_media", "media", "a TikTok post has one video")),
        Channel::Tiktok if media.len() > TIKTOK_MAX_PHOTOS => Err(ApiError::unprocessable(
            "too_many_media",
            "media",
            format!("a TikTok photo post has at most {TIKTOK_MAX_PHOTOS} images; this one has {}", media.len()),
        )),
        _ => Ok(()),
    }
}

fn media_item(channel: Channel, item: &MediaItem, field: &str, policy: &MediaPolicy) -> Result<(), ApiError> {
    let url_field = format!("{field}.url");
    let url = Url::parse(&item.url).map_err(|e| ApiError::unprocessable("media_url_invalid", &url_field, format!("not a URL: {e}")))?;
    let authority = match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => return Err(ApiError::unprocessable("media_url_invalid", &url_field, "the URL has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if policy.http_allowed_hosts.contains(&authority) => {}
        _ => {
            return Err(ApiError::unprocessable("media_url_not_https", &url_field, "platforms fetch media over https only"));
        }
    }
    let extension = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    let Some(extension) = extension else { return Ok(()) };
    let kind_field = format!("{field}.kind");
    match item.kind {
        MediaKind::Video if IMAGE_EXTENSIONS.contains(&extension.as_str()) => Err(ApiError::unprocessable(
            "media_kind_mismatch",
            kind_field,
            format!("the kind is video (a {}) but the URL names an image (.{extension})", if channel == Channel::Instagram { "reel" } else { "video post" }),
        )),
        MediaKind::Image if VIDEO_EXTENSIONS.contains(&extension.as_str()) => Err(ApiError::unprocessable(
            "media_kind_mismatch",
            kind_field,
            format!("the kind is image but the URL names a video (.{extension})"),
        )),
        MediaKind::Image if channel == Channel::Instagram && !["jpg", "jpeg"].contains(&extension.as_str()) && IMAGE_EXTENSIONS.contains(&extension.as_str()) => {
            Err(ApiError::unprocessable("media_unsupported", url_field, format!("Instagram takes JPEG images only, not .{extension}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(url: &str, kind: MediaKind) -> MediaItem {
        MediaItem { url: url.into(), kind }
    }

    fn field_of(result: Result<(), ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field: Some(field), .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn plain_http_media_is_refused_except_on_allowed_hosts() {
        let policy = MediaPolicy { http_allowed_hosts: vec!["127.0.0.1:8090".into()] };
        let remote = [item("http://cdn.example.com/a.jpg", MediaKind::Image)];
        assert_eq!(field_of(media(Channel::Instagram, &remote, &policy)), "media[0].url");
        let sandbox = [item("http://127.0.0.1:8090/media/a.jpg", MediaKind::Image)];
        assert!(media(Channel::Instagram, &sandbox, &policy).is_ok());
    }

    #[test]
    fn a_reel_whose_media_is_an_image_is_refused() {
        let reel = [item("https://cdn.example.com/a.jpg", MediaKind::Video)];
        assert_eq!(field_of(media(Channel::Instagram, &reel, &MediaPolicy::default())), "media[0].kind");
    }

    #[test]
    fn mixing_video_and_images_is_refused() {
        let mixed = [item("https://x.test/a.mp4", MediaKind::Video), item("https://x.test/b.jpg", MediaKind::Image)];
        assert_eq!(field_of(media(Channel::Tiktok, &mixed, &MediaPolicy::default())), "media");
    }

    #[test]
    fn more_media_than_the_platform_allows_is_refused() {
        let photos: Vec<_> = (0..36).map(|i| item(&format!("https://x.test/{i}.jpg"), MediaKind::Image)).collect();
        assert_eq!(field_of(media(Channel::Tiktok, &photos, &MediaPolicy::default())), "media");
        assert!(media(Channel::Tiktok, &photos[..35], &MediaPolicy::default()).is_ok());
        assert_eq!(field_of(media(Channel::Instagram, &photos[..2], &MediaPolicy::default())), "media");
    }

    #[test]
    fn captions_over_the_platform_limit_are_refused() {
        let video = [item("https://x.test/a.mp4", MediaKind::Video)];
        let photo = [item("https://x.test/a.jpg", MediaKind::Image)];
        assert_eq!(field_of(caption(Channel::Instagram, &"a".repeat(2201), &photo)), "caption");
        assert!(caption(Channel::Instagram, &"é".repeat(2200), &photo).is_ok());
        assert!(caption(Channel::Tiktok, &"a".repeat(4000), &photo).is_ok());
        assert_eq!(field_of(caption(Channel::Tiktok, &"a".repeat(2201), &video)), "caption");
        let tags = (0..31).map(|i| format!("#t{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(field_of(caption(Channel::Instagram, &tags, &photo)), "caption");
    }

    #[test]
    fn instagram_images_must_be_jpeg() {
        let png = [item("https://x.test/a.png", MediaKind::Image)];
        assert_eq!(field_of(media(Channel::Instagram, &png, &MediaPolicy::default())), "media[0].url");
        assert!(media(Channel::Tiktok, &[item("https://x.test/a.webp", MediaKind::Image)], &MediaPolicy::default()).is_ok());
    }
}
