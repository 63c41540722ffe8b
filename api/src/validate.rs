//! Whether a post can be accepted, checked before anything is written, so a job that is
//! accepted can be published. The platforms' rules live in `autopost_workflows::rules` (shared
//! with preflight); this module adds what only the API decides: which URLs it accepts.

use autopost_workflows::{
    Channel, MediaItem,
    rules::{self, Violation},
};
use url::Url;

use crate::error::ApiError;

/// Hosts (`host:port`) where plain `http` media is accepted: the sandbox's own, in development.
#[derive(Clone, Debug, Default)]
pub struct MediaPolicy {
    pub http_allowed_hosts: Vec<String>,
}

impl From<Violation> for ApiError {
    fn from(v: Violation) -> Self {
        ApiError::unprocessable(v.code, v.field, v.message)
    }
}

/// Every rule a post must meet for `channel`; the first one broken is the error.
pub fn post(channel: Channel, caption: &str, media: &[MediaItem], policy: &MediaPolicy) -> Result<(), ApiError> {
    for (i, item) in media.iter().enumerate() {
        media_item(channel, item, &format!("media[{i}]"), policy)?;
    }
    rules::check_media_count(channel, media)?;
    rules::check_caption(channel, caption, media)?;
    Ok(())
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
        _ => return Err(ApiError::unprocessable("media_url_not_https", &url_field, "platforms fetch media over https only")),
    }
    let file_name = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
    Ok(rules::check_media_file_name(channel, item.kind, file_name, field)?)
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
    fn plain_http_media_is_refused_except_on_allowed_hosts() {
        let policy = MediaPolicy { http_allowed_hosts: vec!["127.0.0.1:8090".into()] };
        let remote = [item("http://cdn.example.com/a.jpg", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Instagram, "", &remote, &policy)), "media[0].url");
        let sandbox = [item("http://127.0.0.1:8090/media/a.jpg", MediaKind::Image)];
        assert!(post(Channel::Instagram, "", &sandbox, &policy).is_ok());
    }

    #[test]
    fn the_platform_rules_are_applied_with_their_field_paths() {
        let reel = [item("https://cdn.example.com/a.jpg", MediaKind::Video)];
        assert_eq!(field_of(post(Channel::Instagram, "", &reel, &MediaPolicy::default())), "media[0].kind");
        let png = [item("https://x.test/a.png", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Instagram, "", &png, &MediaPolicy::default())), "media[0].url");
        let two = [item("https://x.test/a.jpg", MediaKind::Image), item("https://x.test/b.jpg", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Instagram, "", &two, &MediaPolicy::default())), "media");
        let photo = [item("https://x.test/a.jpg", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Instagram, &"a".repeat(2201), &photo, &MediaPolicy::default())), "caption");
    }

    #[test]
    fn a_url_that_is_not_one_names_the_item() {
        let broken = [item("https://x.test/a.jpg", MediaKind::Image), item("not a url", MediaKind::Image)];
        assert_eq!(field_of(post(Channel::Tiktok, "", &broken, &MediaPolicy::default())), "media[1].url");
    }
}
