//! `GET /v1/features`: what this server has turned on, so a client (the calendar page) offers
//! only what will be accepted.

use autopost_workflows::rules;
use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use crate::{ApiState, auth::Creator, error::responses};

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/features", get(get_features))
}

/// The server's optional features and the limits a form counts against.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Features {
    /// `POST /v1/publish-jobs/{id}/publish-now` is on (`AUTOPOST_PUBLISH_NOW`).
    pub publish_now: bool,
    /// Development only (`AUTOPOST_DEV_SANDBOX_URL`): the platform sandbox that issues account
    /// tokens at `POST {sandbox_url}/_sandbox/accounts`. Null in production.
    #[schema(required)]
    pub sandbox_url: Option<String>,
    /// The longest caption each kind of post takes, in characters (Unicode scalar values).
    pub caption_limits: CaptionLimits,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CaptionLimits {
    pub instagram: usize,
    pub tiktok_video: usize,
    pub tiktok_photo: usize,
}

/// The server's optional features and the caption limits.
#[utoipa::path(get, path = "/v1/features", tag = "meta", responses(
    (status = 200, description = "What this server has turned on", body = Features),
    (status = 500, response = responses::Internal),
))]
async fn get_features(State(state): State<ApiState>, _creator: Creator) -> Json<Features> {
    let sandbox_url = state.settings.dev_sandbox_url.as_ref().map(|url| url.as_str().trim_end_matches('/').to_owned());
    Json(Features {
        publish_now: state.settings.publish_now_enabled,
        sandbox_url,
        caption_limits: CaptionLimits {
            instagram: rules::INSTAGRAM_CAPTION_CHARS,
            tiktok_video: rules::TIKTOK_VIDEO_CAPTION_CHARS,
            tiktok_photo: rules::TIKTOK_PHOTO_CAPTION_CHARS,
        },
    })
}
