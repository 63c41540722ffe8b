//! `autopost replay`: replays workflow histories against this build's workflows, the ones a
//! production worker registers, to prove a change still replays what is running (before a
//! deploy) or to reproduce a failing run (after an incident).
//!
//! Histories come from the server (by workflow id) or from files in any of the formats people
//! have: proto3 JSON as the Temporal CLI (`temporal workflow show --output json`) and the Web UI's
//! download write it, the SDK's own JSON, and binary protobuf. Proto3 JSON is decoded through
//! the protobuf descriptors (prost-reflect), including the shorthand payloads the server's HTTP
//! API writes by default (a payload printed as its decoded JSON value).

use std::path::Path;

use anyhow::Context;
use autopost_workflows::PublishPostWorkflow;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor};
use serde::Serialize;
use serde_json::{Value, json};
use temporalio_client::{Client, WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_common::protos::temporal::api::{
    enums::v1::EventType,
    history::v1::{History, HistoryEvent},
};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

static DESCRIPTORS: &[u8] = include_bytes!(env!("TEMPORAL_DESCRIPTORS"));

/// How a history file was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Proto3 JSON: the Temporal CLI, the Web UI's download, the server's HTTP API.
    Proto3Json,
    /// The Rust SDK's serializer (`WorkflowHistory::to_json`): snake_case field names.
    SdkJson,
    /// Binary protobuf (`temporal.api.history.v1.History`).
    Protobuf,
}

/// Reads a history in any supported format; the format is detected, not named.
pub fn decode(bytes: &[u8]) -> anyhow::Result<(Format, History)> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'[')) {
        let history = History::decode(bytes).context("not JSON, and not a binary protobuf History")?;
        anyhow::ensure!(!history.events.is_empty(), "a binary protobuf History without events");
        return Ok((Format::Protobuf, history));
    }
    let value: Value = serde_json::from_slice(bytes).context("not valid JSON")?;
    let first_event = match &value {
        Value::Array(events) => events.first(),
        other => other.get("events").or_else(|| other.pointer("/history/events")).and_then(|e| e.get(0)),
    }
    .context("no events: expected {\"events\": [...]} or a list of events")?;
    if first_event.get("event_id").is_some() {
        let history: History = serde_json::from_value(value).context("reading the SDK's history JSON")?;
        return Ok((Format::SdkJson, history));
    }
    Ok((Format::Proto3Json, from_proto3_json(value)?))
}

