//! `/media/{name}`: a tiny media host, standing in for the public URLs that the
//! platforms pull images and videos from.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use url::Url;

use crate::faults::{Endpoint, with_faults};
use crate::state::{MediaObject, Shared, State as World};

/// Uploads bigger than the platforms' own limits are useful for tests of
/// "too large" paths, so allow well past 20 MB.
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

static SAMPLE_JPG: &[u8] = include_bytes!("../assets/sample.jpg");
static SAMPLE_PNG: &[u8] = include_bytes!("../assets/sample.png");
static SAMPLE_MP4: &[u8] = include_bytes!("../assets/sample.mp4");

/// Built-in media: a 64x64 JPEG, a 64x64 PNG (unsupported by the platforms'
/// JPEG-only paths) and a 3 s 360x640 30 fps H.264/AAC MP4 (long enough for
/// Reels' 3 s minimum).
fn builtin(name: &str) -> Option<MediaObject> {
    let (content_type, bytes) = match name {
        "sample.jpg" => ("image/jpeg", SAMPLE_JPG),
        "sample.png" => ("image/png", SAMPLE_PNG),
        "sample.mp4" => ("video/mp4", SAMPLE_MP4),
        _ => return None,
    };
    Some(MediaObject { content_type: content_type.into(), bytes: Bytes::from_static(bytes) })
}

impl World {
    /// Uploaded media first, so an upload can shadow a built-in until reset.
    pub fn media(&self, name: &str) -> Option<MediaObject> {
        self.uploaded_media.get(name).cloned().or_else(|| builtin(name))
    }
}

/// What the sandbox knows about a media URL given to a platform.
#[derive(Debug)]
pub(crate) enum MediaSource {
    /// Not a URL at all.
    Invalid,
    /// Another host: the sandbox never fetches over the network.
    Foreign,
    /// This sandbox's own host; `None` when nothing is served at that path.
    Own(Option<MediaObject>),
}

/// Resolves `media_url` against this sandbox. `request_host` is the `Host`
/// header of the platform call: a URL is own-hosted when it names the same
/// host and port, or a loopback host on the same port (so `localhost` and
/// `127.0.0.1` are interchangeable).
pub(crate) fn resolve(world: &World, request_host: Option<&str>, media_url: &str) -> MediaSource {
    let Ok(url) = Url::parse(media_url) else {
        return MediaSource::Invalid;
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return MediaSource::Invalid;
    }
    let Some(own) = request_host.and_then(|host| Url::parse(&format!("http://{host}/")).ok()) else {
        return MediaSource::Foreign;
    };
    let same_port = url.port_or_known_default() == own.port_or_known_default();
    let same_host = url.host_str() == own.host_str() || (is_loopback(&url) && is_loopback(&own));
    if !(same_port && same_host) {
        return MediaSource::Foreign;
    }
    // Anything on our host outside `/media/{name}` would be a 404 when fetched.
    let name = url.path().strip_prefix("/media/").filter(|name| !name.is_empty() && !name.contains('/'));
    MediaSource::Own(name.and_then(|name| world.media(name)))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    // `get` also answers HEAD, with the same headers and no body.
    Router::new().route("/{name}", get(get_media).put(put_media)).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
}

async fn get_media(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let fault_response = |status: StatusCode, body: Option<Value>| match body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => (status, "injected fault").into_response(),
    };
    with_faults(&shared, Endpoint::Media, fault_response, async {
        let Some(media) = shared.lock().media(&name) else {
            return (StatusCode::NOT_FOUND, "not found").into_response();
        };
        let content_type = HeaderValue::from_str(&media.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let headers = [(header::CONTENT_TYPE, content_type), (header::CONTENT_LENGTH, HeaderValue::from(media.len()))];
        (headers, Body::from(media.bytes)).into_response()
    })
    .await
}

async fn put_media(State(shared): State<Arc<Shared>>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map_or_else(|| content_type_for(&name).to_owned(), str::to_owned);
    let size = bytes.len();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let url = format!("http://{host}/media/{name}");
    let media = MediaObject { content_type: content_type.clone(), bytes };
    shared.lock().uploaded_media.insert(name.clone(), media);
    tracing::debug!(%name, %content_type, size, "media stored");
    let body = json!({"name": name, "url": url, "content_type": content_type, "size": size});
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// Content type from the file extension, for uploads without `Content-Type`.
fn content_type_for(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("mp4") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("webm") => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_host_detection() {
        let world = World::default();
        let host = Some("127.0.0.1:8080");
        assert!(matches!(resolve(&world, host, "http://localhost:8080/media/sample.jpg"), MediaSource::Own(Some(_))));
        assert!(matches!(resolve(&world, host, "http://127.0.0.1:8080/media/nope.jpg"), MediaSource::Own(None)));
        assert!(matches!(resolve(&world, host, "http://127.0.0.1:8080/other"), MediaSource::Own(None)));
        assert!(matches!(resolve(&world, host, "http://127.0.0.1:9090/media/sample.jpg"), MediaSource::Foreign));
        assert!(matches!(resolve(&world, host, "https://cdn.example.com/a.jpg"), MediaSource::Foreign));
        assert!(matches!(resolve(&world, host, "not a url"), MediaSource::Invalid));
    }

    #[test]
    fn builtin_assets_are_what_they_claim() {
        assert!(SAMPLE_JPG.starts_with(&[0xFF, 0xD8, 0xFF]));
        assert!(SAMPLE_PNG.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(&SAMPLE_MP4[4..8], b"ftyp");
        assert_eq!(content_type_for("clip.MOV"), "video/quicktime");
    }
}
