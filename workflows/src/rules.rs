//! What each platform accepts in a post: caption limits, media counts and kinds, file types and
//! sizes, as the platforms' publishing documentation states them. One source for the API, which refuses a post that breaks them
//! before anything is written, and for preflight, which checks the media files themselves. The
//! sandbox keeps its own copy on purpose: it checks us independently.

use crate::types::{Channel, MediaItem, MediaKind};

/// Instagram: 2,200 characters, 30 hashtags and 20 @-mentions per caption.
pub const INSTAGRAM_CAPTION_CHARS: usize = 2200;
pub const INSTAGRAM_HASHTAGS: usize = 30;
pub const INSTAGRAM_MENTIONS: usize = 20;
/// TikTok: 2,200 characters for a video's title, 4,000 for a photo post's description.
pub const TIKTOK_VIDEO_CAPTION_CHARS: usize = 2200;
pub const TIKTOK_PHOTO_CAPTION_CHARS: usize = 4000;
/// TikTok: a photo post's title (`post_info.title`), 90 characters.
pub const TIKTOK_PHOTO_TITLE_CHARS: usize = 90;
pub const TIKTOK_MAX_PHOTOS: usize = 35;
/// Instagram carousels: 2 to 10 images and videos.
pub const INSTAGRAM_CAROUSEL_MIN: usize = 2;
pub const INSTAGRAM_CAROUSEL_MAX: usize = 10;
pub const INSTAGRAM_COLLABORATORS: usize = 3;
pub const INSTAGRAM_TAGS_PER_ITEM: usize = 20;
/// Instagram does not document these two; we keep them short enough for any UI.
pub const INSTAGRAM_ALT_TEXT_CHARS: usize = 1000;
pub const INSTAGRAM_AUDIO_NAME_CHARS: usize = 100;

const MB: u64 = 1024 * 1024;
const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "gif", "heic", "bmp"];
const VIDEO_EXTENSIONS: [&str; 5] = ["mp4", "mov", "webm", "m4v", "avi"];

/// A rule a post breaks: a stable `code`, the offending input as a body path, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl Violation {
    pub(crate) fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Violation { code, field: field.into(), message: message.into() }
    }
}

/// The files a platform takes for one kind of media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptedFiles {
    /// `Content-Type`s, lower case, without parameters.
    pub content_types: &'static [&'static str],
    /// File name extensions a URL may name.
    pub extensions: &'static [&'static str],
    pub max_bytes: u64,
}

pub fn accepted_files(channel: Channel, kind: MediaKind) -> AcceptedFiles {
    let (content_types, extensions, max_bytes): (&'static [&'static str], &'static [&'static str], u64) = match (channel, kind) {
        (Channel::Instagram, MediaKind::Image) => (&["image/jpeg"], &["jpg", "jpeg"], 8 * MB),
        (Channel::Instagram, MediaKind::Video) => (&["video/mp4", "video/quicktime"], &["mp4", "mov"], 1024 * MB),
        (Channel::Tiktok, MediaKind::Image) => (&["image/jpeg", "image/webp"], &["jpg", "jpeg", "webp"], 20 * MB),
        (Channel::Tiktok, MediaKind::Video) => (&["video/mp4", "video/webm", "video/quicktime"], &["mp4", "webm", "mov"], 4096 * MB),
    };
    AcceptedFiles { content_types, extensions, max_bytes }
}

