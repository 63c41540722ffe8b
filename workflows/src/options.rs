//! What a creator chooses for a post beyond its caption and media, per channel, as the
//! platforms' publishing APIs take it. Stored on the job; the worker sends it as is.

use serde::{Deserialize, Serialize};

use crate::rules::{self, Violation};
use crate::types::{Channel, MediaItem, MediaKind};

/// A post's options. `channel` names the schema and must be the account's channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum PostOptions {
    Instagram(InstagramOptions),
    Tiktok(TiktokOptions),
}

impl PostOptions {
    pub fn channel(&self) -> Channel {
        match self {
            PostOptions::Instagram(_) => Channel::Instagram,
            PostOptions::Tiktok(_) => Channel::Tiktok,
        }
    }

    pub fn tiktok(&self) -> Option<&TiktokOptions> {
        match self {
            PostOptions::Tiktok(options) => Some(options),
            PostOptions::Instagram(_) => None,
        }
    }

    pub fn instagram(&self) -> Option<&InstagramOptions> {
        match self {
            PostOptions::Instagram(options) => Some(options),
            PostOptions::Tiktok(_) => None,
        }
    }
}

/// What an Instagram post is published as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstagramPostType {
    /// One image in the feed.
    Feed,
    /// One video (`media_type=REELS`).
    Reel,
    /// One image or video for 24 hours (`media_type=STORIES`); no caption.
    Story,
    /// 2 to 10 images and videos (`media_type=CAROUSEL`).
    Carousel,
}

impl InstagramPostType {
    /// The type a post without `post_type` gets from its media, as before options existed: one
    /// image is a feed post, one video a reel, several items a carousel.
    pub fn derived(media: &[MediaItem]) -> InstagramPostType {
        match media {
            [item] if item.kind == MediaKind::Video => InstagramPostType::Reel,
            [_] | [] => InstagramPostType::Feed,
            _ => InstagramPostType::Carousel,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstagramPostType::Feed => "feed",
            InstagramPostType::Reel => "reel",
            InstagramPostType::Story => "story",
            InstagramPostType::Carousel => "carousel",
        }
    }
}

/// A person tagged in an image (at `x`, `y`, fractions of its width and height from the top
/// left) or in a reel (no position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserTag {
    /// An Instagram username, without `@`.
    pub username: String,
    /// Which media item (0-based) the tag is on; default 0.
    #[serde(default)]
    pub media_index: u32,
    /// Images only, required there: 0.0 (left) to 1.0 (right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<f64>,
    /// Images only, required there: 0.0 (top) to 1.0 (bottom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<f64>,
}

/// Instagram content publishing choices. Everything is optional; `post_type` defaults to what the
/// media make (see [`InstagramPostType::derived`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstagramOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_type: Option<InstagramPostType>,
    /// One entry per media item, in order (`null` for videos and images without one): the
    /// image's description for screen readers. Feed and carousel images only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_text: Vec<Option<String>>,
    /// Up to 3 usernames invited as collaborators (not on stories).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collaborators: Vec<String>,
    /// A Facebook Page id of a place (not on stories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<String>,
    /// People tagged (not on stories; on a carousel, in its images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_tags: Vec<UserTag>,
    /// Reels only: also shown in the feed (Instagram's default is yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_to_feed: Option<bool>,
    /// Reels only: a JPEG shown as the cover; or `thumb_offset_ms`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover_url: Option<String>,
    /// Reels only: the frame shown as the cover, in milliseconds from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb_offset_ms: Option<u64>,
    /// Reels only: the name of the reel's original audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_name: Option<String>,
    /// Posted as a comment once the post is live (not on stories). Its failure does not fail the
    /// job: it shows on the job as a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_comment: Option<String>,
}

impl InstagramOptions {
    pub fn post_type(&self, media: &[MediaItem]) -> InstagramPostType {
        self.post_type.unwrap_or_else(|| InstagramPostType::derived(media))
    }

