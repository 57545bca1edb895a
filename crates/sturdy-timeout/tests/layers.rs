//! Unit tests of both layers around fake inner services, on paused tokio
//! time: every limit fires at its exact instant, with no sockets.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use sturdy_core::{
    BoxError, CallPlan, Deadline, FailureKind, Phase, Profile, Reach, TimeoutError, Workload,
    classify_body_error, classify_error,
};
use sturdy_timeout::{AttemptTimeoutLayer, NoClassifier, WorkloadTimeoutLayer};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;
type TestBody = StreamBody<FrameStream>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A body that sends one chunk after each delay, then ends.
fn paced_body(delays: Vec<Duration>) -> TestBody {
    let s = stream::unfold((delays, 0usize), |(delays, i)| async move {
        let d = *delays.get(i)?;
        tokio::time::sleep(d).await;
        let chunk = Bytes::from(format!("chunk{i};"));
        Some((Ok(Frame::data(chunk)), (delays, i + 1)))
    });
    StreamBody::new(Box::pin(s) as FrameStream)
}

/// An inner service that waits `head` before answering with `body_delays`.
fn slow_service(
    head: Duration,
    body_delays: Vec<Duration>,
) -> impl Service<
    Request<()>,
    Response = Response<TestBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<TestBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |_req: Request<()>| {
        let body_delays = body_delays.clone();
        async move {
            tokio::time::sleep(head).await;
            Ok::<_, Infallible>(Response::new(paced_body(body_delays)))
        }
    })
}

fn timeout_of(err: &BoxError) -> TimeoutError {
    *err.downcast_ref::<TimeoutError>()
        .unwrap_or_else(|| panic!("not a TimeoutError: {err:?}"))
}

fn profile(ready: u64, headers: u64, read: u64, total: u64) -> Profile {
    Profile {
        ready: ms(ready),
        headers: ms(headers),
        read: ms(read),
        total: ms(total),
    }
}

/// Reads a body to its end or first error: the chunks and the error.
async fn drain<B>(body: B) -> (String, Option<BoxError>)
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut seen = String::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    seen.push_str(&String::from_utf8_lossy(d));
                }
            }
            Err(e) => return (seen, Some(e)),
        }
    }
    (seen, None)
}

#[tokio::test(start_paused = true)]
async fn headers_timeout_fires_at_the_headers_limit_with_unknown_reach() {
    let layer = AttemptTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(1000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10_000), vec![]));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(1000));
    let t = timeout_of(&err);
    assert_eq!(
        (t.phase(), t.reach(), t.limit()),
        (Phase::Headers, Reach::Unknown, ms(1000))
    );
    assert_eq!(t.workload(), Some(Workload::Interactive));
    assert_eq!(classify_error(&*err), FailureKind::HeadersTimeout);
}

#[tokio::test(start_paused = true)]
async fn headers_timeout_without_a_captured_connection_is_not_sent() {
    // With capture on, an inner service that never reports a connection
    // (as a hyper-util client stuck connecting) means nothing was sent.
    let layer = AttemptTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(500))
        .capture_connection(true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10_000), vec![]));
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Headers, Reach::NotSent));
    assert_eq!(classify_error(&*err), FailureKind::ConnectTimeout);
}

#[tokio::test(start_paused = true)]
async fn attempt_limits_follow_the_workload_extension_and_the_profile_extension() {
    let layer = AttemptTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(1000))
        .headers(Workload::Agentic, ms(3000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10_000), vec![]));

    let mut req = Request::new(());
    req.extensions_mut().insert(Workload::Agentic);
    let start = Instant::now();
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(3000));
    assert_eq!(timeout_of(&err).workload(), Some(Workload::Agentic));

    let mut req = Request::new(());
    req.extensions_mut().insert(Workload::Agentic);
    req.extensions_mut().insert(profile(10, 200, 200, 200));
    let start = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(timeout_of(&err).limit(), ms(200));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_shortens_the_headers_limit_and_reports_total() {
    let layer = AttemptTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(1000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10_000), vec![]));
    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline::after(ms(300)));
    let start = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Total, Reach::Unknown));
    assert_eq!(
        classify_error(&*err),
        FailureKind::TotalTimeout(Reach::Unknown)
    );
}

