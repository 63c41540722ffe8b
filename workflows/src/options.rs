//! What a creator chooses for a post beyond its caption and media, per channel, as the
//! platforms' publishing APIs take it. Stored on the job; the worker sends it as is.

use serde::{Deserialize, Serialize};

use crate::rules::{self, Violation};
use crate::types::{Channel, MediaItem, MediaKind};

/// A post's options. `channel` names the schema and must be the account's channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum PostOptions {
    Tiktok(TiktokOptions),
}

impl PostOptions {
    pub fn channel(&self) -> Channel {
        match self {
            PostOptions::Tiktok(_) => Channel::Tiktok,
        }
    }

    pub fn tiktok(&self) -> Option<&TiktokOptions> {
        match self {
            PostOptions::Tiktok(options) => Some(options),
        }
    }
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
        (Channel::Instagram, None) => Ok(()),
        (channel, Some(options)) if options.channel() != channel => Err(Violation::new(
            "options_channel_mismatch",
            "options.channel",
            format!("the account is a {channel} account; these options are for {}", options.channel()),
        )),
        (_, Some(PostOptions::Tiktok(options))) => check_tiktok(media, options),
    }
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
}