    /// The alt text of media item `index`, if it has one.
    pub fn alt_text_of(&self, index: usize) -> Option<&str> {
        self.alt_text.get(index).and_then(|a| a.as_deref())
    }

    /// The tags on media item `index`.
    pub fn user_tags_of(&self, index: usize) -> impl Iterator<Item = &UserTag> {
        self.user_tags.iter().filter(move |t| t.media_index as usize == index)
    }
}

/// A job's first comment, if it asks for one.
pub fn first_comment(options: Option<&PostOptions>) -> Option<&str> {
    options.and_then(PostOptions::instagram).and_then(|o| o.first_comment.as_deref())
}

/// Who may see a TikTok post. TikTok's guidelines leave the choice to the creator, among the
/// levels `creator_info` offers for the account at the time: there is no default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TiktokPrivacyLevel {
    PublicToEveryone,
    MutualFollowFriends,
    FollowerOfCreator,
    SelfOnly,
}

impl TiktokPrivacyLevel {
    pub const ALL: [TiktokPrivacyLevel; 4] = [Self::PublicToEveryone, Self::MutualFollowFriends, Self::FollowerOfCreator, Self::SelfOnly];

    /// TikTok's spelling (`post_info.privacy_level`, `privacy_level_options`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublicToEveryone => "PUBLIC_TO_EVERYONE",
            Self::MutualFollowFriends => "MUTUAL_FOLLOW_FRIENDS",
            Self::FollowerOfCreator => "FOLLOWER_OF_CREATOR",
            Self::SelfOnly => "SELF_ONLY",
        }
    }
}

/// TikTok Direct Post's `post_info` choices (and a photo post's cover). Interactions are on
/// unless disabled; the disclosure toggles are off unless set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TiktokOptions {
    /// Required: one of the account's current `privacy_level_options`.
    pub privacy_level: TiktokPrivacyLevel,
    #[serde(default)]
    pub disable_comment: bool,
    /// Videos only.
    #[serde(default)]
    pub disable_duet: bool,
    /// Videos only.
    #[serde(default)]
    pub disable_stitch: bool,
    /// Videos only: the frame shown as the cover, in milliseconds from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_cover_timestamp_ms: Option<u64>,
    /// Commercial content: the creator promotes a third party's brand (paid partnership).
    /// TikTok does not allow branded content to be private (`SELF_ONLY`).
    #[serde(default)]
    pub brand_content_toggle: bool,
    /// Commercial content: the creator promotes their own business.
    #[serde(default)]
    pub brand_organic_toggle: bool,
    /// Videos only: the content is AI-generated.
    #[serde(default)]
    pub is_aigc: bool,
    /// Photo posts only: the post's title (at most 90 characters); the caption is its
    /// description. Without it the title is the caption's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Photo posts only: which image (0-based) is the cover. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_cover_index: Option<u32>,
    /// Photo posts only: TikTok adds music to the slideshow.
    #[serde(default)]
    pub auto_add_music: bool,
}

/// The options against the account's channel and the post's media: the first rule broken, as
/// a field path under `options`.
pub fn check_options(channel: Channel, media: &[MediaItem], options: Option<&PostOptions>) -> Result<(), Violation> {
    match (channel, options) {
        (Channel::Tiktok, None) => Err(Violation::new(
            "privacy_level_required",
            "options.privacy_level",
            "a TikTok post needs the creator's choice of privacy_level (one of the account's privacy_level_options)",
        )),
        (Channel::Instagram, None) => check_instagram(media, &InstagramOptions::default()),
        (channel, Some(options)) if options.channel() != channel => Err(Violation::new(
            "options_channel_mismatch",
            "options.channel",
            format!("the account is a {channel} account; these options are for {}", options.channel()),
        )),
        (_, Some(PostOptions::Tiktok(options))) => check_tiktok(media, options),
        (_, Some(PostOptions::Instagram(options))) => check_instagram(media, options),
    }
}

