//! The job waiter against sturdy-faults' batch jobs over loopback: restarts
//! of the server (its listener closed, connections refused, then back on
//! the same port with the jobs intact), bursts of errors, cut connections.
//! Real time, short jobs, every wait bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::batch::{BatchClient, BatchError, BatchStatus, NewBatch, PollSchedule};
use sturdy::retry::Backoff;
use sturdy::{Stack, StackService};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, Fault, FaultServer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const BOUND: Duration = Duration::from_secs(30);

type Svc = StackService<sturdy::Client>;

/// The stack over `sturdy::client()`, with millisecond backoff and two
/// retries: a restart outlasts them, and the waiter must wait it through.
fn service() -> Svc {
    let stack = Stack::builder()
        .max_retries(2)
        .map_retry(|r| {
            r.backoff(Backoff::guide(
                Duration::from_millis(5),
                Duration::from_millis(5),
            ))
        })
        .build()
        .expect("a valid stack");
    stack.layer(sturdy::client().no_proxy().build().expect("a client"))
}

fn schedule(first_ms: u64, cap_ms: u64) -> PollSchedule {
    PollSchedule {
        first: Duration::from_millis(first_ms),
        cap: Duration::from_millis(cap_ms),
        growth: 1.5,
    }
}

fn client<S>(svc: S, server: &FaultServer) -> BatchClient<S> {
    BatchClient::new(svc, &format!("{}/v1", server.base_url()))
}

/// How many jobs the server holds: one listing.
async fn jobs_on(server: &FaultServer) -> usize {
    let req = http::Request::get(format!("{}/v1/batches?limit=100", server.base_url()))
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let resp = service().oneshot(req).await.expect("a listing");
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("its body")
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    v["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_through_two_restarts_and_bursts_of_errors() {
    let server = FaultServer::builder()
        .job_duration(Duration::from_millis(6000))
        .outage_at(Duration::from_millis(800), Duration::from_secs(2))
        .outage_at(Duration::from_millis(3600), Duration::from_secs(2))
        .window(
            Duration::from_millis(3000),
            Duration::from_millis(400),
            Fault::status(503),
        )
        .window(
            Duration::from_millis(5700),
            Duration::from_millis(300),
            "reset".parse().expect("a fault"),
        )
        .start()
        .await
        .expect("fault server");
    let batches = client(service(), &server).poll_schedule(schedule(100, 400));
    let file = batches
        .upload("in.jsonl", "{}\n{}\n{}\n".repeat(4))
        .await
        .expect("uploaded");
    let job = batches
        .submit(NewBatch::new(&file.id, "/v1/chat/completions"))
        .await
        .expect("submitted");
    let mut seen = Vec::new();
    let done = tokio::time::timeout(
        BOUND,
        batches.wait_with(&job.id, |b| seen.push((b.status, b.request_counts))),
    )
    .await
    .expect("bounded")
    .expect("the job ended");
    assert_eq!(done.batch.status, BatchStatus::Completed);
    assert!(done.batch.output_file_id.is_some());
    assert_eq!(done.batch.request_counts.map(|c| c.total), Some(12));
    assert!(
        done.stats.failures_waited_through >= 2,
        "two restarts outlast the stack's retries: {:?}",
        done.stats
    );
    // Progress was seen in order, counts never going back.
    let statuses: Vec<_> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        statuses.first(),
        Some(&BatchStatus::Validating),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&BatchStatus::Completed));
    let completed: Vec<u64> = seen
        .iter()
        .filter_map(|s| s.1.map(|c| c.completed))
        .collect();
    assert!(completed.windows(2).all(|w| w[0] <= w[1]), "{completed:?}");
    assert_eq!(jobs_on(&server).await, 1);
    server.shutdown().await;
}

type Req = http::Request<Full<Bytes>>;

/// Adds a fault script to the requests `pick` chooses.
fn scripted<S>(
    svc: S,
    call: &'static str,
    script: &'static str,
    pick: fn(&Req) -> bool,
) -> tower::util::MapRequest<S, impl Fn(Req) -> Req + Clone> {
    tower::util::MapRequestLayer::new(move |mut req: http::Request<Full<Bytes>>| {
        if pick(&req) {
            req.headers_mut()
                .insert(CALL_HEADER, http::HeaderValue::from_static(call));
            req.headers_mut()
                .insert(FAULT_HEADER, http::HeaderValue::from_static(script));
        }
        req
    })
    .layer(svc)
}

