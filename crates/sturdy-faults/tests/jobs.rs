//! Files and batch jobs: uploads and their contents, jobs that move through
//! their states over time, scripted fates, cancels, lists, jobs that outlive
//! an outage, `close` doing the work before dropping the answer, and bad
//! input.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};

const BOUNDARY: &str = "sturdy-test-boundary-7";

/// Statuses a batch ends in.
const TERMINAL: [&str; 4] = ["completed", "failed", "expired", "cancelled"];

async fn server_with(duration: Duration) -> FaultServer {
    FaultServer::builder()
        .job_duration(duration)
        .start()
        .await
        .unwrap()
}

fn post(
    base: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("{base}{path}")).header("content-type", content_type);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).expect("test request")
}

fn create_request(base: &str, input: &str, metadata: Value) -> Request<Full<Bytes>> {
    let body = json!({
        "input_file_id": input,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": metadata,
    });
    post(
        base,
        "/v1/batches",
        "application/json",
        body.to_string(),
        &[],
    )
}

fn upload_request(
    base: &str,
    filename: &str,
    purpose: &str,
    content: &[u8],
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    post(
        base,
        "/v1/files",
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        body,
        headers,
    )
}

/// Sends `request`, expects `status` and a JSON body, returns it.
async fn json_of(client: &HttpClient, request: Request<Full<Bytes>>, status: StatusCode) -> Value {
    let reply = ok_exchange(client, request).await;
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body())
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

async fn create(client: &HttpClient, base: &str, input: &str, metadata: Value) -> Value {
    json_of(
        client,
        create_request(base, input, metadata),
        StatusCode::OK,
    )
    .await
}

async fn batch(client: &HttpClient, base: &str, id: &str) -> Value {
    json_of(
        client,
        get(base, &format!("/v1/batches/{id}")),
        StatusCode::OK,
    )
    .await
}

async fn cancel(client: &HttpClient, base: &str, id: &str) -> Value {
    let path = format!("/v1/batches/{id}/cancel");
    json_of(
        client,
        post(base, &path, "application/json", "", &[]),
        StatusCode::OK,
    )
    .await
}

async fn list(client: &HttpClient, base: &str, query: &str) -> Value {
    json_of(
        client,
        get(base, &format!("/v1/batches{query}")),
        StatusCode::OK,
    )
    .await
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect()
}