#[tokio::test(start_paused = true)]
async fn total_wins_when_the_deadline_and_headers_fall_on_the_same_instant() {
    let layer = AttemptTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(700))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10_000), vec![]));
    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline::after(ms(700)));
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(timeout_of(&err).phase(), Phase::Total);
}

#[tokio::test(start_paused = true)]
async fn read_timeout_fires_on_silence_after_the_chunks_that_came() {
    let layer = AttemptTimeoutLayer::builder()
        .read(Workload::Interactive, ms(1000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10), vec![ms(100), ms(100), ms(5000)]));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    let (seen, err) = drain(res.into_body()).await;
    assert_eq!(seen, "chunk0;chunk1;");
    assert_eq!(start.elapsed(), ms(1200));
    let err = err.expect("the silence must end the body");
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Read, Reach::Acknowledged));
    assert_eq!(classify_body_error(&*err), FailureKind::ReadTimeout);
}

#[tokio::test(start_paused = true)]
async fn read_is_timed_from_the_last_frame_of_a_long_stream() {
    // Ten frames 300 ms apart (3 s, three times `read`), then silence: the
    // timer set at the first wait fires before the stream is late and is
    // moved on; the timeout comes exactly `read` after the last frame.
    let layer = AttemptTimeoutLayer::builder()
        .read(Workload::Interactive, ms(1000))
        .build()
        .unwrap();
    let mut gaps = vec![ms(300); 10];
    gaps.push(ms(5000));
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(0), gaps));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    let (seen, err) = drain(res.into_body()).await;
    assert_eq!(seen.matches("chunk").count(), 10);
    assert_eq!(start.elapsed(), ms(4000));
    assert_eq!(
        timeout_of(&err.expect("the silence ends it")).phase(),
        Phase::Read
    );
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_the_first_frame_counts_as_read() {
    let layer = AttemptTimeoutLayer::builder()
        .read(Workload::Interactive, ms(1000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(10), vec![ms(2000)]));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    let (seen, err) = drain(res.into_body()).await;
    assert_eq!(seen, "");
    assert_eq!(start.elapsed(), ms(1000));
    assert_eq!(timeout_of(&err.unwrap()).phase(), Phase::Read);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_shortens_read_and_reports_total() {
    let layer = AttemptTimeoutLayer::builder()
        .read(Workload::Interactive, ms(1000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(100), vec![ms(100), ms(5000)]));
    let mut req = Request::new(());
    let start = Instant::now();
    req.extensions_mut().insert(Deadline::after(ms(500)));
    let res = svc.oneshot(req).await.unwrap();
    let (seen, err) = drain(res.into_body()).await;
    assert_eq!(seen, "chunk0;");
    assert_eq!(start.elapsed(), ms(500));
    let t = timeout_of(&err.unwrap());
    assert_eq!((t.phase(), t.reach()), (Phase::Total, Reach::Acknowledged));
}

#[tokio::test(start_paused = true)]
async fn the_workload_layer_alone_enforces_its_headers_and_read_phases() {
    // Nothing below makes attempts: the call is one attempt, and the
    // phases set on this layer are its to enforce.
    let layer = WorkloadTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(5000), vec![]));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    let t = timeout_of(&err);
    assert_eq!(
        (t.phase(), t.reach(), t.limit(), t.workload()),
        (
            Phase::Headers,
            Reach::Unknown,
            ms(300),
            Some(Workload::Interactive)
        )
    );

    let layer = WorkloadTimeoutLayer::builder()
        .read(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_service(ms(0), vec![ms(100), ms(5000)]));
    let start = Instant::now();
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let (seen, err) = drain(res.into_body()).await;
    assert_eq!(seen, "chunk0;");
    assert_eq!(start.elapsed(), ms(400));
    let t = timeout_of(&err.expect("read fires"));
    assert_eq!((t.phase(), t.limit()), (Phase::Read, ms(300)));
}