/// Instagram's limits that its publishing docs state; where they are silent, ours (alt text 1,000
/// characters, audio name 100) are in `rules`.
fn check_instagram(media: &[MediaItem], options: &InstagramOptions) -> Result<(), Violation> {
    use InstagramPostType::*;
    let post_type = options.post_type(media);
    let is = |kind| media.first().is_some_and(|m| m.kind == kind);
    let shape = match post_type {
        Feed if media.len() != 1 || !is(MediaKind::Image) => Some("a feed post is one image (a video is a reel)"),
        Reel if media.len() != 1 || !is(MediaKind::Video) => Some("a reel is one video"),
        Story if media.len() != 1 => Some("a story is one image or one video"),
        Carousel if !(rules::INSTAGRAM_CAROUSEL_MIN..=rules::INSTAGRAM_CAROUSEL_MAX).contains(&media.len()) => {
            Some("a carousel has 2 to 10 images and videos")
        }
        _ => None,
    };
    if let Some(shape) = shape {
        return Err(Violation::new(
            "post_type_media_mismatch",
            "options.post_type",
            format!("{shape}; this post has {} media item(s)", media.len()),
        ));
    }
    let not_for = |field: &str, set: bool, types: &str| -> Result<(), Violation> {
        if set {
            return Err(Violation::new(
                "option_not_applicable",
                format!("options.{field}"),
                format!("{field} applies to Instagram {types} only, not to a {}", post_type.as_str()),
            ));
        }
        Ok(())
    };
    let reel = post_type == Reel;
    not_for("share_to_feed", !reel && options.share_to_feed.is_some(), "reels")?;
    not_for("cover_url", !reel && options.cover_url.is_some(), "reels")?;
    not_for("thumb_offset_ms", !reel && options.thumb_offset_ms.is_some(), "reels")?;
    not_for("audio_name", !reel && options.audio_name.is_some(), "reels")?;
    let story = post_type == Story;
    not_for("collaborators", story && !options.collaborators.is_empty(), "feed posts, reels and carousels")?;
    not_for("location_id", story && options.location_id.is_some(), "feed posts, reels and carousels")?;
    not_for("user_tags", story && !options.user_tags.is_empty(), "feed posts, reels and carousels")?;
    not_for("first_comment", story && options.first_comment.is_some(), "feed posts, reels and carousels")?;
    not_for("alt_text", matches!(post_type, Story | Reel) && !options.alt_text.is_empty(), "feed and carousel images")?;
    if options.cover_url.is_some() && options.thumb_offset_ms.is_some() {
        return Err(Violation::new(
            "options_conflict",
            "options.thumb_offset_ms",
            "a reel's cover is cover_url or thumb_offset_ms, not both",
        ));
    }
    if options.alt_text.len() > media.len() {
        return Err(Violation::new(
            "alt_text_count",
            "options.alt_text",
            format!("alt_text has {} entries for {} media item(s)", options.alt_text.len(), media.len()),
        ));
    }
    for (i, alt) in options.alt_text.iter().enumerate() {
        let Some(alt) = alt else { continue };
        let field = format!("options.alt_text[{i}]");
        if media[i].kind != MediaKind::Image {
            return Err(Violation::new("option_not_applicable", field, "alt text applies to images only"));
        }
        text(&field, alt, rules::INSTAGRAM_ALT_TEXT_CHARS)?;
    }
    if options.collaborators.len() > rules::INSTAGRAM_COLLABORATORS {
        return Err(Violation::new(
            "too_many_collaborators",
            "options.collaborators",
            format!("Instagram allows {} collaborators; there are {}", rules::INSTAGRAM_COLLABORATORS, options.collaborators.len()),
        ));
    }
    for (i, name) in options.collaborators.iter().enumerate() {
        username(&format!("options.collaborators[{i}]"), name)?;
    }
    if let Some(location) = &options.location_id
        && (location.is_empty() || location.len() > 32 || !location.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Violation::new("invalid_location_id", "options.location_id", "a location_id is a Facebook Page id: 1 to 32 digits"));
    }
    for (i, tag) in options.user_tags.iter().enumerate() {
        let field = format!("options.user_tags[{i}]");
        username(&format!("{field}.username"), &tag.username)?;
        let Some(item) = media.get(tag.media_index as usize) else {
            return Err(Violation::new(
                "media_index_out_of_range",
                format!("{field}.media_index"),
                format!("the post has {} media item(s)", media.len()),
            ));
        };
        match (item.kind, tag.x, tag.y) {
            (MediaKind::Image, Some(x), Some(y)) => {
                for (axis, v) in [("x", x), ("y", y)] {
                    if !(0.0..=1.0).contains(&v) {
                        return Err(Violation::new(
                            "tag_position_out_of_range",
                            format!("{field}.{axis}"),
                            format!("{axis} is a fraction of the image, 0.0 to 1.0"),
                        ));
                    }
                }
            }
            (MediaKind::Image, _, _) => {
                return Err(Violation::new("tag_position_required", format!("{field}.x"), "a tag on an image needs its x and y"));
            }
            // Instagram tags people in a reel without a position, and not in a carousel's videos.
            (MediaKind::Video, None, None) if post_type == Reel => {}
            (MediaKind::Video, _, _) if post_type == Reel => {
                return Err(Violation::new("option_not_applicable", format!("{field}.x"), "a tag in a reel has no position"));
            }
            (MediaKind::Video, _, _) => {
                return Err(Violation::new("option_not_applicable", field, "people are tagged in a carousel's images, not its videos"));
            }
        }
    }
    let tags_per_item = (0..media.len()).map(|i| options.user_tags_of(i).count()).max().unwrap_or(0);
    if tags_per_item > rules::INSTAGRAM_TAGS_PER_ITEM {
        return Err(Violation::new(
            "too_many_user_tags",
            "options.user_tags",
            format!("Instagram allows {} tags per media item", rules::INSTAGRAM_TAGS_PER_ITEM),
        ));
    }
    if let Some(audio) = &options.audio_name {
        text("options.audio_name", audio, rules::INSTAGRAM_AUDIO_NAME_CHARS)?;
    }
    if let Some(comment) = &options.first_comment {
        if comment.trim().is_empty() {
            return Err(Violation::new("required", "options.first_comment", "a first comment cannot be empty; leave it out instead"));
        }
        text("options.first_comment", comment, rules::INSTAGRAM_CAPTION_CHARS)?;
    }
    Ok(())
}