/// Polls batch `id` every 15 ms until it ends; every object seen, in order.
async fn poll_to_end(client: &HttpClient, base: &str, id: &str) -> Vec<Value> {
    within(async {
        let mut seen = Vec::new();
        loop {
            let object = batch(client, base, id).await;
            let done = TERMINAL.contains(&object["status"].as_str().unwrap());
            seen.push(object);
            if done {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
    .await
}

/// The distinct statuses of `seen`, in order.
fn statuses(seen: &[Value]) -> Vec<&str> {
    let mut statuses: Vec<&str> = seen.iter().map(|b| b["status"].as_str().unwrap()).collect();
    statuses.dedup();
    statuses
}

fn counts(object: &Value) -> (u64, u64, u64) {
    let counts = &object["request_counts"];
    (
        counts["total"].as_u64().unwrap(),
        counts["completed"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
    )
}

async fn content(client: &HttpClient, base: &str, id: &str) -> Vec<u8> {
    let reply = ok_exchange(client, get(base, &format!("/v1/files/{id}/content"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body().len().to_string().as_str())
    );
    reply.body()
}

fn jsonl(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_job_goes_from_validating_through_in_progress_and_finalizing_to_completed() {
    let server = server_with(Duration::from_secs(1)).await;
    let base = server.base_url();
    let client = client();
    let created = create(&client, &base, "file-unknown", Value::Null).await;
    assert_eq!(created["id"], "batch_1");
    assert_eq!(created["object"], "batch");
    assert_eq!(created["endpoint"], "/v1/chat/completions");
    assert_eq!(created["input_file_id"], "file-unknown");
    assert_eq!(created["completion_window"], "24h");
    assert_eq!(created["status"], "validating");
    assert_eq!(created["errors"], Value::Null);
    assert_eq!(created["output_file_id"], Value::Null);
    assert_eq!(created["error_file_id"], Value::Null);
    assert_eq!(created["in_progress_at"], Value::Null);
    assert_eq!(created["metadata"], Value::Null);
    let created_at = created["created_at"].as_u64().unwrap();
    assert_eq!(created["expires_at"].as_u64(), Some(created_at + 86_400));
    assert_eq!(counts(&created), (10, 0, 0), "an unknown input file: 10");

    let mut seen = vec![created];
    seen.extend(poll_to_end(&client, &base, "batch_1").await);
    assert_eq!(
        statuses(&seen),
        ["validating", "in_progress", "finalizing", "completed"]
    );
    let completed: Vec<u64> = seen.iter().map(|b| counts(b).1).collect();
    assert!(completed.is_sorted(), "{completed:?}");
    let mut growing: Vec<u64> = seen
        .iter()
        .filter(|b| b["status"] == "in_progress")
        .map(|b| counts(b).1)
        .collect();
    growing.dedup();
    assert!(
        growing.len() >= 2,
        "the count grows while in progress: {growing:?}"
    );

    let done = seen.last().unwrap();
    assert_eq!(counts(done), (10, 10, 0));
    assert_eq!(done["output_file_id"], "file-out-batch_1");
    for field in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[field].as_u64().unwrap() >= created_at, "{field}");
    }
    for field in ["failed_at", "expired_at", "cancelling_at", "cancelled_at"] {
        assert_eq!(done[field], Value::Null, "{field}");
    }

    let lines = jsonl(&content(&client, &base, "file-out-batch_1").await);
    assert_eq!(lines.len(), 10);
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("request-{}", k + 1));
        assert!(line["id"].is_string());
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["response"]["body"]["object"], "chat.completion");
    }
    // Looked at again, the same job and the same output file.
    let again = batch(&client, &base, "batch_1").await;
    assert_eq!(&again, done);
}

#[tokio::test]
async fn a_failed_fate_fails_the_job_at_half_time_with_an_injected_error() {
    let server = server_with(Duration::from_millis(400)).await;
    let base = server.base_url();
    let client = client();
    let began = Instant::now();
    let metadata = json!({"sturdy_fate": "failed", "team": "blue"});
    let created = create(&client, &base, "file-x", metadata.clone()).await;
    assert_eq!(created["metadata"], metadata);
    let seen = poll_to_end(&client, &base, "batch_1").await;
    assert!(began.elapsed() >= Duration::from_millis(200));
    let end = seen.last().unwrap();
    assert_eq!(end["status"], "failed");
    assert!(!statuses(&seen).contains(&"finalizing"));
    assert_eq!(end["errors"]["object"], "list");
    assert_eq!(end["errors"]["data"][0]["code"], "sturdy_injected");
    assert!(end["errors"]["data"][0]["message"].is_string());
    assert!(end["failed_at"].is_u64());
    assert_eq!(end["completed_at"], Value::Null);
    assert_eq!(end["output_file_id"], Value::Null);
    assert_eq!(counts(end), (10, 5, 0), "frozen where they were at 50 %");
}

#[tokio::test]
async fn an_expired_fate_expires_the_job_at_full_time_half_done() {
    let server = server_with(Duration::from_millis(400)).await;
    let base = server.base_url();
    let client = client();
    let began = Instant::now();
    create(&client, &base, "file-x", json!({"sturdy_fate": "expired"})).await;
    let seen = poll_to_end(&client, &base, "batch_1").await;
    assert!(began.elapsed() >= Duration::from_millis(400));
    let end = seen.last().unwrap();
    assert_eq!(end["status"], "expired");
    assert!(!statuses(&seen).contains(&"finalizing"));
    assert!(end["expired_at"].is_u64());
    assert_eq!(end["completed_at"], Value::Null);
    assert_eq!(end["output_file_id"], Value::Null);
    assert_eq!(counts(end), (10, 5, 0));
}

#[tokio::test]
async fn cancel_goes_through_cancelling_to_cancelled_and_leaves_ended_jobs_alone() {
    let server = server_with(Duration::from_secs(1)).await;
    let base = server.base_url();
    let client = client();
    create(&client, &base, "file-x", Value::Null).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let cancelling = cancel(&client, &base, "batch_1").await;
    assert_eq!(cancelling["status"], "cancelling");
    assert!(cancelling["cancelling_at"].is_u64());
    assert_eq!(cancelling["cancelled_at"], Value::Null);
    assert!(cancelling["in_progress_at"].is_u64());
    let frozen = counts(&cancelling);
    // A second cancel while cancelling changes nothing.
    let twice = cancel(&client, &base, "batch_1").await;
    assert_eq!(twice["status"], "cancelling");
    assert_eq!(twice["cancelling_at"], cancelling["cancelling_at"]);

    let seen = poll_to_end(&client, &base, "batch_1").await;
    assert!(asked.elapsed() >= Duration::from_millis(100));
    let end = seen.last().unwrap();
    assert_eq!(end["status"], "cancelled");
    assert!(end["cancelled_at"].is_u64());
    assert_eq!(end["completed_at"], Value::Null);
    assert_eq!(end["output_file_id"], Value::Null);
    for object in &seen {
        assert_eq!(counts(object), frozen, "counts stop at the cancel");
    }
    assert_eq!(&cancel(&client, &base, "batch_1").await, end);

    // A completed job stays completed.
    let quick = server_with(Duration::from_millis(100)).await;
    create(&client, &quick.base_url(), "file-x", Value::Null).await;
    let done = poll_to_end(&client, &quick.base_url(), "batch_1").await;
    let done = done.last().unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(&cancel(&client, &quick.base_url(), "batch_1").await, done);
}

#[tokio::test]
async fn lists_newest_first_with_limit_and_after() {
    let server = FaultServer::start().await.unwrap();
    let base = server.base_url();
    let client = client();
    let empty = list(&client, &base, "").await;
    assert_eq!(
        empty,
        json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
    );
    for _ in 0..5 {
        create(&client, &base, "file-x", Value::Null).await;
    }
    let page = list(&client, &base, "?limit=2").await;
    assert_eq!(page["object"], "list");
    assert_eq!(ids(&page), ["batch_5", "batch_4"]);
    assert_eq!(page["first_id"], "batch_5");
    assert_eq!(page["last_id"], "batch_4");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["object"], "batch");

    let page = list(&client, &base, "?limit=2&after=batch_4").await;
    assert_eq!(ids(&page), ["batch_3", "batch_2"]);
    assert_eq!(page["has_more"], true);
    let page = list(&client, &base, "?after=batch_2").await;
    assert_eq!(ids(&page), ["batch_1"]);
    assert_eq!(page["has_more"], false);
    let page = list(&client, &base, "?after=batch_1").await;
    assert_eq!(ids(&page), Vec::<&str>::new());
    assert_eq!(page["first_id"], Value::Null);
    assert_eq!(page["has_more"], false);
    for query in ["", "?limit=5", "?limit=100", "?after=batch_99"] {
        let page = list(&client, &base, query).await;
        assert_eq!(ids(&page).len(), 5, "{query}");
        assert_eq!(page["has_more"], false, "{query}");
    }
}

/// Retries `GET /v1/models` until it succeeds.
async fn wait_until_served(client: &HttpClient, base: &str) {
    within(async {
        loop {
            if let Ok(reply) = exchange(client, get(base, "/v1/models")).await
                && reply.status == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn jobs_and_files_survive_an_outage() {
    let server = server_with(Duration::from_secs(3)).await;
    let base = server.base_url();
    let client = client();
    let file = json_of(
        &client,
        upload_request(&base, "in.jsonl", "batch", b"{}\n{}\n", &[]),
        StatusCode::OK,
    )
    .await;
    let created = create(&client, &base, file["id"].as_str().unwrap(), Value::Null).await;
    within(server.outage(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(
        exchange(&client, get(&base, "/v1/batches/batch_1"))
            .await
            .is_err(),
        "refused during the outage"
    );
    wait_until_served(&client, &base).await;

    let after = batch(&client, &base, "batch_1").await;
    for field in ["id", "created_at", "input_file_id", "expires_at"] {
        assert_eq!(after[field], created[field], "{field}");
    }
    assert_eq!(
        after["status"], "in_progress",
        "it went on during the outage"
    );
    assert_eq!(counts(&after).0, 2);
    assert_eq!(ids(&list(&client, &base, "").await), ["batch_1"]);
    assert_eq!(content(&client, &base, "file-1").await, b"{}\n{}\n");
}

#[tokio::test]
async fn close_creates_the_job_and_stores_the_file_then_drops_the_answer() {
    let server = FaultServer::start().await.unwrap();
    let base = server.base_url();
    let closing = [(CALL_HEADER, "create"), (FAULT_HEADER, "close")];
    let mut request = create_request(&base, "file-x", Value::Null);
    for (name, value) in closing {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    // A client of its own: nothing pooled to retry on.
    let lost = exchange(&common::client(), request).await;
    assert!(lost.is_err(), "got an answer: {lost:?}");
    let client = common::client();
    let jobs = list(&client, &base, "").await;
    assert_eq!(ids(&jobs), ["batch_1"], "the job exists");
    assert_eq!(jobs["data"][0]["status"], "validating");

    // An injected 503 does not create one.
    let mut request = create_request(&base, "file-x", Value::Null);
    request
        .headers_mut()
        .insert(FAULT_HEADER, "503".parse().unwrap());
    json_of(&client, request, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(ids(&list(&client, &base, "").await), ["batch_1"]);

    let upload = upload_request(
        &base,
        "lost.jsonl",
        "batch",
        b"{}\n",
        &[(FAULT_HEADER, "close")],
    );
    assert!(exchange(&common::client(), upload).await.is_err());
    assert_eq!(content(&client, &base, "file-1").await, b"{}\n");
    assert_eq!(
        server.dashboard(),
        dashboard(6, &[(200, 3), (503, 1)], &[("close", 2), ("status", 1)])
    );
}

#[tokio::test]
async fn a_batch_over_an_uploaded_file_counts_its_lines_and_echoes_its_ids() {
    let server = server_with(Duration::from_millis(200)).await;
    let base = server.base_url();
    let client = client();
    let input = b"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m-a\"}}\n\
                  \n\
                  {\"custom_id\":\"b\",\"body\":{\"model\":\"m-b\"}}\r\n   \n\
                  {\"custom_id\":\"c\"}";
    let file = json_of(
        &client,
        upload_request(&base, "requests.jsonl", "batch", input, &[]),
        StatusCode::OK,
    )
    .await;
    assert_eq!(file["id"], "file-1");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], input.len());
    assert_eq!(file["filename"], "requests.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert!(file["created_at"].is_u64());
    assert_eq!(
        json_of(&client, get(&base, "/v1/files/file-1"), StatusCode::OK).await,
        file
    );
    assert_eq!(content(&client, &base, "file-1").await, input);

    let created = create(&client, &base, "file-1", Value::Null).await;
    assert_eq!(counts(&created), (3, 0, 0), "three non-empty lines");
    let end = poll_to_end(&client, &base, "batch_1").await;
    assert_eq!(end.last().unwrap()["status"], "completed");
    let output = jsonl(&content(&client, &base, "file-out-batch_1").await);
    let echoed: Vec<(&str, &str)> = output
        .iter()
        .map(|line| {
            (
                line["custom_id"].as_str().unwrap(),
                line["response"]["body"]["model"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(echoed, [("a", "m-a"), ("b", "m-b"), ("c", "sturdy-echo")]);
    let object = json_of(
        &client,
        get(&base, "/v1/files/file-out-batch_1"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(object["purpose"], "batch_output");
}

#[tokio::test]
async fn garbage_json_multipart_and_queries_get_400() {
    let server = FaultServer::start().await.unwrap();
    let base = server.base_url();
    let client = client();
    let batches = |body: &str| {
        post(
            &base,
            "/v1/batches",
            "application/json",
            body.to_owned(),
            &[],
        )
    };
    let files = |content_type: &str, body: &str| {
        post(&base, "/v1/files", content_type, body.to_owned(), &[])
    };
    let form = format!("multipart/form-data; boundary={BOUNDARY}");
    let only_purpose = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}--\r\n"
    );
    let requests = [
        batches("{not json"),
        batches("[1]"),
        batches(r#"{"endpoint":"/v1/chat/completions","completion_window":"24h"}"#),
        batches(r#"{"input_file_id":5,"endpoint":"/v1/x","completion_window":"24h"}"#),
        batches(r#"{"input_file_id":"f","endpoint":"/v1/x","completion_window":"1h"}"#),
        batches(
            r#"{"input_file_id":"f","endpoint":"/v1/x","completion_window":"24h","metadata":{"k":1}}"#,
        ),
        batches(
            r#"{"input_file_id":"f","endpoint":"/v1/x","completion_window":"24h","metadata":[]}"#,
        ),
        batches(
            r#"{"input_file_id":"f","endpoint":"/v1/x","completion_window":"24h","metadata":{"sturdy_fate":"lost"}}"#,
        ),
        files("application/json", "{}"),
        files("multipart/form-data", "--x--"),
        files(&form, "garbage"),
        files(
            &form,
            &format!("--{BOUNDARY}\r\nno header line\r\n\r\nx\r\n--{BOUNDARY}--"),
        ),
        files(&form, &only_purpose),
        files(
            &form,
            &format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated"
            ),
        ),
        get(&base, "/v1/batches?limit=0"),
        get(&base, "/v1/batches?limit=101"),
        get(&base, "/v1/batches?limit=ten"),
        get(&base, "/v1/batches?after=file-1"),
    ];
    let n = requests.len() as u64;
    for request in requests {
        let what = format!("{} {}", request.method(), request.uri());
        let error = json_of(&client, request, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["error"]["type"], "invalid_request_error", "{what}");
        assert!(error["error"]["message"].is_string(), "{what}");
    }
    // More requests than a batch may hold (OpenAI's 50 000).
    let huge = "{}\n".repeat(50_001);
    let upload = upload_request(&base, "huge.jsonl", "batch", huge.as_bytes(), &[]);
    let file = json_of(&client, upload, StatusCode::OK).await;
    let too_many = create_request(&base, file["id"].as_str().unwrap(), Value::Null);
    json_of(&client, too_many, StatusCode::BAD_REQUEST).await;
    assert_eq!(ids(&list(&client, &base, "").await).len(), 0, "no job made");
    assert_eq!(
        server.dashboard(),
        dashboard(n + 3, &[(400, n + 1), (200, 2)], &[])
    );
}

#[tokio::test]
async fn unknown_ids_get_404() {
    let server = FaultServer::start().await.unwrap();
    let base = server.base_url();
    let client = client();
    let requests = [
        get(&base, "/v1/batches/batch_99"),
        get(&base, "/v1/batches/nope"),
        get(&base, "/v1/batches/batch_099"),
        post(
            &base,
            "/v1/batches/batch_99/cancel",
            "application/json",
            "",
            &[],
        ),
        get(&base, "/v1/files/file-99"),
        get(&base, "/v1/files/file-99/content"),
        get(&base, "/v1/files/file-out-batch_99/content"),
    ];
    let n = requests.len() as u64;
    for request in requests {
        let what = request.uri().to_string();
        let error = json_of(&client, request, StatusCode::NOT_FOUND).await;
        assert_eq!(error["error"]["code"], 404, "{what}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{what}");
    }
    assert_eq!(server.dashboard(), dashboard(n, &[(404, n)], &[]));
}

#[tokio::test]
async fn a_zero_job_duration_is_refused() {
    let err = FaultServer::builder()
        .job_duration(Duration::ZERO)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn the_binary_runs_jobs_for_job_seconds_and_refuses_bad_ones() {
    let (mut child, base) = spawn_binary(["--job-seconds", "0.2"]).await;
    let client = client();
    create(&client, &base, "file-x", Value::Null).await;
    let end = poll_to_end(&client, &base, "batch_1").await;
    assert_eq!(end.last().unwrap()["status"], "completed");
    child.start_kill().unwrap();
    within(child.wait()).await.unwrap();

    for bad in ["0", "-1", "soon", "NaN"] {
        let (code, stderr) = run_binary([format!("--job-seconds={bad}")]).await;
        assert_eq!(code, Some(2), "{bad}");
        assert!(stderr.contains("above zero"), "{stderr}");
    }
}

#[tokio::test]
async fn an_idempotency_key_gets_the_same_job_back() {
    let server = server_with(Duration::from_secs(60)).await;
    let base = server.base_url();
    let client = client();
    let body = json!({
        "input_file_id": "file-x",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    })
    .to_string();
    let keyed = |key: &str| {
        post(
            &base,
            "/v1/batches",
            "application/json",
            body.clone(),
            &[("idempotency-key", key)],
        )
    };
    let first = json_of(&client, keyed("k-1"), StatusCode::OK).await;
    let again = json_of(&client, keyed("k-1"), StatusCode::OK).await;
    let other = json_of(&client, keyed("k-2"), StatusCode::OK).await;
    let unkeyed = create(&client, &base, "file-x", Value::Null).await;
    assert_eq!(first["id"], "batch_1");
    assert_eq!(again["id"], "batch_1", "the same key, the same job");
    assert_eq!(other["id"], "batch_2");
    assert_eq!(unkeyed["id"], "batch_3");
    let listed = list(&client, &base, "?limit=10").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(3));
}
