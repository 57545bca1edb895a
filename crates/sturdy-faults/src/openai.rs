//! The OpenAI-compatible payloads the server answers with when nothing goes
//! wrong: chat completions (JSON and SSE chunks), the model list, and
//! OpenAI-style error bodies. Pure functions from request to bytes; `respond`
//! decides when and how they are delivered. (Batch and file objects depend
//! on the jobs' state: `jobs` builds them.)

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

/// The model named in the model list and echoed when a request names none.
pub(crate) const DEFAULT_MODEL: &str = "sturdy-echo";

/// The SSE event that ends every stream.
pub(crate) const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// Words the fake model says, one per chunk, cycling.
const WORDS: [&str; 8] = [
    "Sturdy", " clients", " retry", " what", " is", " safe", " to", " retry.",
];

/// The parts of a chat completion request the server looks at.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) stream: bool,
}

impl ChatRequest {
    /// Parses a request body; the error is a message for a 400.
    pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| "request body must be a JSON object".to_owned())?;
        let model = match object.get("model") {
            None | Some(Value::Null) => DEFAULT_MODEL.to_owned(),
            Some(Value::String(model)) => model.clone(),
            Some(_) => return Err("'model' must be a string".to_owned()),
        };
        let stream = match object.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => return Err("'stream' must be a boolean".to_owned()),
        };
        Ok(ChatRequest { model, stream })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn content(chunks: usize) -> String {
    WORDS.iter().cycle().take(chunks.max(1)).copied().collect()
}

/// A non-streamed `chat.completion` whose content is what `chunks` stream
/// chunks would have said.
pub(crate) fn chat_completion(id: u64, model: &str, chunks: usize) -> Bytes {
    to_bytes(&chat_completion_value(
        &format!("chatcmpl-sturdy-{id}"),
        model,
        chunks,
        unix_now(),
    ))
}

/// The `chat.completion` object of [`chat_completion`], with its ID and
/// creation time given (a batch's output file holds them).
pub(crate) fn chat_completion_value(id: &str, model: &str, chunks: usize, created: u64) -> Value {
    let completion_tokens = chunks.max(1);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content(chunks) },
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": 8,
            "completion_tokens": completion_tokens,
            "total_tokens": 8 + completion_tokens,
        },
    })
}

/// `chunks` SSE events (`data: {chat.completion.chunk}\n\n`) followed by
/// `data: [DONE]\n\n`, one `Bytes` per event.
pub(crate) fn chat_stream(id: u64, model: &str, chunks: usize) -> Vec<Bytes> {
    let created = unix_now();
    let chunks = chunks.max(1);
    let mut events: Vec<Bytes> = WORDS
        .iter()
        .cycle()
        .take(chunks)
        .enumerate()
        .map(|(i, word)| {
            let delta = if i == 0 {
                json!({ "role": "assistant", "content": word })
            } else {
                json!({ "content": word })
            };
            let finish_reason = if i + 1 == chunks {
                json!("stop")
            } else {
                Value::Null
            };
            let chunk = json!({
                "id": format!("chatcmpl-sturdy-{id}"),
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
            });
            Bytes::from(format!("data: {chunk}\n\n"))
        })
        .collect();
    events.push(Bytes::from_static(SSE_DONE));
    events
}

/// The `GET /v1/models` list.
pub(crate) fn models() -> Bytes {
    to_bytes(&json!({
        "object": "list",
        "data": [{
            "id": DEFAULT_MODEL,
            "object": "model",
            "created": 0,
            "owned_by": "sturdy-faults",
        }],
    }))
}

/// An OpenAI-style error body: `{"error":{"message","type","param","code"}}`;
/// a 429 is a rate limit (`rate_limit_exceeded`), as OpenAI sends it.
pub(crate) fn error(status: StatusCode, message: &str) -> Bytes {
    let (kind, code) = match status.as_u16() {
        429 => ("requests", json!("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", json!(status.as_u16())),
        _ => ("server_error", json!(status.as_u16())),
    };
    to_bytes(&json!({
        "error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": code,
        },
    }))
}

/// OpenAI's answer when the account has no credit left (sent with a 429).
pub(crate) fn quota_error() -> Bytes {
    to_bytes(&json!({
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota",
            "param": null,
            "code": "insufficient_quota",
        },
    }))
}

/// An error sent inside a stream that had begun: one SSE event.
pub(crate) fn error_event(quota: bool) -> Bytes {
    let error = if quota {
        json!({ "message": "quota exceeded", "type": "insufficient_quota", "code": "insufficient_quota" })
    } else {
        json!({ "message": "the model failed mid-stream", "type": "server_error", "code": null })
    };
    Bytes::from(format!("data: {}\n\n", json!({ "error": error })))
}