/// Proto3 JSON to `History`, through the message descriptors.
pub fn from_proto3_json(mut value: Value) -> anyhow::Result<History> {
    let pool = DescriptorPool::decode(DESCRIPTORS).context("the compiled Temporal descriptors")?;
    let history = pool.get_message_by_name(&History::full_name()).context("no History descriptor")?;
    if value.is_array() {
        value = json!({ "events": value });
    } else if let Some(inner) = value.get_mut("history") {
        // A page of the server's HTTP API: {"history": {"events": [...]}, "nextPageToken"}.
        value = inner.take();
    }
    expand_shorthand(&history, &mut value);
    // Fields a newer server added are skipped rather than fatal; an event type this build does
    // not know is refused below, since skipping one would replay a different history.
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let message = DynamicMessage::deserialize_with_options(history, value.clone(), &options).context("reading proto3 JSON")?;
    let history: History = message.transcode_to().context("converting to the SDK's History")?;
    let declared = value["events"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(history.events.len() == declared, "the history has {declared} events but {} were read", history.events.len());
    if let Some(unknown) = history.events.iter().find(|e| e.event_type == 0) {
        anyhow::bail!("event {} has an event type this build does not know", unknown.event_id);
    }
    Ok(history)
}

/// Turns shorthand payloads (a payload written as its decoded JSON value, a `Payloads` as a
/// bare list) back into `{metadata, data}`, walking the message by its descriptor.
fn expand_shorthand(message: &MessageDescriptor, value: &mut Value) {
    let Value::Object(fields) = value else { return };
    for (name, field_value) in fields.iter_mut() {
        let Some(field) = message.get_field_by_json_name(name).or_else(|| message.get_field_by_name(name)) else { continue };
        let Kind::Message(inner) = field.kind() else { continue };
        if field.is_map() {
            if let (Kind::Message(entry), Value::Object(entries)) = (inner.map_entry_value_field().kind(), field_value) {
                entries.values_mut().for_each(|v| expand_message(&entry, v));
            }
        } else if field.is_list() {
            if let Value::Array(items) = field_value {
                items.iter_mut().for_each(|v| expand_message(&inner, v));
            }
        } else {
            expand_message(&inner, field_value);
        }
    }
}

fn expand_message(message: &MessageDescriptor, value: &mut Value) {
    match message.full_name() {
        "temporal.api.common.v1.Payloads" if value.is_array() => {
            let items = value.as_array_mut().map(std::mem::take).unwrap_or_default();
            // Payloads the server could not shorten (binary/null, say) stay in long form.
            let payloads: Vec<Value> = items.into_iter().map(|v| if is_long_form(&v) { v } else { payload(v) }).collect();
            *value = json!({ "payloads": payloads });
        }
        "temporal.api.common.v1.Payload" if !is_long_form(value) => *value = payload(value.take()),
        _ => expand_shorthand(message, value),
    }
}

/// `{"metadata": {...base64 strings}, "data": "base64"}`, as the SDKs' replayers expect.
fn is_long_form(value: &Value) -> bool {
    let Value::Object(fields) = value else { return false };
    fields.get("metadata").is_some_and(|m| m.as_object().is_some_and(|m| m.values().all(Value::is_string)))
        && fields.keys().all(|k| k == "metadata" || k == "data")
        && fields.get("data").is_none_or(Value::is_string)
}

/// One shorthand payload back in long form: `null` is `binary/null`, an object naming its
/// protobuf type is `json/protobuf`, anything else `json/plain`.
fn payload(value: Value) -> Value {
    let b64 = |bytes: &[u8]| Value::String(BASE64.encode(bytes));
    match value {
        Value::Null => json!({ "metadata": { "encoding": b64(b"binary/null") } }),
        Value::Object(mut fields) if fields.contains_key("_protoMessageType") => {
            let message_type = fields.remove("_protoMessageType").and_then(|t| t.as_str().map(str::to_owned)).unwrap_or_default();
            let data = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
            json!({ "metadata": { "encoding": b64(b"json/protobuf"), "messageType": b64(message_type.as_bytes()) }, "data": b64(&data) })
        }
        other => json!({ "metadata": { "encoding": b64(b"json/plain") }, "data": b64(&serde_json::to_vec(&other).unwrap_or_default()) }),
    }
}

/// A history to replay and where it came from.
pub struct Input {
    /// The file, or `workflow ID`.
    pub source: String,
    pub format: Option<Format>,
    pub history: History,
}

/// A replayer with exactly the workflows a production worker registers.
pub fn replayer() -> anyhow::Result<WorkflowReplayer> {
    Ok(WorkflowReplayer::new(WorkflowReplayerOptions::new().register_workflow::<PublishPostWorkflow>()?.build())?)
}

/// What replaying one history showed.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The file, or `workflow-id`.
    pub source: String,
    pub workflow_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    pub result: Verdict,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    /// The code decided differently from the history at `event_id`.
    Nondeterministic {
        event_id: Option<i64>,
        event_type: Option<String>,
        message: String,
    },
    /// The history could not be read or replayed.
    Failed {
        message: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.workflow_id.as_deref().unwrap_or("?");
        match &self.result {
            Verdict::Ok => write!(f, "ok                {id}  ({})", self.source),
            Verdict::Nondeterministic { event_id, event_type, message } => {
                let at = match (event_id, event_type) {
                    (Some(id), Some(kind)) => format!("at event {id} ({kind})"),
                    _ => "".into(),
                };
                write!(f, "nondeterministic  {id}  ({}) {at}: {message}", self.source)
            }
            Verdict::Failed { message } => write!(f, "failed            {id}  ({}): {message}", self.source),
        }
    }
}

