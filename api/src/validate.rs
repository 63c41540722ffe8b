//! Whether a post can be accepted, checked before anything is written, so a job that is
//! accepted can be published. The platforms' rules live in `autopost_workflows::rules` (shared
//! with preflight); this module adds what only the API decides: which URLs it accepts.

use autopost_workflows::{
    Channel, InstagramPostType, MediaItem, MediaKind, PostOptions, options,
    rules::{self, Violation},
};
use url::Url;

use crate::error::ApiError;

/// Origins (scheme, host and port, exactly) where plain `http` media is accepted: the
/// sandbox's own, in development.
#[derive(Clone, Debug, Default)]
pub struct MediaPolicy {
    pub http_allowed_origins: Vec<url::Origin>,
}

impl From<Violation> for ApiError {
    fn from(v: Violation) -> Self {
        ApiError::unprocessable(v.code, v.field, v.message)
    }
}

/// Longest media URL accepted (what browsers and CDNs reliably handle).
pub const MAX_URL_LEN: usize = 2048;

/// Text no one typed and Postgres cannot store (NUL) is refused with the field's name; line
/// breaks and tabs are fine.
pub fn no_control_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::unprocessable("invalid_characters", field, format!("{field} contains control characters such as NUL")));
    }
    Ok(())
}

/// A string field of at most `max` characters, without control characters.
pub fn bounded(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::unprocessable("too_long", field, format!("{field} must be at most {max} characters")));
    }
    no_control_text(field, value)
}

/// Every rule a post must meet for `channel`; the first one broken is the error.
pub fn post(
    channel: Channel,
    caption: &str,
    media: &[MediaItem],
    post_options: Option<&PostOptions>,
    policy: &MediaPolicy,
) -> Result<(), ApiError> {
    no_control_text("caption", caption)?;
    rules::check_media_count(channel, media)?;
    for (i, item) in media.iter().enumerate() {
        media_item(channel, item, &format!("media[{i}]"), policy)?;
    }
    rules::check_caption(channel, caption, media)?;
    options::check_options(channel, media, post_options)?;
    if let Some(instagram) = post_options.and_then(PostOptions::instagram) {
        if instagram.post_type(media) == InstagramPostType::Story && !caption.trim().is_empty() {
            return Err(ApiError::unprocessable(
                "option_not_applicable",
                "caption",
                "an Instagram story has no caption: leave it empty (Instagram would drop it)",
            ));
        }
        if let Some(cover) = &instagram.cover_url {
            let url = media_url("options.cover_url", cover, policy)?;
            let file_name = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
            rules::check_media_file_name(channel, MediaKind::Image, file_name, "options.cover_url")?;
        }
    }
    Ok(())
}

fn media_item(channel: Channel, item: &MediaItem, field: &str, policy: &MediaPolicy) -> Result<(), ApiError> {
    let url = media_url(&format!("{field}.url"), &item.url, policy)?;
    let file_name = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
    Ok(rules::check_media_file_name(channel, item.kind, file_name, field)?)
}

/// A URL a platform fetches media from: https (or http from an allowed origin), with a host.
fn media_url(url_field: &str, value: &str, policy: &MediaPolicy) -> Result<Url, ApiError> {
    bounded(url_field, value, MAX_URL_LEN)?;
    let url = Url::parse(value).map_err(|e| ApiError::unprocessable("media_url_invalid", url_field, format!("not a URL: {e}")))?;
    match (url.host_str(), url.port_or_known_default()) {
        (Some(_), Some(_)) => {}
        _ => return Err(ApiError::unprocessable("media_url_invalid", url_field, "the URL has no host")),
    }
    match url.scheme() {
        "https" => {}
        "http" if policy.http_allowed_origins.contains(&url.origin()) => {}
        _ => return Err(ApiError::unprocessable("media_url_not_https", url_field, "platforms fetch media over https only")),
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use autopost_workflows::MediaKind;

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
    fn plain_http_media_is_refused_except_on_the_sandbox_exact_origin() {
        let policy = MediaPolicy { http_allowed_origins: vec![Url::parse("http://127.0.0.1:8090/instagram").unwrap().origin()] };
        // Only the exact origin: another host name for it or another port is not the sandbox.
        for url in ["http://cdn.example.com/a.jpg", "http://127.0.0.1:8091/media/a.jpg", "http://localhost:8090/media/a.jpg"] {
            assert_eq!(field_of(post(Channel::Instagram, "", &[item(url, MediaKind::Image)], None, &policy)), "media[0].url", "{url}");
        }
        let sandbox = [item("http://127.0.0.1:8090/media/a.jpg", MediaKind::Image)];
        assert!(post(Channel::Instagram, "", &sandbox, None, &policy).is_ok());
    }

    #[test]
    fn the_platform_rules_are_applied_with_their_field_paths() {
        let reel = [item("https://cdn.example.com/a.jpg", MediaKind::Video)];
        assert_eq!(field_of(post(Channel::Instagram, "", &reel, None, &MediaPolicy::default())), "media[0].kind");
        let png = [item("https://x.test/a.png", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Instagram, "", &png, None, &MediaPolicy::default())), "media[0].url");
        let eleven = vec![item("https://x.test/a.jpg", MediaKind::Image); 11];
        assert_eq!(field_of(post(Channel::Instagram, "", &eleven, None, &MediaPolicy::default())), "media");
        assert!(post(Channel::Instagram, "", &eleven[..2], None, &MediaPolicy::default()).is_ok(), "a carousel");
        let photo = [item("https://x.test/a.jpg", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Instagram, &"a".repeat(2201), &photo, None, &MediaPolicy::default())), "caption");
    }

    #[test]
    fn a_url_that_is_not_one_names_the_item() {
        let broken = [item("https://x.test/a.jpg", MediaKind::Image), item("not a url", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Tiktok, "", &broken, None, &MediaPolicy::default())), "media[1].url");
    }
}
