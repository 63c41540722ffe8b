//! `GET /_sandbox/redirect?to=URL`: answers `302 Location: URL`, a media host that redirects,
//! for tests of how the worker follows redirects (the real platforms have no `/_sandbox`).

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use url::Url;

#[derive(Deserialize)]
pub(crate) struct RedirectQuery {
    to: String,
}

pub(crate) async fn redirect(query: Result<Query<RedirectQuery>, QueryRejection>) -> Response {
    let bad_request = |message: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response();
    let Ok(Query(RedirectQuery { to })) = query else { return bad_request("give the target as `?to=URL`") };
    // An absolute URL serializes to ASCII, so it is always a valid header value.
    let Some(location) = Url::parse(&to).ok().and_then(|url| HeaderValue::from_str(url.as_str()).ok()) else {
        return bad_request("`to` must be an absolute URL");
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redirect_answers_302_to_the_given_url_and_400_without_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { crate::serve(listener).await });
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let get = |query: &str| client.get(format!("{base}/_sandbox/redirect{query}")).send();

        let response = get("?to=https%3A%2F%2F127.0.0.1%3A9%2Fa.jpg").await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers()[header::LOCATION], "https://127.0.0.1:9/a.jpg");
        assert_eq!(get("").await.unwrap().status(), StatusCode::BAD_REQUEST);
        assert_eq!(get("?to=not%20a%20url").await.unwrap().status(), StatusCode::BAD_REQUEST);
    }
}
