//! Normal answers: JSON and SSE completions, the model list, routing errors,
//! the dashboard over HTTP, and HTTP/2.

mod common;

use common::*;
use http::{StatusCode, Version};
use sturdy_faults::FaultServer;

#[tokio::test]
async fn answers_json_completion_with_content_length_and_echoed_model() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let reply = ok_exchange(
        &client,
        chat(
            &server.base_url(),
            r#"{"model":"gpt-echo","messages":[]}"#,
            &[],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body_error.is_none());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body().len().to_string().as_str())
    );
    let json = reply.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-echo");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(server.dashboard(), dashboard(1, &[(200, 1)], &[]));
}

#[tokio::test]
async fn streams_sse_chunks_as_separate_frames_ending_with_done() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let reply = ok_exchange(
        &client,
        chat(
            &server.base_url(),
            r#"{"model":"gpt-echo","stream":true}"#,
            &[],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body_error.is_none());
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(reply.header("content-length").is_none());
    assert_eq!(reply.frames.len(), 6, "5 chunks and [DONE], one frame each");
    for (_, frame) in &reply.frames[..5] {
        let text = std::str::from_utf8(frame).unwrap();
        let json = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one whole SSE event per frame");
        let chunk: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-echo");
    }
    assert_eq!(&reply.frames[5].1[..], b"data: [DONE]\n\n");
    assert_eq!(server.dashboard(), dashboard(1, &[(200, 1)], &[]));
}

#[tokio::test]
async fn chunks_param_sets_the_stream_length() {
    let server = FaultServer::builder()
        .params(sturdy_faults::FaultParams {
            chunks: 2,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let client = client();
    let reply = ok_exchange(
        &client,
        scripted(&server.base_url(), true, "c", "200;chunks=3"),
    )
    .await;
    assert_eq!(reply.frames.len(), 4);
    let reply = ok_exchange(&client, chat(&server.base_url(), r#"{"stream":true}"#, &[])).await;
    assert_eq!(reply.frames.len(), 3, "server-wide default of 2 chunks");
    assert_eq!(server.dashboard(), dashboard(2, &[(200, 2)], &[]));
}

#[tokio::test]
async fn lists_models_and_404s_unknown_routes() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let models = ok_exchange(&client, get(&server.base_url(), "/v1/models")).await;
    assert_eq!(models.status, StatusCode::OK);
    assert_eq!(models.json()["object"], "list");
    assert!(models.json()["data"][0]["id"].is_string());

    let missing = ok_exchange(&client, get(&server.base_url(), "/v1/nothing")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json()["error"]["message"].is_string());
    assert!(missing.header("content-length").is_some());
    assert_eq!(server.dashboard(), dashboard(2, &[(200, 1), (404, 1)], &[]));
}

#[tokio::test]
async fn invalid_json_gets_400_invalid_request_error() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    for body in [
        "{not json",
        "[1,2]",
        r#"{"model":5}"#,
        r#"{"stream":"yes"}"#,
    ] {
        let reply = ok_exchange(&client, chat(&server.base_url(), body, &[])).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert!(reply.header("content-length").is_some());
    }
    assert_eq!(server.dashboard(), dashboard(4, &[(400, 4)], &[]));
}

#[tokio::test]
async fn dashboard_over_http_equals_snapshot() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    ok_exchange(&client, scripted(&server.base_url(), false, "d", "503")).await;
    ok_exchange(&client, scripted(&server.base_url(), false, "e", "200")).await;
    let reply = ok_exchange(&client, get(&server.base_url(), "/dashboard")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let over_http: sturdy_faults::Dashboard = serde_json::from_slice(&reply.body()).unwrap();
    assert_eq!(over_http, server.dashboard());
    assert_eq!(
        over_http,
        dashboard(2, &[(200, 1), (503, 1)], &[("status", 1)]),
        "the dashboard request itself is not counted"
    );
}

#[tokio::test]
async fn http2_gets_a_normal_answer_and_a_reset() {
    let server = FaultServer::start().await.unwrap();
    let client = h2_client();
    let reply = ok_exchange(&client, scripted(&server.base_url(), true, "h2", "200")).await;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body_error.is_none());
    assert_eq!(reply.frames.len(), 6);
    assert_eq!(&reply.frames[5].1[..], b"data: [DONE]\n\n");

    let reset = ok_exchange(&client, scripted(&server.base_url(), true, "h2r", "reset")).await;
    assert_eq!(reset.version, Version::HTTP_2);
    assert_eq!(reset.status, StatusCode::OK);
    assert_eq!(reset.frames.len(), 1, "the first chunk arrives");
    assert!(reset.body_error.is_some(), "then the stream is reset");

    let json = ok_exchange(&client, scripted(&server.base_url(), false, "h2j", "reset")).await;
    assert!(!json.body().is_empty());
    assert!(json.body_error.is_some());
    assert_eq!(
        server.dashboard(),
        dashboard(3, &[(200, 3)], &[("reset", 2)])
    );
}
