//! async-openai's own `Client`, with sturdy's service installed, against
//! the fault server on loopback (it speaks the OpenAI wire format): every
//! wait bounded, every fault scripted per call.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::traits::RequestOptionsBuilder;
use async_openai::types::batches::{BatchCompletionWindow, BatchEndpoint, BatchRequest};
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::types::files::{CreateFileRequest, FileInput, FilePurpose};
use futures_util::StreamExt;
use sturdy::metrics::{Scope, SnapshotRecorder};
use sturdy::retry::{Backoff, RetryError};
use sturdy::{FailureKind, Reach};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use sturdy_openai::SturdyService;

const BOUND: Duration = Duration::from_secs(20);

/// An async-openai client on `server` through sturdy, with millisecond
/// backoff; and the recorder it writes to.
fn client(server: &FaultServer) -> (Client<OpenAIConfig>, SnapshotRecorder) {
    let svc = SturdyService::builder()
        .stack(|s| {
            s.map_retry(|r| {
                r.backoff(Backoff::guide(
                    Duration::from_millis(2),
                    Duration::from_millis(2),
                ))
            })
        })
        .client(sturdy::client().no_proxy())
        .build()
        .expect("a valid service");
    let recorder = svc.recorder().clone();
    let config = OpenAIConfig::new()
        .with_api_base(server.base_url() + "/v1")
        .with_api_key("sk-test-not-a-secret");
    (Client::with_config(config).with_http_service(svc), recorder)
}

fn chat(stream: bool) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("sturdy-test")
        .stream(stream)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("say ok")
            .build()
            .expect("a message")
            .into()])
        .build()
        .expect("a request")
}

/// The `RetryError` inside an error sturdy ended a call with.
fn retry_error(err: &OpenAIError) -> &RetryError {
    match err {
        OpenAIError::Boxed(e) => e
            .downcast_ref::<RetryError>()
            .unwrap_or_else(|| panic!("not a RetryError: {e:?}")),
        other => panic!("not sturdy's error: {other:?}"),
    }
}