#[tokio::test(start_paused = true)]
async fn the_attempt_layer_below_enforces_the_workload_layers_phases_and_its_own_caps_them() {
    // The profile is set once, on the workload layer; the attempt layer
    // reads it from the plan.
    let layer = WorkloadTimeoutLayer::builder()
        .headers(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(AttemptTimeoutLayer::new())
        .service(slow_service(ms(5000), vec![]));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(timeout_of(&err).phase(), Phase::Headers);
    // A phase set on the attempt layer itself takes effect too: the
    // smaller one wins.
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(
            AttemptTimeoutLayer::builder()
                .headers(Workload::Interactive, ms(100))
                .build()
                .unwrap(),
        )
        .service(slow_service(ms(5000), vec![]));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(timeout_of(&err).limit(), ms(100));
}

/// Both layers, as the preset stack has them (retry would sit between).
fn stack<S>(
    workloads: WorkloadTimeoutLayer,
    inner: S,
) -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = BoxError>>,
    Error = BoxError,
> + Clone
where
    S: Service<Request<()>, Response = Response<TestBody>, Error = Infallible> + Clone,
{
    let attempts = AttemptTimeoutLayer::from_profiles(*workloads.profiles()).unwrap();
    ServiceBuilder::new()
        .layer(workloads)
        .layer(attempts)
        .service(inner)
}

#[tokio::test(start_paused = true)]
async fn a_stream_restarts_read_on_every_frame_but_not_total() {
    let workloads = WorkloadTimeoutLayer::builder()
        .read(Workload::Interactive, ms(1000))
        .total(Workload::Interactive, ms(2500))
        .build()
        .unwrap();
    // Every gap (600 ms) is under `read`; together they pass `total`.
    let svc = stack(workloads, slow_service(ms(0), vec![ms(600); 6]));
    let start = Instant::now();
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let (seen, err) = drain(res.into_body()).await;
    assert_eq!(seen, "chunk0;chunk1;chunk2;chunk3;");
    assert_eq!(start.elapsed(), ms(2500));
    let err = err.expect("the deadline must end the stream");
    let t = timeout_of(&err);
    assert_eq!(
        (t.phase(), t.reach(), t.limit()),
        (Phase::Total, Reach::Acknowledged, ms(2500))
    );
    assert_eq!(
        classify_body_error(&*err),
        FailureKind::TotalTimeout(Reach::Acknowledged)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_with_short_gaps_outlives_read_when_total_allows() {
    let workloads = WorkloadTimeoutLayer::builder()
        .read(Workload::Interactive, ms(1000))
        .total(Workload::Interactive, ms(60_000))
        .build()
        .unwrap();
    let svc = stack(workloads, slow_service(ms(0), vec![ms(900); 5]));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    let (seen, err) = drain(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(seen.matches("chunk").count(), 5);
    assert_eq!(start.elapsed(), ms(4500));
}

#[tokio::test(start_paused = true)]
async fn total_covers_the_response_future() {
    let workloads = WorkloadTimeoutLayer::builder()
        .total(Workload::Interactive, ms(800))
        .build()
        .unwrap();
    // No attempt layer: the outer layer alone cuts the call.
    let svc = ServiceBuilder::new()
        .layer(workloads)
        .service(slow_service(ms(10_000), vec![]));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(800));
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Total, Reach::Unknown));
}

#[tokio::test(start_paused = true)]
async fn ready_timeout_when_the_inner_service_is_saturated() {
    let workloads = WorkloadTimeoutLayer::builder()
        .ready(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let limited = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(slow_service(ms(10_000), vec![]));
    let mut svc = ServiceBuilder::new().layer(workloads).service(limited);
    // The layer itself is always ready; the wait happens in the future.
    let held = svc.ready().await.unwrap().call(Request::new(()));
    let held = tokio::spawn(held);
    tokio::task::yield_now().await;
    assert!(
        futures_util::FutureExt::now_or_never(svc.ready()).is_some(),
        "poll_ready must not wait for the saturated inner service"
    );
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Ready, Reach::NotSent));
    assert_eq!(classify_error(&*err), FailureKind::ReadyTimeout);
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn ready_timeout_behind_a_full_buffer() {
    let workloads = WorkloadTimeoutLayer::builder()
        .ready(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let buffered = ServiceBuilder::new()
        .buffer(1)
        .concurrency_limit(1)
        .service(slow_service(ms(10_000), vec![]));
    let mut svc = ServiceBuilder::new().layer(workloads).service(buffered);
    // One call holds the limit, one waits in the buffer's worker, one fills
    // the buffer's one slot.
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(tokio::spawn(
            svc.ready().await.unwrap().call(Request::new(())),
        ));
        tokio::time::sleep(ms(1)).await;
    }
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Ready, Reach::NotSent));
    for h in holders {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn ready_and_total_on_the_same_instant_is_total() {
    let workloads = WorkloadTimeoutLayer::builder()
        .ready(Workload::Interactive, ms(300))
        .total(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let limited = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(slow_service(ms(10_000), vec![]));
    let mut svc = ServiceBuilder::new().layer(workloads).service(limited);
    let held = tokio::spawn(svc.ready().await.unwrap().call(Request::new(())));
    tokio::task::yield_now().await;
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    let t = timeout_of(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Total, Reach::NotSent));
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn the_layer_sets_workload_deadline_and_call_context() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let inner = service_fn(move |req: Request<()>| {
        let plan = CallPlan::from_extensions(req.extensions()).unwrap();
        *seen2.lock().unwrap() =
            Some((plan.workload(), plan.deadline(), plan.context().workload()));
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    let workloads = WorkloadTimeoutLayer::builder()
        .total(Workload::Batch, ms(5000))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(workloads).service(inner);
    let req = Request::post("http://api.test/v1/batches")
        .body(())
        .unwrap();
    let start = Instant::now();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    let (w, d, ctx_w) = seen.lock().unwrap().take().unwrap();
    assert_eq!(w, Some(Workload::Batch));
    assert_eq!(ctx_w, Some(Workload::Batch));
    assert_eq!(d.unwrap().instant(), start + ms(5000));
}

#[tokio::test(start_paused = true)]
async fn the_workload_extension_beats_the_classifier_and_the_classifier_beats_the_default() {
    let workloads = WorkloadTimeoutLayer::builder()
        .total(Workload::Interactive, ms(5000))
        .total(Workload::Agentic, ms(3000))
        .total(Workload::LongContext, ms(1000))
        .classify_with(|head| {
            head.headers
                .contains_key("x-agent")
                .then_some(Workload::Agentic)
        })
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(workloads)
        .service(slow_service(ms(60_000), vec![]));

    for (agent_header, ext, expect, after) in [
        (false, None, Workload::Interactive, 5000),
        (true, None, Workload::Agentic, 3000),
        (
            true,
            Some(Workload::LongContext),
            Workload::LongContext,
            1000,
        ),
    ] {
        let mut req = Request::new(());
        if agent_header {
            req.headers_mut().insert("x-agent", "1".parse().unwrap());
        }
        if let Some(w) = ext {
            req.extensions_mut().insert(w);
        }
        let start = Instant::now();
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert_eq!(start.elapsed(), ms(after), "{expect:?}");
        assert_eq!(timeout_of(&err).workload(), Some(expect));
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_path_classifier_can_be_turned_off() {
    let workloads = WorkloadTimeoutLayer::builder()
        .total(Workload::Batch, ms(100))
        .classifier(NoClassifier)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(workloads)
        .service(slow_service(ms(1000), vec![]));
    let req = Request::post("http://api.test/v1/batches")
        .body(())
        .unwrap();
    // Interactive's 60 s, not Batch's 100 ms.
    svc.oneshot(req).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_per_request_profile_overrides_the_workload_profile() {
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .service(slow_service(ms(60_000), vec![]));
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(profile(100, 60_000, 60_000, 250));
    let start = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(250));
    assert_eq!(timeout_of(&err).limit(), ms(250));
}

#[tokio::test(start_paused = true)]
async fn an_earlier_outer_deadline_is_kept() {
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .service(slow_service(ms(60_000), vec![]));
    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline::after(ms(400)));
    let start = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(400));
    assert_eq!(timeout_of(&err).phase(), Phase::Total);
}

#[tokio::test(start_paused = true)]
async fn a_zero_phase_is_a_typed_error_at_build_time_and_per_request() {
    let err = WorkloadTimeoutLayer::builder()
        .read(Workload::Agentic, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.phase, "read");
    assert!(
        AttemptTimeoutLayer::builder()
            .headers(Workload::Batch, Duration::ZERO)
            .build()
            .is_err()
    );

    let called = Arc::new(AtomicBool::new(false));
    let called2 = called.clone();
    let inner = service_fn(move |_: Request<()>| {
        called2.store(true, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
    });
    for outer in [true, false] {
        let mut req = Request::new(());
        req.extensions_mut().insert(profile(10, 0, 10, 10));
        let err = if outer {
            ServiceBuilder::new()
                .layer(WorkloadTimeoutLayer::new())
                .service(inner.clone())
                .oneshot(req)
                .await
                .map(|_| ())
                .unwrap_err()
        } else {
            ServiceBuilder::new()
                .layer(AttemptTimeoutLayer::new())
                .service(inner.clone())
                .oneshot(req)
                .await
                .map(|_| ())
                .unwrap_err()
        };
        let invalid = err.downcast_ref::<sturdy_core::InvalidProfile>().unwrap();
        assert_eq!(invalid.phase, "headers");
    }
    assert!(
        !called.load(Ordering::SeqCst),
        "an invalid request reached the inner service"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ready_response_passes_through_with_its_size_hint() {
    let inner = service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .layer(AttemptTimeoutLayer::new())
        .service(inner);
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_untouched() {
    let inner = service_fn(|_: Request<()>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .layer(AttemptTimeoutLayer::new())
        .service(inner);
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(classify_error(&*err), FailureKind::ConnectRefused);
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_capacity_goes_through_when_it_frees() {
    let workloads = WorkloadTimeoutLayer::builder()
        .ready(Workload::Interactive, ms(300))
        .build()
        .unwrap();
    let limited = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(slow_service(ms(100), vec![]));
    let mut svc = ServiceBuilder::new().layer(workloads).service(limited);
    let held = tokio::spawn(svc.ready().await.unwrap().call(Request::new(())));
    tokio::task::yield_now().await;
    // The limit is taken: this call waits in its future, and is woken (not
    // left behind by the check `call` makes) when the first one ends.
    let start = Instant::now();
    let res = svc.ready().await.unwrap().call(Request::new(())).await;
    assert!(res.is_ok(), "{:?}", res.err());
    // 100 ms for the held call to end, 100 ms for this one's head.
    assert_eq!(start.elapsed(), ms(200));
    assert!(held.await.unwrap().is_ok());
    // And the layer's own copy is free for the next call.
    let res = svc.ready().await.unwrap().call(Request::new(())).await;
    assert!(res.is_ok(), "{:?}", res.err());
}

/// An inner service that counts its clones and fails `poll_ready` when told.
#[derive(Debug)]
struct Counted {
    clones: Arc<std::sync::atomic::AtomicUsize>,
    fail_ready: bool,
}
impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counted {
            clones: self.clones.clone(),
            fail_ready: self.fail_ready,
        }
    }
}
impl Service<Request<()>> for Counted {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(if self.fail_ready {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        } else {
            Ok(())
        })
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from("ok")))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_ready_inner_service_is_called_without_a_clone() {
    let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inner = Counted {
        clones: clones.clone(),
        fail_ready: false,
    };
    let mut svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .service(inner);
    for _ in 0..3 {
        let res = svc.ready().await.unwrap().call(Request::new(())).await;
        assert_eq!(
            res.unwrap().into_body().collect().await.unwrap().to_bytes(),
            "ok"
        );
    }
    assert_eq!(clones.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_is_the_calls_error() {
    let inner = Counted {
        clones: Arc::default(),
        fail_ready: true,
    };
    let mut svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .service(inner);
    for _ in 0..2 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap_err();
        let io = err
            .downcast_ref::<std::io::Error>()
            .expect("the inner error");
        assert_eq!(io.kind(), std::io::ErrorKind::BrokenPipe);
    }
}

/// Flags its own drop, to show that abandoned calls let go of the inner
/// future and body.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_or_the_body_mid_way_lets_go_of_the_inner_call() {
    let future_dropped = Arc::new(AtomicBool::new(false));
    let body_dropped = Arc::new(AtomicBool::new(false));
    let (fd, bd) = (future_dropped.clone(), body_dropped.clone());
    let inner = service_fn(move |req: Request<()>| {
        let guard = DropFlag(fd.clone());
        let bd = bd.clone();
        async move {
            let _guard = guard;
            if req.uri().path() == "/slow-head" {
                tokio::time::sleep(ms(60_000)).await;
            }
            let body_guard = DropFlag(bd);
            let s = stream::unfold(body_guard, |g| async move {
                tokio::time::sleep(ms(100)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))),
                    g,
                ))
            });
            Ok::<_, Infallible>(Response::new(StreamBody::new(Box::pin(s) as FrameStream)))
        }
    });
    let svc = stack(WorkloadTimeoutLayer::new(), inner);

    let req = Request::get("/slow-head").body(()).unwrap();
    let call = svc.clone().oneshot(req);
    assert!(tokio::time::timeout(ms(50), call).await.is_err());
    assert!(future_dropped.load(Ordering::SeqCst));

    let res = svc.oneshot(Request::new(())).await.unwrap();
    let mut body = Box::pin(res.into_body());
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "x"
    );
    // Mid-wait for the next frame, with both timers armed.
    assert!(tokio::time::timeout(ms(50), body.frame()).await.is_err());
    assert!(!body_dropped.load(Ordering::SeqCst));
    drop(body);
    assert!(body_dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn debug_output_never_shows_request_headers() {
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::new())
        .layer(AttemptTimeoutLayer::new())
        .service(slow_service(ms(10), vec![]));
    let mut req = Request::new(());
    req.headers_mut()
        .insert("authorization", "Bearer sk-secret".parse().unwrap());
    let mut svc2 = svc.clone();
    let fut = svc2.call(req);
    let shown = format!("{fut:?}");
    assert!(!shown.contains("sk-secret"), "{shown}");
    let res = fut.await.unwrap();
    let shown = format!("{:?}", res.body());
    assert!(!shown.contains("sk-secret"), "{shown}");
}

#[cfg(feature = "grpc")]
mod grpc {
    use super::*;
    use std::error::Error as _;

    fn grpc_request() -> Request<()> {
        let mut req = Request::post("/grpc.health.v1.Health/Check")
            .body(())
            .unwrap();
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        req
    }

    fn status_of(err: &BoxError) -> &tonic::Status {
        err.downcast_ref::<tonic::Status>()
            .unwrap_or_else(|| panic!("not a Status: {err:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeouts_are_deadline_exceeded_with_the_timeout_as_source() {
        let svc = ServiceBuilder::new()
            .layer(WorkloadTimeoutLayer::new())
            .layer(
                AttemptTimeoutLayer::builder()
                    .headers(Workload::Interactive, ms(100))
                    .build()
                    .unwrap(),
            )
            .service(slow_service(ms(10_000), vec![]));
        let err = svc.clone().oneshot(grpc_request()).await.unwrap_err();
        let status = status_of(&err);
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let t = status
            .source()
            .unwrap()
            .downcast_ref::<TimeoutError>()
            .unwrap();
        assert_eq!(t.phase(), Phase::Headers);
        assert_eq!(classify_error(&*err), FailureKind::HeadersTimeout);

        // A plain HTTP request through the same stack gets the bare error.
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert!(err.is::<TimeoutError>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_grpc_stream_cut_by_total_ends_with_deadline_exceeded() {
        let workloads = WorkloadTimeoutLayer::builder()
            .total(Workload::Interactive, ms(500))
            .build()
            .unwrap();
        let svc = stack(workloads, slow_service(ms(0), vec![ms(100), ms(5000)]));
        let res = svc.oneshot(grpc_request()).await.unwrap();
        let (_, err) = drain(res.into_body()).await;
        let err = err.unwrap();
        assert_eq!(status_of(&err).code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            classify_body_error(&*err),
            FailureKind::TotalTimeout(Reach::Acknowledged)
        );
    }

    /// A server that answers Trailers-Only `status` after `after`: what a
    /// tonic server enforcing `grpc-timeout` does when it runs out.
    fn answers_status_after(
        after: Duration,
        status: tonic::Status,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<tonic::body::Body>,
        Error = BoxError,
        Future = impl Send,
    > + Clone {
        let status = Arc::new(status);
        service_fn(move |_req: Request<()>| {
            let status = status.clone();
            async move {
                tokio::time::sleep(after).await;
                let s = tonic::Status::new(status.code(), status.message());
                Ok::<_, BoxError>(s.into_http())
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_answer_at_the_deadline_is_the_deadline_and_one_before_it_is_the_servers() {
        let layers = |inner| {
            ServiceBuilder::new()
                .layer(WorkloadTimeoutLayer::new())
                .layer(AttemptTimeoutLayer::new())
                .service(inner)
        };
        let callers = |req: &mut Request<()>| {
            req.headers_mut()
                .insert("grpc-timeout", "700m".parse().unwrap());
        };
        // tonic's server answers CANCELLED "Timeout expired" as the budget
        // it was sent runs out: the same instant as the client's timer.
        for code in [tonic::Code::Cancelled, tonic::Code::DeadlineExceeded] {
            let svc = layers(answers_status_after(
                ms(700),
                tonic::Status::new(code, "Timeout expired"),
            ));
            let mut req = grpc_request();
            callers(&mut req);
            let err = svc.oneshot(req).await.unwrap_err();
            let status = status_of(&err);
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{code:?}");
            let t = status
                .source()
                .unwrap()
                .downcast_ref::<TimeoutError>()
                .unwrap();
            assert_eq!(
                (t.phase(), t.limit(), t.is_callers()),
                (Phase::Total, ms(700), true)
            );
            assert_eq!(
                classify_error(&*err),
                FailureKind::TotalTimeout(Reach::Acknowledged)
            );
        }
        // Well before the deadline, a CANCELLED is the server's own word.
        let svc = layers(answers_status_after(
            ms(300),
            tonic::Status::cancelled("going away"),
        ));
        let mut req = grpc_request();
        callers(&mut req);
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "1");
        // And with the workload layer alone (no attempt layer) the same rule.
        let svc = ServiceBuilder::new()
            .layer(WorkloadTimeoutLayer::new())
            .service(answers_status_after(
                ms(700),
                tonic::Status::cancelled("Timeout expired"),
            ));
        let mut req = grpc_request();
        callers(&mut req);
        let err = svc.oneshot(req).await.unwrap_err();
        assert_eq!(status_of(&err).code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_carries_a_grpc_timeout_and_tonic_expiry_is_reported_as_ours() {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        // Stands in for tonic's Channel, which enforces grpc-timeout itself
        // and fails with its own TimeoutExpired.
        let inner = service_fn(move |req: Request<()>| {
            *seen2.lock().unwrap() = req.headers().get("grpc-timeout").cloned();
            async { Err::<Response<Full<Bytes>>, BoxError>(Box::new(tonic::TimeoutExpired(()))) }
        });
        let svc = ServiceBuilder::new()
            .layer(
                AttemptTimeoutLayer::builder()
                    .headers(Workload::Interactive, ms(1500))
                    .build()
                    .unwrap(),
            )
            .service(inner);
        let err = svc.clone().oneshot(grpc_request()).await.unwrap_err();
        assert_eq!(seen.lock().unwrap().take().unwrap(), "1500000u");
        assert_eq!(status_of(&err).code(), tonic::Code::DeadlineExceeded);
        assert_eq!(classify_error(&*err), FailureKind::HeadersTimeout);
        let t = status_of(&err)
            .source()
            .unwrap()
            .downcast_ref::<TimeoutError>()
            .unwrap();
        assert_eq!(t.limit(), ms(1500));

        // A caller's smaller grpc-timeout is its deadline: what is left of
        // it is sent, and it is named as the limit that fired.
        let mut req = grpc_request();
        req.headers_mut()
            .insert("grpc-timeout", "100m".parse().unwrap());
        let err = svc.oneshot(req).await.unwrap_err();
        assert_eq!(seen.lock().unwrap().take().unwrap(), "100000u");
        let t = status_of(&err)
            .source()
            .unwrap()
            .downcast_ref::<TimeoutError>()
            .unwrap();
        assert_eq!((t.phase(), t.limit()), (Phase::Total, ms(100)));
        assert!(t.is_callers(), "{t}");
        assert_eq!(
            t.to_string(),
            "total timeout after 100ms (the caller's deadline)"
        );
    }
}
