//! Issue 16, part 5: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the API and the worker export OTLP
//! traces, and one trace follows a post from the API request that created it to the platform
//! call that published it, across processes. No span attribute holds a token.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{Options, TestApp};
use axum::{Router, body::Bytes, extract::State, routing::post};
use chrono::Utc;
use opentelemetry_proto::tonic::{collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value};
use prost::Message;
use serde_json::json;

/// A span as received: its process, name, trace id, and every attribute value as text.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    attributes: Vec<String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

async fn export(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP/protobuf trace export");
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .map(|v| text(&v.value))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .map(|a| format!("{}={}", a.key, a.value.as_ref().map(|v| text(&v.value)).unwrap_or_default()))
                .collect();
            received.push(Received { service: service.clone(), name: span.name, trace_id: span.trace_id, attributes });
        }
    }
    Vec::new()
}

fn text(value: &Option<any_value::Value>) -> String {
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_links_the_api_request_the_publish_activity_and_the_platform_call_and_holds_no_token() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Router::new().route("/v1/traces", post(export)).with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let mut app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    app.child_env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
        // Export at once rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    app.start_worker();
    let (_api_process, api) = app.spawn_api_process().await;
    let token = "token-traced-secret";
    let account = app.link_account_via(&api, "instagram", token).await;
    let media = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let job = app.schedule_via(&api, &account, Utc::now() + chrono::Duration::seconds(2), "traced", media).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", Duration::from_secs(60)).await;

    // The platform call's span, then everything of its trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (trace, received) = loop {
        let received = spans.lock().unwrap().clone();
        let publish = received.iter().find(|s| s.service == "autopost-worker" && s.name == "publish_container");
        if let Some(publish) = publish {
            let trace: Vec<Received> = received.iter().filter(|s| s.trace_id == publish.trace_id).cloned().collect();
            let has = |service: &str, name: &str| trace.iter().any(|s| s.service == service && s.name == name);
            if has("autopost-api", "request") && has("autopost-worker", "RunActivity:arm") {
                break (trace, received);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no trace from request to platform call: {:?}",
            received.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The workflow start is in it too: the API's Temporal client joined the request's trace.
    assert!(trace.iter().any(|s| s.service == "autopost-api" && s.name.starts_with("StartWorkflow")), "{trace:#?}");
    for span in &received {
        for attribute in &span.attributes {
            assert!(
                !attribute.contains(token) && !attribute.to_lowercase().contains("bearer"),
                "{} holds a secret: {attribute}",
                span.name
            );
        }
    }
    app.kill_worker().await;
}