#[tokio::test]
async fn a_chat_completion_recovers_from_a_503_a_close_and_a_cut_body() {
    let server = FaultServer::start().await.expect("fault server");
    let (client, recorder) = client(&server);
    let chat_api = client
        .chat()
        .header(CALL_HEADER, "recover")
        .unwrap()
        .header(FAULT_HEADER, "503, close, reset, 200;chunks=3")
        .unwrap();
    let resp = tokio::time::timeout(BOUND, chat_api.create(chat(false)))
        .await
        .expect("bounded")
        .expect("recovered");
    let text = resp.choices[0].message.content.clone().unwrap_or_default();
    assert!(!text.is_empty());

    let s = recorder.snapshot();
    assert_eq!(s.started(Scope::Call), 1);
    assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 1);
    assert_eq!(s.started(Scope::Attempt), 4);
    assert_eq!(s.count(Scope::Attempt, "503", Reach::Acknowledged), 1);
    assert_eq!(s.count(Scope::Attempt, "reset", Reach::Unknown), 1);
    assert_eq!(
        s.count(Scope::Attempt, "response_body", Reach::Acknowledged),
        1
    );
    // What the provider's dashboard shows: every attempt but none it never
    // saw; here all four reached it.
    let dashboard = server.dashboard();
    assert_eq!(dashboard.received, 4);
    assert_eq!(
        dashboard.responded(200),
        2,
        "the cut answer, then the whole one"
    );
    assert_eq!(dashboard.responded(503), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_reset_before_its_first_token_is_retried_and_every_chunk_arrives_in_order() {
    let server = FaultServer::start().await.expect("fault server");
    let (client, recorder) = client(&server);
    // The same words, not streamed: what the stream must spell.
    let whole = client
        .chat()
        .header(FAULT_HEADER, "200;chunks=6")
        .unwrap()
        .create(chat(false))
        .await
        .expect("a plain answer");
    let want = whole.choices[0].message.content.clone().unwrap_or_default();

    let chat_api = client
        .chat()
        .header(CALL_HEADER, "stream")
        .unwrap()
        .header(FAULT_HEADER, "reset;at=0, 200;chunks=6")
        .unwrap();
    let mut stream = tokio::time::timeout(BOUND, chat_api.create_stream(chat(true)))
        .await
        .expect("bounded")
        .expect("a stream");
    let mut got = String::new();
    let mut chunks = 0;
    while let Some(chunk) = tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("bounded")
    {
        let chunk = chunk.expect("a clean stream");
        chunks += 1;
        if let Some(text) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            got.push_str(&text);
        }
    }
    assert_eq!(chunks, 6);
    assert_eq!(got, want, "every chunk, in order, once");
    // async-openai stops reading at `data: [DONE]`, before the body's end:
    // the stream is complete, not cancelled.
    let s = recorder.snapshot();
    // The plain call, then the stream's two attempts.
    assert_eq!(s.started(Scope::Attempt), 3);
    assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 2);
    assert_eq!(s.retries().get("response_body"), Some(&1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_429_out_of_quota_is_async_openais_api_error_after_one_attempt() {
    let server = FaultServer::start().await.expect("fault server");
    let (client, recorder) = client(&server);
    let chat_api = client
        .chat()
        .header(CALL_HEADER, "quota")
        .unwrap()
        .header(FAULT_HEADER, "429;quota=true, 200")
        .unwrap();
    let err = tokio::time::timeout(BOUND, chat_api.create(chat(false)))
        .await
        .expect("bounded")
        .expect_err("no credit left");
    match &err {
        OpenAIError::ApiError(api) => {
            assert_eq!(api.status_code.as_u16(), 429);
            assert_eq!(api.api_error.code.as_deref(), Some("insufficient_quota"));
        }
        other => panic!("not an API error: {other:?}"),
    }
    let s = recorder.snapshot();
    assert_eq!(s.started(Scope::Attempt), 1);
    assert_eq!(
        s.count(Scope::Call, "insufficient_quota", Reach::Acknowledged),
        1
    );
    assert_eq!(server.dashboard().received, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_or_an_upload_that_may_have_reached_the_server_is_not_sent_again() {
    let server = FaultServer::start().await.expect("fault server");
    let (client, recorder) = client(&server);

    let batches = client
        .batches()
        .header(CALL_HEADER, "batch")
        .unwrap()
        .header(FAULT_HEADER, "close, 200")
        .unwrap();
    let request = BatchRequest {
        input_file_id: "file-1".into(),
        endpoint: BatchEndpoint::V1ChatCompletions,
        completion_window: BatchCompletionWindow::W24H,
        metadata: None,
        output_expires_after: None,
    };
    let err = tokio::time::timeout(BOUND, batches.create(request))
        .await
        .expect("bounded")
        .expect_err("not repeated");
    let retry = retry_error(&err);
    assert_eq!((retry.attempts(), retry.failure()), (1, FailureKind::Reset));

    let files = client
        .files()
        .header(CALL_HEADER, "upload")
        .unwrap()
        .header(FAULT_HEADER, "close, 200")
        .unwrap();
    let upload = CreateFileRequest {
        file: FileInput::from_bytes("requests.jsonl".into(), "{}\n".repeat(1000).into()),
        purpose: FilePurpose::Batch,
        expires_after: None,
    };
    let err = tokio::time::timeout(BOUND, files.create(upload))
        .await
        .expect("bounded")
        .expect_err("not repeated");
    assert_eq!(retry_error(&err).attempts(), 1);

    let s = recorder.snapshot();
    assert_eq!(s.started(Scope::Attempt), 2);
    assert_eq!(s.count(Scope::Call, "reset", Reach::Unknown), 2);
    assert_eq!(s.possibly_duplicated(), 0);
    assert_eq!(
        server.dashboard().received,
        2,
        "one of each, never a second"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_steering_header_sets_the_call_and_never_reaches_the_server() {
    let server = FaultServer::start().await.expect("fault server");
    let (client, recorder) = client(&server);
    // No retries for this call: the 503 is the answer.
    let chat_api = client
        .chat()
        .header(sturdy_openai::MAX_RETRIES_HEADER, "0")
        .unwrap()
        .header(sturdy_openai::WORKLOAD_HEADER, "long_context")
        .unwrap()
        .header(FAULT_HEADER, "503")
        .unwrap();
    let err = tokio::time::timeout(BOUND, chat_api.create(chat(false)))
        .await
        .expect("bounded")
        .expect_err("a 503, not retried");
    assert!(matches!(err, OpenAIError::ApiError(_)), "{err:?}");
    let s = recorder.snapshot();
    assert_eq!(s.started(Scope::Attempt), 1);
    assert_eq!(
        s.by_workload(
            Scope::Call,
            sturdy::Workload::LongContext,
            Reach::Acknowledged
        ),
        1
    );

    // A value that means nothing: the call is refused before it is sent.
    let bad = client
        .chat()
        .header(sturdy_openai::WORKLOAD_HEADER, "siesta")
        .unwrap();
    let err = bad.create(chat(false)).await.expect_err("refused");
    let OpenAIError::Boxed(e) = &err else {
        panic!("not sturdy's error: {err:?}");
    };
    assert!(e.is::<sturdy_openai::InvalidSteering>(), "{e:?}");
    assert_eq!(server.dashboard().received, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn over_a_reqwest_client_of_ones_own_the_same_faults_are_recovered_and_labelled() {
    let server = FaultServer::start().await.expect("fault server");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    let svc = SturdyService::builder()
        .stack(|s| {
            s.map_retry(|r| {
                r.backoff(Backoff::guide(
                    Duration::from_millis(2),
                    Duration::from_millis(2),
                ))
            })
        })
        .reqwest_client(http)
        .build()
        .expect("a valid service");
    let recorder = svc.recorder().clone();
    let config = OpenAIConfig::new()
        .with_api_base(server.base_url() + "/v1")
        .with_api_key("sk-test-not-a-secret");
    let client = Client::with_config(config).with_http_service(svc);
    let chat_api = client
        .chat()
        .header(CALL_HEADER, "reqwest")
        .unwrap()
        .header(FAULT_HEADER, "503, close, 200")
        .unwrap();
    let resp = tokio::time::timeout(BOUND, chat_api.create(chat(false)))
        .await
        .expect("bounded")
        .expect("recovered");
    assert!(!resp.choices.is_empty());
    let s = recorder.snapshot();
    assert_eq!(s.started(Scope::Attempt), 3);
    assert_eq!(s.count(Scope::Attempt, "503", Reach::Acknowledged), 1);
    assert_eq!(s.count(Scope::Attempt, "reset", Reach::Unknown), 1);
    assert_eq!(server.dashboard().received, 3);
    server.shutdown().await;
}