/// A replay takes milliseconds; one that waits this long is waiting for history that will not come.
const REPLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Replays each history and says how it went.
pub async fn replay(inputs: Vec<Input>) -> anyhow::Result<Vec<Outcome>> {
    let replayer = replayer()?;
    let mut outcomes = Vec::with_capacity(inputs.len());
    for Input { source, format, history } in inputs {
        let events = history.events.clone();
        let history = WorkflowHistory::from(history);
        let workflow_id = history.workflow_id().map(str::to_owned);
        // A run fetched before its first workflow task started holds no decision of the code's
        // to check, and the replayer would wait for one forever.
        if !events.iter().any(|e| e.event_type == EventType::WorkflowTaskStarted as i32) {
            outcomes.push(Outcome { source, workflow_id, format, result: Verdict::Ok });
            continue;
        }
        let mut result = match tokio::time::timeout(REPLAY_TIMEOUT, replayer.replay_workflow(history)).await {
            Ok(Ok(())) => Verdict::Ok,
            Ok(Err(error)) => verdict(&error.to_string(), matches_nondeterminism(&error)),
            Err(_) => Verdict::Failed {
                message: format!(
                    "the replay did not finish within {REPLAY_TIMEOUT:?}: the history may end in the middle of a workflow task"
                ),
            },
        };
        if let Verdict::Nondeterministic { event_id: event_id @ None, event_type, message } = &mut result
            && let Some(event) = first_disagreeing_event(&replayer, &events, message).await
        {
            *event_id = Some(event.event_id);
            *event_type = Some(event_type_name(event.event_type));
        }
        outcomes.push(Outcome { source, workflow_id, format, result });
    }
    Ok(outcomes)
}

/// Core does not always name the event it disagrees with. Replaying prefixes that end at each
/// workflow task finds the first task whose commands disagree; the history's answer to them is
/// the first event after the task completed. Only run after a failure; each replay takes
/// milliseconds (and is bounded, since a replayer waiting for more history would never end).
async fn first_disagreeing_event<'e>(replayer: &WorkflowReplayer, events: &'e [HistoryEvent], message: &str) -> Option<&'e HistoryEvent> {
    let task_started = EventType::WorkflowTaskStarted as i32;
    let task_completed = EventType::WorkflowTaskCompleted as i32;
    let ends = events.iter().enumerate().filter(|(_, e)| e.event_type == task_started).map(|(i, _)| i + 1).chain([events.len()]);
    for end in ends {
        let prefix = WorkflowHistory::from(History { events: events[..end].to_vec() });
        let failed = match tokio::time::timeout(std::time::Duration::from_secs(10), replayer.replay_workflow(prefix)).await {
            Ok(Err(error)) => matches_nondeterminism(&error),
            Ok(Ok(())) => false,
            Err(_) => return None,
        };
        if failed {
            let last_completed = events[..end].iter().rposition(|e| e.event_type == task_completed)?;
            let window = &events[last_completed + 1..end];
            // Core quotes what it compared ('an-activity-type'): the event holding it, if any.
            let quoted: Vec<&str> = message.split('\'').skip(1).step_by(2).filter(|q| !q.is_empty()).collect();
            let named = window.iter().find(|e| {
                let text = format!("{:?}", e.attributes);
                quoted.iter().any(|q| text.contains(&format!("\"{q}\"")))
            });
            return named.or(window.first());
        }
    }
    None
}

fn event_type_name(event_type: i32) -> String {
    EventType::try_from(event_type).map_or_else(|_| format!("EventType({event_type})"), |t| t.as_str_name().to_owned())
}

fn matches_nondeterminism(error: &temporalio_sdk::workflow_replayer::WorkflowReplayError) -> bool {
    let text = format!("{error:?}");
    text.contains("Nondeterminism") || text.contains("TMPRL1100")
}

/// Core names the event as `HistoryEvent(id: 5, ActivityTaskScheduled)` in its messages.
fn verdict(message: &str, nondeterministic: bool) -> Verdict {
    if !nondeterministic {
        return Verdict::Failed { message: message.to_owned() };
    }
    // Core's own sentence, without the activation failure wrapped around it.
    let message = match message.find("[TMPRL1100]") {
        Some(start) => {
            let rest = &message[start..];
            rest.find("\", source").map_or(rest, |end| &rest[..end]).replace("\\'", "'")
        }
        None => message.to_owned(),
    };
    let message = message.as_str();
    let (event_id, event_type) = match message.split_once("HistoryEvent(id: ") {
        Some((_, rest)) => {
            let (id, rest) = rest.split_once(", ").unwrap_or((rest, ""));
            let kind: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            (id.parse().ok(), (!kind.is_empty()).then_some(kind))
        }
        None => (None, None),
    };
    Verdict::Nondeterministic { event_id, event_type, message: message.to_owned() }
}