/// The caption's length, and for Instagram its hashtags and mentions.
pub fn check_caption(channel: Channel, caption: &str, media: &[MediaItem]) -> Result<(), Violation> {
    let chars = caption.chars().count();
    let limit = match channel {
        Channel::Instagram => INSTAGRAM_CAPTION_CHARS,
        Channel::Tiktok if media.iter().all(|m| m.kind == MediaKind::Image) => TIKTOK_PHOTO_CAPTION_CHARS,
        Channel::Tiktok => TIKTOK_VIDEO_CAPTION_CHARS,
    };
    if chars > limit {
        return Err(Violation::new(
            "caption_too_long",
            "caption",
            format!("{channel} allows {limit} characters here; the caption has {chars}"),
        ));
    }
    if channel == Channel::Instagram {
        let words_starting_with = |c: char| caption.split_whitespace().filter(|w| w.starts_with(c) && w.len() > 1).count();
        let hashtags = words_starting_with('#');
        if hashtags > INSTAGRAM_HASHTAGS {
            return Err(Violation::new(
                "too_many_hashtags",
                "caption",
                format!("Instagram allows {INSTAGRAM_HASHTAGS} hashtags; the caption has {hashtags}"),
            ));
        }
        let mentions = words_starting_with('@');
        if mentions > INSTAGRAM_MENTIONS {
            return Err(Violation::new(
                "too_many_mentions",
                "caption",
                format!("Instagram allows {INSTAGRAM_MENTIONS} @-mentions; the caption has {mentions}"),
            ));
        }
    }
    Ok(())
}

/// The media list as a whole: at least one item, no more than the platform takes in one post,
/// and video and images mixed only in an Instagram carousel (the post type decides the rest).
pub fn check_media_count(channel: Channel, media: &[MediaItem]) -> Result<(), Violation> {
    if media.is_empty() {
        return Err(Violation::new("media_missing", "media", "a post needs at least one media item"));
    }
    let videos = media.iter().filter(|m| m.kind == MediaKind::Video).count();
    if channel == Channel::Tiktok && videos > 0 && videos < media.len() {
        return Err(Violation::new("media_mixed", "media", "a TikTok post is either one video or images only, not both"));
    }
    match channel {
        Channel::Instagram if media.len() > INSTAGRAM_CAROUSEL_MAX => Err(Violation::new(
            "too_many_media",
            "media",
            format!("an Instagram carousel has at most {INSTAGRAM_CAROUSEL_MAX} items; this one has {}", media.len()),
        )),
        Channel::Tiktok if videos > 1 => Err(Violation::new("too_many_media", "media", "a TikTok post has one video")),
        Channel::Tiktok if media.len() > TIKTOK_MAX_PHOTOS => Err(Violation::new(
            "too_many_media",
            "media",
            format!("a TikTok photo post has at most {TIKTOK_MAX_PHOTOS} images; this one has {}", media.len()),
        )),
        _ => Ok(()),
    }
}

