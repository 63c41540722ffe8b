//! Issue 11: no request makes the API answer `500`. Property-based: request bodies generated
//! from valid ones with fields replaced, dropped or added (arbitrary JSON, control characters,
//! huge strings, lone UTF-16 surrogates), raw bytes, query strings and header values, against a
//! real API and database. Every answer must be a 2xx or a 4xx with our error body.

use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use serde_json::{Value, json};

use crate::common::{Options, TestApp, link_body};

/// Requests per route: deterministic (a fixed seed), so a failure reproduces.
const CASES: usize = 250;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        Just(String::new()),
        Just("\u{0}".to_owned()),
        Just("a\u{0}b".to_owned()),
        Just("x".repeat(70_000)),
        Just("2026-13-45T99:99:99Z".to_owned()),
        Just("https://127.0.0.1/a.jpg".to_owned()),
        Just("http://[::1]:1/a.mp4".to_owned()),
        Just("../../../etc/passwd".to_owned()),
        Just("\u{202e}\u{fffd}\u{1f600}".to_owned()),
        Just("00000000-0000-0000-0000-000000000000".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(text(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body with one to three edits: a field replaced by anything, dropped, or added.
fn mutated(valid: Value) -> impl Strategy<Value = Value> {
    let fields: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
    let edit = (0..fields.len() + 1, 0u8..3, json_value(), text());
    vec(edit, 1..4).prop_map(move |edits| {
        let mut body = valid.clone();
        let object = body.as_object_mut().unwrap();
        for (index, kind, value, name) in edits {
            let field = fields.get(index).cloned().unwrap_or(name);
            match kind {
                0 => {
                    object.insert(field, value);
                }
                1 => {
                    object.remove(&field);
                }
                _ => {
                    // Inside the media list, where most of the rules are.
                    if let Some(Value::Array(items)) = object.get_mut("media")
                        && let Some(Value::Object(item)) = items.first_mut()
                    {
                        item.insert(field, value);
                    } else {
                        object.insert(field, value);
                    }
                }
            }
        }
        body
    })
}

/// Raw bodies: valid JSON with a lone surrogate or a NUL escape spliced into a string, and
/// arbitrary bytes.
fn raw_body(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    let text = valid.to_string();
    prop_oneof![
        (0..text.len(), prop_oneof![Just("\\ud800"), Just("\\udfff"), Just("\\u0000"), Just("\\ud83d\\u0041")]).prop_map(
            move |(at, splice)| {
                // Only inside a string value, so the JSON stays well-formed.
                let quote = text[at..].find("\":\"").map(|i| at + i + 3).unwrap_or(text.len());
                let mut spliced = text.clone();
                if quote < text.len() {
                    spliced.insert_str(quote, splice);
                }
                spliced.into_bytes()
            }
        ),
        vec(any::<u8>(), 0..200),
    ]
}

struct Tally {
    requests: usize,
    statuses: std::collections::BTreeMap<u16, usize>,
}

impl Tally {
    async fn send(&mut self, what: &str, request: reqwest::RequestBuilder) {
        let response = match request.send().await {
            Ok(response) => response,
            // A request the client itself cannot build (an over-long URL) never reaches the API.
            Err(e) if e.is_builder() => return,
            Err(e) => panic!("{what}: {}", e.without_url()),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        self.requests += 1;
        *self.statuses.entry(status).or_default() += 1;
        assert!(status < 500, "{what} answered {status}: {body}");
        if status >= 400 {
            let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: a {status} without our error body: {body}"));
            assert!(error["error"]["code"].is_string(), "{what}: {body}");
        }
    }
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_generated_request_makes_the_api_answer_500() {
    // Without a worker a valid command is answered `202 pending` once the command timeout ends:
    // keep it short, what matters here is everything before.
    let app =
        TestApp::spawn_with(Options { worker: false, creator_writes_per_minute: 0, command_timeout: "100ms", ..Options::default() }).await;
    let started = std::time::Instant::now();
    let account = app.link_account("instagram", "fuzz.token").await;
    let job = app
        .schedule(
            &account,
            chrono::Utc::now() + chrono::Duration::days(1),
            "fuzz",
            json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]),
        )
        .await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    let mut runner =
        TestRunner::new_with_rng(Config::default(), proptest::test_runner::TestRng::deterministic_rng(Config::default().rng_algorithm));
    let mut tally = Tally { requests: 0, statuses: Default::default() };

    let create = json!({ "account_id": account, "publish_at": chrono::Utc::now() + chrono::Duration::days(2), "caption": "hello #fuzz",
                         "media": [{ "url": app.media_url("sample.jpg"), "kind": "image" }] });
    let routes: Vec<(&str, String, Value)> = vec![
        ("link", "/v1/accounts".into(), link_body("tiktok", "fuzz2.token")),
        ("create", "/v1/publish-jobs".into(), create),
        (
            "reschedule",
            format!("/v1/publish-jobs/{job_id}/reschedule"),
            json!({ "publish_at": chrono::Utc::now() + chrono::Duration::days(3) }),
        ),
    ];
    for (name, path, valid) in &routes {
        let bodies = mutated(valid.clone());
        let raw = raw_body(valid.clone());
        let keys = prop_oneof![Just(None), ".{0,300}".prop_map(Some)];
        for case in 0..CASES {
            let url = format!("{}{path}", app.api);
            let mut request = if case % 4 == 3 {
                app.http.post(&url).header("content-type", "application/json").body(sample(&mut runner, &raw))
            } else {
                app.http.post(&url).json(&sample(&mut runner, &bodies))
            };
            if let Some(key) = sample(&mut runner, &keys)
                && let Ok(value) = reqwest::header::HeaderValue::from_str(&key)
            {
                request = request.header("Idempotency-Key", value);
            }
            tally.send(name, request).await;
        }
        println!("fuzz: {name} done after {:?}", started.elapsed());
    }
    // The calendar's query string, and path ids.
    let params = vec(
        (prop_oneof![Just("status"), Just("channel"), Just("from"), Just("to"), Just("limit"), Just("cursor"), Just("x")], text()),
        0..4,
    );
    for _ in 0..CASES {
        let query: Vec<(&str, String)> = sample(&mut runner, &params);
        tally.send("list", app.http.get(format!("{}/v1/publish-jobs", app.api)).query(&query)).await;
        let id = sample(&mut runner, &".{0,80}");
        let id = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
        tally.send("get", app.http.get(format!("{}/v1/publish-jobs/{id}", app.api))).await;
    }
    println!("fuzz: {} requests in {:?}, answers by status: {:?}", tally.requests, started.elapsed(), tally.statuses);
    assert!(tally.statuses.keys().any(|s| *s == 201 || *s == 200), "some generated requests are valid");
    assert!(tally.statuses.contains_key(&422) && tally.statuses.contains_key(&400), "{:?}", tally.statuses);
}
