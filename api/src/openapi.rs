//! The OpenAPI 3.1 document, generated from the handlers' types and annotations with `utoipa`,
//! served at `GET /openapi.json` and committed as `openapi.json` at the repository root.
//!
//! After changing a handler, a request or response type or an annotation, regenerate the
//! committed copy with `UPDATE_OPENAPI=1 cargo test -p autopost-api openapi`; without
//! `UPDATE_OPENAPI` that test fails while the committed copy is stale.

use axum::{Json, Router, routing::get};
use utoipa::OpenApi;

use crate::{
    ApiState, accounts, capabilities, commands,
    error::{self, responses},
    events, features, health, jobs,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Autopost API",
        license(name = "UNLICENSED"),
        description = "Schedules Instagram and TikTok posts and reports where they stand. Every error is \
            `{\"error\": {\"code\", \"message\", \"field\", \"status\"}}` (`ErrorBody`)."
    ),
    paths(
        health::healthz,
        health::readyz,
        openapi_json,
        accounts::link_account,
        accounts::list_accounts,
        accounts::get_account,
        accounts::unlink_account,
        capabilities::get_capabilities,
        jobs::create_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::list_attempts,
        commands::retry,
        commands::reschedule,
        commands::cancel,
        commands::publish_now,
        commands::edit,
        events::stream_events,
        features::get_features,
    ),
    modifiers(&BearerAuth),
    components(
        schemas(
            error::ErrorBody,
            autopost_workflows::JobStatus,
            autopost_workflows::Channel,
            commands::PendingCommand,
            capabilities::AccountCapabilities,
            capabilities::ChannelCapabilities,
        ),
        responses(
            responses::InvalidId,
            responses::JobNotFound,
            responses::InvalidState,
            responses::UnsupportedMediaType,
            responses::Unavailable,
            responses::Internal,
            responses::CommandPending,
            responses::Unauthorized,
            responses::RateLimited,
        ),
    ),
    tags(
        (name = "accounts", description = "Linking creators' platform accounts"),
        (name = "publish-jobs", description = "Scheduling posts and the calendar"),
        (name = "commands", description = "A creator's commands to a scheduled job"),
        (name = "events", description = "Job transitions, live (Server-Sent Events)"),
        (name = "health", description = "Liveness and readiness"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// Every `/v1` operation requires the bearer token and may answer `401`; its writes may answer
/// `429`. Declared here once, so no route can be documented without it.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Ref, RefOr,
            security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        };
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("A JWT from the product's web app; its `sub` is the creator id. See the README's Security section."))
            .build();
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations =
                [(&mut item.get, false), (&mut item.post, true), (&mut item.put, true), (&mut item.patch, true), (&mut item.delete, true)];
            for (operation, writes) in operations {
                let Some(operation) = operation else { continue };
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                responses.insert("401".into(), RefOr::Ref(Ref::from_response_name("Unauthorized")));
                if writes {
                    responses.insert("429".into(), RefOr::Ref(Ref::from_response_name("RateLimited")));
                }
            }
        }
    }
}

/// The document as the API serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed: pretty JSON with a final newline.
pub fn pretty_json() -> String {
    let mut json = serde_json::to_string_pretty(&document()).expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

pub fn router() -> Router<ApiState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const REGENERATE: &str = "UPDATE_OPENAPI=1 cargo test -p autopost-api openapi";

    /// Fails while the committed `openapi.json` differs from the handlers; `UPDATE_OPENAPI=1`
    /// rewrites it instead.
    #[test]
    fn committed_openapi_json_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
        let rendered = pretty_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &rendered).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != rendered {
            let line = committed
                .lines()
                .zip(rendered.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(committed.lines().count().min(rendered.lines().count()));
            panic!("openapi.json is stale (first difference at line {}); regenerate it with `{REGENERATE}` and commit it", line + 1);
        }
    }

    #[test]
    fn openapi_document_is_3_1_and_types_the_enums() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["JobStatus"]["enum"],
            serde_json::json!(["scheduled", "publishing", "published", "failed", "needs_attention", "cancelled"])
        );
        assert_eq!(schemas["JobView"]["properties"]["status"]["$ref"], "#/components/schemas/JobStatus");
        assert_eq!(schemas["JobView"]["properties"]["media"]["items"]["$ref"], "#/components/schemas/MediaItem");
    }
}