fn is_submission(req: &http::Request<Full<Bytes>>) -> bool {
    req.method() == http::Method::POST && req.uri().path().ends_with("/batches")
}

fn is_listing(req: &http::Request<Full<Bytes>>) -> bool {
    req.method() == http::Method::GET && req.uri().path().ends_with("/batches")
}

#[tokio::test]
async fn a_submission_cut_after_it_was_sent_makes_exactly_one_job() {
    let server = FaultServer::builder()
        .job_duration(Duration::from_secs(60))
        .start()
        .await
        .expect("fault server");
    // The server creates the job, then drops the connection without an
    // answer; the first listing fails too.
    let svc = scripted(service(), "submit", "close, 200", is_submission);
    let svc = scripted(svc, "list", "503, 200", is_listing);
    let batches = client(svc, &server).poll_schedule(schedule(20, 50));
    let job = tokio::time::timeout(
        BOUND,
        batches.submit(NewBatch::new("file-none", "/v1/chat/completions")),
    )
    .await
    .expect("bounded")
    .expect("found, not submitted again");
    assert_eq!(jobs_on(&server).await, 1, "one job for one submission");
    let again = batches.get(&job.id).await.expect("the job");
    assert_eq!(again.id, job.id);
    assert!(
        again
            .metadata
            .unwrap()
            .contains_key(sturdy::batch::SUBMISSION_KEY)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_submission_refused_before_it_left_is_sent_again() {
    // Nothing listens yet: the first attempts are refused; the server
    // comes up on that port a moment later.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = holder.local_addr().expect("address");
    drop(holder);
    let batches =
        BatchClient::new(service(), &format!("http://{addr}/v1")).poll_schedule(schedule(100, 200));
    let starting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        FaultServer::builder()
            .listen(addr)
            .job_duration(Duration::from_secs(60))
            .start()
            .await
            .expect("fault server on the freed port")
    });
    let job = tokio::time::timeout(
        BOUND,
        batches.submit(NewBatch::new("file-none", "/v1/chat/completions")),
    )
    .await
    .expect("bounded")
    .expect("submitted once the server was up");
    let server = starting.await.expect("started");
    assert_eq!(jobs_on(&server).await, 1);
    assert!(job.id.starts_with("batch_"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_wait_resumes_from_the_job_id_alone_and_dropping_it_stops_the_polls() {
    let server = FaultServer::builder()
        .job_duration(Duration::from_millis(1500))
        .start()
        .await
        .expect("fault server");
    let first = client(service(), &server).poll_schedule(schedule(50, 100));
    let job = first
        .submit(NewBatch::new("file-none", "/v1/chat/completions"))
        .await
        .expect("submitted");
    // The first waiter gives up half-way (its future dropped, as when the
    // process stops) ...
    let cut = tokio::time::timeout(Duration::from_millis(400), first.wait(&job.id)).await;
    assert!(cut.is_err(), "still waiting when dropped");
    drop(first);
    let after_drop = server.dashboard().received;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.dashboard().received,
        after_drop,
        "no poll after the wait was dropped: nothing was left running"
    );
    // ... and another, knowing only the id, waits it out.
    let second = client(service(), &server).poll_schedule(schedule(50, 100));
    let done = tokio::time::timeout(BOUND, second.wait(&job.id))
        .await
        .expect("bounded")
        .expect("the job ended");
    assert_eq!(done.batch.status, BatchStatus::Completed);
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_or_expired_job_ends_the_wait_with_its_status_and_an_unknown_id_is_refused() {
    let server = FaultServer::builder()
        .job_duration(Duration::from_millis(400))
        .start()
        .await
        .expect("fault server");
    let batches = client(service(), &server).poll_schedule(schedule(30, 60));
    for (fate, want) in [
        ("failed", BatchStatus::Failed),
        ("expired", BatchStatus::Expired),
    ] {
        let mut new = NewBatch::new("file-none", "/v1/chat/completions");
        new.metadata.insert("sturdy_fate".into(), fate.into());
        let job = batches.submit(new).await.expect("submitted");
        let done = tokio::time::timeout(BOUND, batches.wait(&job.id))
            .await
            .expect("bounded")
            .expect("an ended job is a result");
        assert_eq!(done.batch.status, want);
    }
    let err = batches.wait("batch_nope").await.expect_err("no such job");
    match err {
        BatchError::Refused { status, .. } => assert_eq!(status, 404),
        other => panic!("not refused: {other:?}"),
    }
    // Cancelling ends the wait too.
    let job = batches
        .submit(NewBatch::new("file-none", "/v1/chat/completions"))
        .await
        .expect("submitted");
    batches.cancel(&job.id).await.expect("cancelling");
    let done = tokio::time::timeout(BOUND, batches.wait(&job.id))
        .await
        .expect("bounded")
        .expect("ended");
    assert_eq!(done.batch.status, BatchStatus::Cancelled);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_waiters_spread_their_polls() {
    const WAITERS: usize = 100;
    let server = FaultServer::builder()
        .job_duration(Duration::from_millis(3000))
        .start()
        .await
        .expect("fault server");
    let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let record = polls.clone();
    let svc = tower::util::MapRequestLayer::new(move |req: http::Request<Full<Bytes>>| {
        if req.method() == http::Method::GET && req.uri().path().contains("/batches/") {
            record.lock().expect("not poisoned").push(Instant::now());
        }
        req
    })
    .layer(service());
    let batches = client(svc, &server).poll_schedule(schedule(400, 400));
    let job = batches
        .submit(NewBatch::new("file-none", "/v1/chat/completions"))
        .await
        .expect("submitted");
    let waits = (0..WAITERS).map(|_| batches.wait(&job.id));
    let started = Instant::now();
    let done = tokio::time::timeout(BOUND, futures_util::future::join_all(waits))
        .await
        .expect("bounded");
    assert!(done.iter().all(|d| d.is_ok()));
    // Every waiter polls at once first (they start together); after that,
    // each wait is drawn from half to all of the interval.
    let mut later: Vec<Duration> = polls
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|t| t.duration_since(started))
        .filter(|t| *t > Duration::from_millis(150))
        .collect();
    later.sort();
    assert!(later.len() >= 3 * WAITERS, "{} polls", later.len());
    // The busiest 10 ms: in lockstep it would hold all hundred.
    let busiest = later
        .iter()
        .map(|t| {
            later
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_millis(10))
                .count()
        })
        .max()
        .unwrap_or(0);
    let gaps: Vec<f64> = later
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let mean_gap = gaps.iter().sum::<f64>() / gaps.len() as f64;
    eprintln!(
        "{} polls after the first round; mean gap {mean_gap:.2} ms; busiest 10 ms holds {busiest}",
        later.len()
    );
    assert!(busiest <= 25, "polls bunch up: {busiest} within 10 ms");
    // Each waiter waits 200 to 400 ms between polls, 300 on average, so a
    // hundred of them poll every 3.0 ms on average, and every 2.0 ms if
    // each wait were its shortest (a jitter drawn below half the interval
    // would go lower still). The bound sits between the two: 3.0 itself is
    // the expected value, which a run falls below half the time.
    assert!(mean_gap >= 2.5, "mean gap {mean_gap:.2} ms");
    server.shutdown().await;
}

#[tokio::test]
async fn a_keyed_submission_is_sent_again_and_the_server_keeps_one_job() {
    let server = FaultServer::builder()
        .job_duration(Duration::from_secs(60))
        .start()
        .await
        .expect("fault server");
    // Two answers lost after the server created the job; listings would
    // be refused, so a lookup would end the submission with an error.
    let svc = scripted(service(), "submit", "close, close, 200", is_submission);
    let svc = scripted(svc, "list", "400", is_listing);
    let batches = client(svc, &server).poll_schedule(schedule(20, 50));
    let mut new = NewBatch::new("file-none", "/v1/chat/completions");
    new.idempotency_key = Some("job-2026-12-02".to_owned());
    let job = tokio::time::timeout(BOUND, batches.submit(new))
        .await
        .expect("bounded")
        .expect("sent again, deduplicated by the server");
    assert_eq!(jobs_on(&server).await, 1, "one job for one key");
    assert_eq!(
        server.dashboard().received,
        3 + 1,
        "three submissions, one listing by the test"
    );
    assert!(job.id.starts_with("batch_"));
    server.shutdown().await;
}