/// Free text of at most `max` characters, without control characters other than line breaks.
fn text(field: &str, value: &str, max: usize) -> Result<(), Violation> {
    let chars = value.chars().count();
    if chars > max {
        return Err(Violation::new("too_long", field, format!("{field} must be at most {max} characters; it has {chars}")));
    }
    if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Violation::new("invalid_characters", field, format!("{field} contains control characters")));
    }
    Ok(())
}

/// An Instagram username: 1 to 30 letters, digits, periods and underscores. Whether the account
/// exists only Instagram knows: it refuses the post's container otherwise.
fn username(field: &str, name: &str) -> Result<(), Violation> {
    let shaped = (1..=30).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if !shaped {
        return Err(Violation::new(
            "invalid_username",
            field,
            "an Instagram username is 1 to 30 letters, digits, periods and underscores, without @",
        ));
    }
    Ok(())
}

fn check_tiktok(media: &[MediaItem], options: &TiktokOptions) -> Result<(), Violation> {
    if options.brand_content_toggle && options.privacy_level == TiktokPrivacyLevel::SelfOnly {
        return Err(Violation::new(
            "branded_content_private",
            "options.privacy_level",
            "TikTok does not allow branded content (brand_content_toggle) to be private (SELF_ONLY)",
        ));
    }
    let is_video = media.iter().any(|m| m.kind == MediaKind::Video);
    let only_for = |field: &str, set: bool, kind: &str| -> Result<(), Violation> {
        if set {
            return Err(Violation::new(
                "option_not_applicable",
                format!("options.{field}"),
                format!("{field} applies to TikTok {kind} only"),
            ));
        }
        Ok(())
    };
    if is_video {
        only_for("title", options.title.is_some(), "photo posts")?;
        only_for("photo_cover_index", options.photo_cover_index.is_some(), "photo posts")?;
        only_for("auto_add_music", options.auto_add_music, "photo posts")?;
    } else {
        only_for("disable_duet", options.disable_duet, "videos")?;
        only_for("disable_stitch", options.disable_stitch, "videos")?;
        only_for("video_cover_timestamp_ms", options.video_cover_timestamp_ms.is_some(), "videos")?;
        only_for("is_aigc", options.is_aigc, "videos")?;
    }
    if let Some(title) = &options.title {
        let chars = title.chars().count();
        if chars > rules::TIKTOK_PHOTO_TITLE_CHARS {
            return Err(Violation::new(
                "title_too_long",
                "options.title",
                format!("TikTok allows {} characters in a photo post's title; this one has {chars}", rules::TIKTOK_PHOTO_TITLE_CHARS),
            ));
        }
        if title.chars().any(|c| c.is_control()) {
            return Err(Violation::new("invalid_characters", "options.title", "options.title contains control characters"));
        }
    }
    if let Some(index) = options.photo_cover_index
        && index as usize >= media.len()
    {
        return Err(Violation::new(
            "photo_cover_index_out_of_range",
            "options.photo_cover_index",
            format!("the post has {} image(s): the cover index must be 0 to {}", media.len(), media.len().saturating_sub(1)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(kind: MediaKind, n: usize) -> Vec<MediaItem> {
        vec![MediaItem { url: "https://x.test/f".into(), kind }; n]
    }

    fn tiktok(privacy_level: TiktokPrivacyLevel) -> TiktokOptions {
        serde_json::from_value(serde_json::json!({ "privacy_level": privacy_level })).unwrap()
    }

    fn code(channel: Channel, media: &[MediaItem], options: Option<TiktokOptions>) -> Result<(), (&'static str, String)> {
        check_options(channel, media, options.map(PostOptions::Tiktok).as_ref()).map_err(|v| (v.code, v.field))
    }

    #[test]
    fn a_tiktok_post_needs_the_creators_privacy_choice() {
        assert_eq!(
            code(Channel::Tiktok, &media(MediaKind::Video, 1), None),
            Err(("privacy_level_required", "options.privacy_level".into()))
        );
        assert_eq!(code(Channel::Tiktok, &media(MediaKind::Video, 1), Some(tiktok(TiktokPrivacyLevel::SelfOnly))), Ok(()));
        assert_eq!(code(Channel::Instagram, &media(MediaKind::Image, 1), None), Ok(()));
        assert_eq!(
            code(Channel::Instagram, &media(MediaKind::Image, 1), Some(tiktok(TiktokPrivacyLevel::SelfOnly))),
            Err(("options_channel_mismatch", "options.channel".into()))
        );
    }

    #[test]
    fn branded_content_cannot_be_private() {
        let options = TiktokOptions { brand_content_toggle: true, ..tiktok(TiktokPrivacyLevel::SelfOnly) };
        assert_eq!(code(Channel::Tiktok, &media(MediaKind::Video, 1), Some(options.clone())).unwrap_err().0, "branded_content_private");
        let public = TiktokOptions { privacy_level: TiktokPrivacyLevel::PublicToEveryone, ..options };
        assert_eq!(code(Channel::Tiktok, &media(MediaKind::Video, 1), Some(public)), Ok(()));
    }

    #[test]
    fn options_of_the_other_media_kind_are_refused_with_their_field() {
        let video = media(MediaKind::Video, 1);
        let photos = media(MediaKind::Image, 3);
        let base = tiktok(TiktokPrivacyLevel::PublicToEveryone);
        let with_title = TiktokOptions { title: Some("t".into()), ..base.clone() };
        assert_eq!(code(Channel::Tiktok, &video, Some(with_title.clone())), Err(("option_not_applicable", "options.title".into())));
        assert_eq!(code(Channel::Tiktok, &photos, Some(with_title)), Ok(()));
        let duet = TiktokOptions { disable_duet: true, ..base.clone() };
        assert_eq!(code(Channel::Tiktok, &photos, Some(duet.clone())), Err(("option_not_applicable", "options.disable_duet".into())));
        assert_eq!(code(Channel::Tiktok, &video, Some(duet)), Ok(()));
        let cover = |i| TiktokOptions { photo_cover_index: Some(i), ..base.clone() };
        assert_eq!(code(Channel::Tiktok, &photos, Some(cover(2))), Ok(()));
        assert_eq!(
            code(Channel::Tiktok, &photos, Some(cover(3))),
            Err(("photo_cover_index_out_of_range", "options.photo_cover_index".into()))
        );
        let long = TiktokOptions { title: Some("é".repeat(91)), ..base };
        assert_eq!(code(Channel::Tiktok, &photos, Some(long)).unwrap_err().0, "title_too_long");
    }

    #[test]
    fn options_read_from_json_refuse_unknown_fields_and_need_the_channel() {
        let parse = |v: serde_json::Value| serde_json::from_value::<PostOptions>(v);
        assert!(parse(serde_json::json!({ "channel": "tiktok", "privacy_level": "SELF_ONLY" })).is_ok());
        assert!(parse(serde_json::json!({ "privacy_level": "SELF_ONLY" })).is_err());
        assert!(parse(serde_json::json!({ "channel": "tiktok", "privacy_level": "SELF_ONLY", "privacy": 1 })).is_err());
        assert!(parse(serde_json::json!({ "channel": "tiktok" })).is_err(), "privacy_level has no default");
        assert!(parse(serde_json::json!({ "channel": "tiktok", "privacy_level": "EVERYONE" })).is_err());
    }

    fn instagram(value: serde_json::Value) -> Result<(), (&'static str, String)> {
        let options: InstagramOptions = serde_json::from_value(value).unwrap();
        let media = [
            MediaItem { url: "https://x.test/a.jpg".into(), kind: MediaKind::Image },
            MediaItem { url: "https://x.test/b.mp4".into(), kind: MediaKind::Video },
            MediaItem { url: "https://x.test/c.jpg".into(), kind: MediaKind::Image },
        ];
        let n = match options.post_type {
            Some(InstagramPostType::Carousel) | None => 3,
            Some(InstagramPostType::Reel) => {
                return check_options(Channel::Instagram, &media[1..2], Some(&PostOptions::Instagram(options)))
                    .map_err(|v| (v.code, v.field));
            }
            _ => 1,
        };
        check_options(Channel::Instagram, &media[..n], Some(&PostOptions::Instagram(options))).map_err(|v| (v.code, v.field))
    }

    #[test]
    fn an_instagram_post_type_needs_its_media() {
        let image = media(MediaKind::Image, 1);
        let video = media(MediaKind::Video, 1);
        let of = |t: &str| Some(PostOptions::Instagram(serde_json::from_value(serde_json::json!({ "post_type": t })).unwrap()));
        let check = |m: &[MediaItem], o: Option<PostOptions>| check_options(Channel::Instagram, m, o.as_ref()).map_err(|v| v.code);
        assert_eq!(check(&image, None), Ok(()));
        assert_eq!(check(&video, None), Ok(()), "a reel, derived");
        assert_eq!(check(&media(MediaKind::Image, 2), None), Ok(()), "a carousel, derived");
        assert_eq!(check(&video, of("feed")), Err("post_type_media_mismatch"));
        assert_eq!(check(&image, of("reel")), Err("post_type_media_mismatch"));
        assert_eq!(check(&video, of("story")), Ok(()));
        assert_eq!(check(&image, of("carousel")), Err("post_type_media_mismatch"));
        assert_eq!(check(&media(MediaKind::Image, 11), of("carousel")), Err("post_type_media_mismatch"));
        assert_eq!(InstagramPostType::derived(&media(MediaKind::Video, 3)), InstagramPostType::Carousel);
    }

    #[test]
    fn instagram_options_are_refused_where_they_do_not_apply_with_their_field() {
        use serde_json::json;
        assert_eq!(
            instagram(json!({ "alt_text": ["a cat", null, "a dog"], "collaborators": ["ann", "bo.b"], "location_id": "123" })),
            Ok(())
        );
        assert_eq!(
            instagram(json!({ "post_type": "reel", "share_to_feed": false, "cover_url": "https://x.test/c.jpg", "audio_name": "mine" })),
            Ok(())
        );
        assert_eq!(instagram(json!({ "share_to_feed": true })), Err(("option_not_applicable", "options.share_to_feed".into())));
        assert_eq!(
            instagram(json!({ "post_type": "story", "first_comment": "hi" })),
            Err(("option_not_applicable", "options.first_comment".into()))
        );
        assert_eq!(instagram(json!({ "alt_text": [null, "a video"] })), Err(("option_not_applicable", "options.alt_text[1]".into())));
        assert_eq!(instagram(json!({ "alt_text": ["a", null, "b", "c"] })).unwrap_err().0, "alt_text_count");
        assert_eq!(
            instagram(json!({ "post_type": "reel", "cover_url": "https://x.test/c.jpg", "thumb_offset_ms": 5 })).unwrap_err().0,
            "options_conflict"
        );
        assert_eq!(instagram(json!({ "collaborators": ["a", "b", "c", "d"] })).unwrap_err().0, "too_many_collaborators");
        assert_eq!(instagram(json!({ "collaborators": ["@ann"] })), Err(("invalid_username", "options.collaborators[0]".into())));
        assert_eq!(instagram(json!({ "location_id": "paris" })).unwrap_err().0, "invalid_location_id");
        assert_eq!(instagram(json!({ "first_comment": "  " })), Err(("required", "options.first_comment".into())));
    }

    #[test]
    fn user_tags_have_a_position_on_images_and_none_in_reels() {
        use serde_json::json;
        assert_eq!(
            instagram(
                json!({ "user_tags": [{ "username": "ann", "x": 0.5, "y": 1.0 }, { "username": "bob", "media_index": 2, "x": 0.0, "y": 0.3 }] })
            ),
            Ok(())
        );
        assert_eq!(
            instagram(json!({ "user_tags": [{ "username": "ann" }] })),
            Err(("tag_position_required", "options.user_tags[0].x".into()))
        );
        assert_eq!(
            instagram(json!({ "user_tags": [{ "username": "ann", "x": 1.5, "y": 0.5 }] })),
            Err(("tag_position_out_of_range", "options.user_tags[0].x".into()))
        );
        assert_eq!(
            instagram(json!({ "user_tags": [{ "username": "ann", "media_index": 1 }] })),
            Err(("option_not_applicable", "options.user_tags[0]".into())),
            "not in a carousel's video"
        );
        assert_eq!(
            instagram(json!({ "user_tags": [{ "username": "ann", "media_index": 3, "x": 0.1, "y": 0.1 }] })).unwrap_err().0,
            "media_index_out_of_range"
        );
        assert_eq!(instagram(json!({ "post_type": "reel", "user_tags": [{ "username": "ann" }] })), Ok(()));
        let many: Vec<_> = (0..21).map(|i| json!({ "username": format!("u{i}"), "x": 0.1, "y": 0.1 })).collect();
        assert_eq!(instagram(json!({ "user_tags": many })).unwrap_err().0, "too_many_user_tags");
    }
}