/// Reads history files; an unreadable file is a `failed` outcome, not an abort.
pub fn read_files(paths: &[impl AsRef<Path>]) -> (Vec<Input>, Vec<Outcome>) {
    let (mut histories, mut failures) = (Vec::new(), Vec::new());
    for path in paths {
        let source = path.as_ref().display().to_string();
        match std::fs::read(path).map_err(anyhow::Error::from).and_then(|bytes| decode(&bytes)) {
            Ok((format, history)) => histories.push(Input { source, format: Some(format), history }),
            Err(e) => {
                failures.push(Outcome { source, workflow_id: None, format: None, result: Verdict::Failed { message: format!("{e:#}") } })
            }
        }
    }
    (histories, failures)
}

/// The history of `workflow_id`'s run `run_id` (the latest run without one), from the server.
pub async fn fetch(client: &Client, workflow_id: &str, run_id: Option<&str>) -> anyhow::Result<History> {
    use temporalio_client::{NamespacedClient, WorkflowExecutionInfo};
    let handle = WorkflowExecutionInfo::builder()
        .namespace(client.namespace())
        .workflow_id(workflow_id)
        .maybe_run_id(run_id.map(str::to_owned))
        .build()
        .bind_untyped(client.clone());
    let events = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .with_context(|| format!("fetching the history of {workflow_id}"))?;
    Ok(History { events })
}

/// The histories of the workflows a visibility query returns (at most `limit`), fetched
/// `concurrency` at a time, with progress on stderr. A history that cannot be fetched is a
/// `failed` outcome.
pub async fn fetch_query(
    client: &Client,
    query: &str,
    limit: Option<usize>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Input>, Vec<Outcome>)> {
    use futures::{StreamExt, TryStreamExt};
    let options = temporalio_client::WorkflowListOptions::builder().maybe_limit(limit).build();
    // Each matched run, not the workflow's latest one: the query may match an earlier run.
    let ids: Vec<(String, String)> = client
        .list_workflows(query, options)
        .map_ok(|e| (e.id().to_owned(), e.run_id().to_owned()))
        .try_collect()
        .await
        .context("running the visibility query")?;
    let total = ids.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(String, anyhow::Result<History>)> = futures::stream::iter(ids)
        .map(|(id, run_id)| {
            let done = &done;
            async move {
                let history = fetch(client, &id, Some(&run_id)).await;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                eprint!("\rfetched {n}/{total}");
                (id, history)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    if total > 0 {
        eprintln!();
    }
    let (mut inputs, mut failures) = (Vec::new(), Vec::new());
    for (id, history) in results {
        let source = format!("workflow {id}");
        match history {
            Ok(history) => inputs.push(Input { source, format: None, history }),
            Err(e) => failures.push(Outcome {
                source,
                workflow_id: Some(id),
                format: None,
                result: Verdict::Failed { message: format!("{e:#}") },
            }),
        }
    }
    inputs.sort_by(|a, b| a.source.cmp(&b.source));
    Ok((inputs, failures))
}

/// `history` as binary protobuf (`temporal.api.history.v1.History`), which `decode` reads back.
pub fn to_protobuf(history: &History) -> Vec<u8> {
    history.encode_to_vec()
}

/// Writes `history` where `replay FILE` reads it back (SDK JSON).
pub fn save(dir: &Path, workflow_id: &str, history: &History) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name: String = workflow_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(history)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_payloads_are_expanded_to_their_long_form() {
        assert_eq!(payload(json!(null))["metadata"]["encoding"], BASE64.encode("binary/null"));
        let plain = payload(json!({"job_id": "x"}));
        assert_eq!(plain["metadata"]["encoding"], BASE64.encode("json/plain"));
        assert_eq!(BASE64.decode(plain["data"].as_str().unwrap()).unwrap(), br#"{"job_id":"x"}"#);
        assert!(is_long_form(&plain));
        assert!(!is_long_form(&json!({"data": 1})));
    }

    #[test]
    fn the_event_of_a_nondeterminism_is_named() {
        let verdict =
            verdict("[TMPRL1100] Nondeterminism error: No command scheduled for event HistoryEvent(id: 5, ActivityTaskScheduled)", true);
        assert_eq!(
            verdict,
            Verdict::Nondeterministic {
                event_id: Some(5),
                event_type: Some("ActivityTaskScheduled".into()),
                message: "[TMPRL1100] Nondeterminism error: No command scheduled for event HistoryEvent(id: 5, ActivityTaskScheduled)"
                    .into()
            }
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(decode(b"{}").unwrap_err().to_string().contains("no events"));
        assert!(decode(b"\x00\x01garbage").is_err());
    }
}