/// The file a media URL names (its last path segment, when it has an extension) against the
/// item's kind and what the platform takes. `field` is the item's body path (`media[0]`).
pub fn check_media_file_name(channel: Channel, kind: MediaKind, file_name: &str, field: &str) -> Result<(), Violation> {
    let Some((_, extension)) = file_name.rsplit_once('.') else { return Ok(()) };
    let extension = extension.to_ascii_lowercase();
    let extension = extension.as_str();
    match kind {
        MediaKind::Video if IMAGE_EXTENSIONS.contains(&extension) => Err(Violation::new(
            "media_kind_mismatch",
            format!("{field}.kind"),
            format!(
                "the kind is video (a {}) but the URL names an image (.{extension})",
                if channel == Channel::Instagram { "reel" } else { "video post" }
            ),
        )),
        MediaKind::Image if VIDEO_EXTENSIONS.contains(&extension) => Err(Violation::new(
            "media_kind_mismatch",
            format!("{field}.kind"),
            format!("the kind is image but the URL names a video (.{extension})"),
        )),
        // Instagram takes JPEG only, and says so loudest; other platforms' file types are left
        // to preflight, which reads the real content type instead of trusting a name.
        MediaKind::Image
            if channel == Channel::Instagram
                && IMAGE_EXTENSIONS.contains(&extension)
                && !accepted_files(channel, kind).extensions.contains(&extension) =>
        {
            Err(Violation::new("media_unsupported", format!("{field}.url"), format!("Instagram takes JPEG images only, not .{extension}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: MediaKind) -> MediaItem {
        MediaItem { url: "https://x.test/file".into(), kind }
    }

    #[test]
    fn mixing_video_and_images_is_refused() {
        let violation = check_media_count(Channel::Tiktok, &[item(MediaKind::Video), item(MediaKind::Image)]).unwrap_err();
        assert_eq!((violation.code, violation.field.as_str()), ("media_mixed", "media"));
    }

    #[test]
    fn more_media_than_the_platform_allows_is_refused() {
        let photos = vec![item(MediaKind::Image); 36];
        assert_eq!(check_media_count(Channel::Tiktok, &photos).unwrap_err().code, "too_many_media");
        assert!(check_media_count(Channel::Tiktok, &photos[..35]).is_ok());
        assert!(check_media_count(Channel::Instagram, &photos[..10]).is_ok(), "a carousel");
        assert_eq!(check_media_count(Channel::Instagram, &photos[..11]).unwrap_err().code, "too_many_media");
        assert!(check_media_count(Channel::Instagram, &[item(MediaKind::Video), item(MediaKind::Image)]).is_ok(), "a mixed carousel");
        assert_eq!(
            check_media_count(Channel::Tiktok, &[item(MediaKind::Video), item(MediaKind::Video)]).unwrap_err().code,
            "too_many_media"
        );
        assert_eq!(check_media_count(Channel::Instagram, &[]).unwrap_err().code, "media_missing");
    }

    #[test]
    fn captions_over_the_platform_limit_are_refused() {
        let video = [item(MediaKind::Video)];
        let photo = [item(MediaKind::Image)];
        assert_eq!(check_caption(Channel::Instagram, &"a".repeat(2201), &photo).unwrap_err().code, "caption_too_long");
        assert!(check_caption(Channel::Instagram, &"é".repeat(2200), &photo).is_ok(), "characters are counted, not bytes");
        assert!(check_caption(Channel::Tiktok, &"a".repeat(4000), &photo).is_ok());
        assert_eq!(check_caption(Channel::Tiktok, &"a".repeat(2201), &video).unwrap_err().code, "caption_too_long");
        let tags = (0..31).map(|i| format!("#t{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(check_caption(Channel::Instagram, &tags, &photo).unwrap_err().code, "too_many_hashtags");
        let mentions = (0..21).map(|i| format!("@u{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(check_caption(Channel::Instagram, &mentions, &photo).unwrap_err().code, "too_many_mentions");
    }

    #[test]
    fn a_file_name_must_fit_the_kind_and_the_platform() {
        let check = |channel, kind, name| check_media_file_name(channel, kind, name, "media[0]").map_err(|v| (v.code, v.field));
        assert_eq!(check(Channel::Instagram, MediaKind::Video, "a.jpg"), Err(("media_kind_mismatch", "media[0].kind".into())));
        assert_eq!(check(Channel::Tiktok, MediaKind::Image, "a.MP4"), Err(("media_kind_mismatch", "media[0].kind".into())));
        assert_eq!(check(Channel::Instagram, MediaKind::Image, "a.png"), Err(("media_unsupported", "media[0].url".into())));
        assert_eq!(check(Channel::Tiktok, MediaKind::Image, "a.webp"), Ok(()));
        assert_eq!(check(Channel::Tiktok, MediaKind::Image, "a.png"), Ok(()), "left to preflight");
        assert_eq!(check(Channel::Instagram, MediaKind::Image, "a.JPEG"), Ok(()));
        assert_eq!(check(Channel::Instagram, MediaKind::Image, "no-extension"), Ok(()));
    }

    #[test]
    fn accepted_extensions_match_the_accepted_content_types() {
        for channel in Channel::ALL {
            for kind in [MediaKind::Image, MediaKind::Video] {
                let files = accepted_files(channel, kind);
                for extension in files.extensions {
                    let content_type = match *extension {
                        "jpg" | "jpeg" => "image/jpeg",
                        "webp" => "image/webp",
                        "mp4" => "video/mp4",
                        "mov" => "video/quicktime",
                        "webm" => "video/webm",
                        other => panic!("no content type known for .{other}"),
                    };
                    assert!(files.content_types.contains(&content_type), "{channel} {kind:?}: .{extension}");
                }
            }
        }
    }
}
