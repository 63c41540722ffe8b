//! The creator's calendar at `/`: one HTML page with its script and styles, embedded in the
//! binary (no Node at run time, no build step). It is a client of the API like any other: it
//! signs in with a bearer token and reads `/v1/...` and the event stream, so it can see only
//! what the token's creator can.

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::ApiState;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLES: &str = include_str!("../web/app.css");
const ICON: &str = include_str!("../web/icon.svg");

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", STYLES) }))
        .route("/assets/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
}

async fn index(State(state): State<ApiState>) -> Response {
    let policy = content_security_policy(state.settings.dev_sandbox_url.as_ref());
    let mut response = asset("text/html; charset=utf-8", INDEX);
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    // The page's address may carry `#token=`: browsers never send fragments, and no referrer
    // leaves the page at all.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Always revalidated: a new binary serves new assets at the same paths.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

/// Scripts and styles from this server only; media thumbnails from wherever the creator's
/// media are; requests to this API, and to the development sandbox when there is one.
fn content_security_policy(sandbox: Option<&url::Url>) -> String {
    let sandbox = sandbox.map(|url| format!(" {}", url.origin().ascii_serialization())).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; \
         media-src https: http:; connect-src 'self'{sandbox}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'self'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_lets_the_page_reach_only_its_api_and_the_dev_sandbox() {
        let production = content_security_policy(None);
        assert!(production.contains("connect-src 'self';"), "{production}");
        assert!(production.contains("script-src 'self';"), "{production}");
        let sandbox: url::Url = "http://127.0.0.1:8090/".parse().unwrap();
        let dev = content_security_policy(Some(&sandbox));
        assert!(dev.contains("connect-src 'self' http://127.0.0.1:8090;"), "{dev}");
    }
}
