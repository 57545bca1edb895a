//! The adaptive concurrency limit against a fake inner service, in paused
//! time: growth, decrease once per round, quota versus overload, waiting
//! in `poll_ready`, and permits given back on every path.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::BodyExt;
use sturdy_core::{BoxError, CallContext, Phase, Reach, TimeoutError};
use sturdy_rate::{AdaptiveBody, AdaptiveConcurrencyLayer, LimitConfigError};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt};

mod fake;
use fake::*;

#[tokio::test(start_paused = true)]
async fn grows_on_success_to_max_and_never_admits_more() {
    for slow_start in [true, false] {
        let layer = AdaptiveConcurrencyLayer::builder()
            .initial(4)
            .max(40)
            .slow_start(slow_start)
            .build()
            .unwrap();
        let fake = Fake {
            gauge: Some(layer.gauge()),
            ..Fake::default()
        };
        let most = Arc::clone(&fake.most);
        let svc = layer.layer(fake);
        let mut limits = vec![layer.limit()];
        for _ in 0..60 {
            wave(&svc, 64, || ok(Duration::from_millis(10))).await;
            limits.push(layer.limit());
            assert!(layer.in_flight() == 0 && layer.waiting() == 0);
        }
        assert_eq!(layer.limit(), 40, "slow start {slow_start}: {limits:?}");
        assert!(limits.windows(2).all(|w| w[0] <= w[1]), "{limits:?}");
        assert!(most.load(Ordering::SeqCst) <= 40);
        if slow_start {
            // +1 per success: 64 successes take it from 4 past 40.
            assert_eq!(limits[1], 40, "{limits:?}");
        } else {
            // +1 per L successes: 64 successes take it from 4 to about
            // 12 (4 + 5 + ... + 11 = 60).
            assert!((10..=13).contains(&limits[1]), "{limits:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_503s_shrinks_once_and_never_below_min() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(100)
        .min(5)
        .slow_start(false)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let overloaded = || {
        reply(
            503,
            r#"{"error":{"type":"server_error"}}"#,
            Duration::from_millis(20),
        )
    };
    // 100 requests in flight together, all refused: one decrease.
    wave(&svc, 100, overloaded).await;
    assert_eq!(layer.limit(), 90, "×0.9 once, not 0.9^100");
    assert_eq!(layer.in_flight(), 0);
    // Each later round sent under the lower limit shrinks it again, down
    // to the floor and no further.
    let mut limits = vec![layer.limit()];
    for _ in 0..40 {
        wave(&svc, 100, overloaded).await;
        limits.push(layer.limit());
    }
    assert!(limits.windows(2).all(|w| w[0] >= w[1]), "{limits:?}");
    assert_eq!(layer.limit(), 5, "{limits:?}");
    // 529 and a timeout after sending count too; a 500, no.
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(50)
        .slow_start(false)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    call_and_read(svc.clone(), reply(500, "", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(layer.limit(), 50);
    call_and_read(svc.clone(), reply(529, "", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(layer.limit(), 45);
}

#[tokio::test(start_paused = true)]
async fn a_quota_429_does_not_shrink_the_limit_a_plain_429_does() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(20)
        .slow_start(false)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let at_once = Duration::ZERO;
    // Whole, with a content-length.
    let body = call_and_read(svc.clone(), reply(429, QUOTA, at_once))
        .await
        .unwrap();
    assert_eq!(body, QUOTA.as_bytes(), "frames pass unchanged");
    assert_eq!(layer.limit(), 20);
    // In three chunks of unknown length.
    let (a, rest) = QUOTA.split_at(10);
    let (b, c) = rest.split_at(30);
    let chunked = Answer::Reply {
        status: 429,
        headers: vec![("content-type", "application/json")],
        chunks: [a, b, c]
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .to_vec(),
        exact: false,
        trailers: None,
        delay: at_once,
    };
    call_and_read(svc.clone(), chunked).await.unwrap();
    assert_eq!(layer.limit(), 20);
    // Read whole but dropped before its end was seen: what was read decides.
    let (tx, answer) = stream(429);
    tx.send(Ok(Frame::data(Bytes::from_static(QUOTA.as_bytes()))))
        .unwrap();
    let resp = svc.clone().oneshot(Request::new(answer)).await.unwrap();
    let mut body = resp.into_body();
    assert!(body.frame().await.is_some());
    drop(body);
    assert_eq!((layer.limit(), layer.in_flight()), (20, 0));
    // A 403 says nothing about capacity, quota or not.
    call_and_read(svc.clone(), reply(403, RATE, at_once))
        .await
        .unwrap();
    assert_eq!(layer.limit(), 20);
    // A rate limit is overload.
    call_and_read(svc.clone(), reply(429, RATE, at_once))
        .await
        .unwrap();
    assert_eq!(layer.limit(), 18);
    // So is a 429 whose body is dropped unread, and one too large to be
    // an error body, whatever it says.
    let resp = svc
        .clone()
        .oneshot(Request::new(reply(429, QUOTA, at_once)))
        .await
        .unwrap();
    drop(resp);
    assert_eq!(layer.limit(), 16);
    let padded = format!("{QUOTA}{}", " ".repeat(70 * 1024));
    let big = Answer::Reply {
        status: 429,
        headers: vec![],
        chunks: padded
            .as_bytes()
            .chunks(16 * 1024)
            .map(Bytes::copy_from_slice)
            .collect(),
        exact: false,
        trailers: None,
        delay: at_once,
    };
    call_and_read(svc.clone(), big).await.unwrap();
    assert_eq!(layer.limit(), 14);
    assert_eq!(layer.in_flight(), 0);
}

/// One call as a retry layer makes it: a plan, its first attempt counted,
/// the body read to its end; the call's record afterwards.
async fn attempt(svc: Svc, answer: Answer) -> CallContext {
    let mut req = Request::new(answer);
    let ctx = CallContext::attach(&mut req);
    ctx.record_attempt();
    let resp = svc.oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    ctx
}

/// `n` answers that stay open, each holding its permit until dropped.
async fn hold(svc: &Svc, n: usize) -> Vec<(mpsc::UnboundedSender<Sent>, AdaptiveBody<TestBody>)> {
    let mut held = Vec::new();
    for _ in 0..n {
        let (tx, answer) = stream(200);
        let resp = svc.clone().oneshot(Request::new(answer)).await.unwrap();
        held.push((tx, resp.into_body()));
    }
    held
}

#[tokio::test(start_paused = true)]
async fn an_overload_is_marked_queued_only_when_it_leaves_the_limit_full() {
    let limiter = |initial, min| {
        AdaptiveConcurrencyLayer::builder()
            .initial(initial)
            .min(min)
            .slow_start(false)
            // Next to no growth: the limits below are the decreases'.
            .increase(1e-6)
            .build()
            .unwrap()
    };
    let refused = || reply(503, "", Duration::ZERO);

    // Alone under a limit of 20: the limit shrinks, but a retry would find
    // room at once, so it needs its backoff.
    let layer = limiter(20, 1);
    let svc = layer.layer(fake());
    let ctx = attempt(svc.clone(), refused()).await;
    assert_eq!(layer.limit(), 18);
    assert!(!ctx.overload_queued());

    // Three others in flight under a limit of 4: it shrinks to 3, which
    // the three fill; the retry waits for a permit.
    let layer = limiter(4, 1);
    let svc = layer.layer(fake());
    let held = hold(&svc, 3).await;
    let ctx = attempt(svc.clone(), refused()).await;
    assert_eq!((layer.limit(), layer.in_flight()), (3, 3));
    assert!(ctx.overload_queued());
    // The mark is the attempt's: the next attempt starts unmarked.
    ctx.record_attempt();
    assert!(!ctx.overload_queued());
    // With a caller waiting for a permit as it ends, an attempt leaves the
    // limit full whatever it says: only an overload is marked, not a
    // success nor a quota error.
    drop(held);
    let held = hold(&svc, 2).await;
    let delayed = |status, body| reply(status, body, Duration::from_millis(10));
    for (answer, marked) in [
        (ok(Duration::from_millis(10)), false),
        (delayed(429, QUOTA), false),
        (delayed(429, RATE), true),
    ] {
        let call = tokio::spawn(attempt(svc.clone(), answer));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiter = tokio::spawn(call_and_read(svc.clone(), ok(Duration::ZERO)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(layer.waiting(), 1);
        let ctx = call.await.unwrap();
        assert_eq!(ctx.overload_queued(), marked, "{:?}", ctx);
        if marked {
            // The limit (3.6 × 0.9) stays at 3, which the two held and
            // the waiter, let in, filled.
            assert_eq!(layer.limit(), 3);
            drop(held);
            waiter.await.unwrap().unwrap();
            break;
        }
        waiter.await.unwrap().unwrap();
    }

    // At its floor the limit cannot slow the retry down any further: it
    // needs its backoff.
    let layer = limiter(2, 2);
    let svc = layer.layer(fake());
    let held = hold(&svc, 1).await;
    let ctx = attempt(svc.clone(), refused()).await;
    assert_eq!(layer.limit(), 2);
    assert!(!ctx.overload_queued());
    drop(held);

    // Without a plan there is nobody to tell, and nothing breaks.
    let layer = limiter(4, 1);
    let svc = layer.layer(fake());
    let held = hold(&svc, 3).await;
    call_and_read(svc.clone(), refused()).await.unwrap();
    assert_eq!(layer.limit(), 3);
    drop(held);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_pends_at_the_limit_and_wakes_when_a_body_ends() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(2)
        .max(2)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let (tx1, a1) = stream(200);
    let (tx2, a2) = stream(200);
    let r1 = svc.clone().oneshot(Request::new(a1)).await.unwrap();
    let r2 = svc.clone().oneshot(Request::new(a2)).await.unwrap();
    assert_eq!(layer.in_flight(), 2, "open streams hold their permits");

    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));
    let mut third = svc.clone();
    let mut fourth = svc.clone();
    assert!(poll_ready(&mut third, &waker).is_pending());
    assert!(poll_ready(&mut fourth, &waker).is_pending());
    assert!(
        poll_ready(&mut third, &waker).is_pending(),
        "polled again: still waiting"
    );
    assert_eq!(layer.waiting(), 2);
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);

    // The first stream sends a chunk: still open, nobody woken.
    tx1.send(Ok(Frame::data(Bytes::from_static(b"data: {}\n\n"))))
        .unwrap();
    let mut b1 = r1.into_body();
    assert!(b1.frame().await.is_some());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    // It ends: its permit goes to the longest waiter, who is woken.
    drop(tx1);
    assert!(b1.frame().await.is_none());
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert!(
        poll_ready(&mut fourth, &waker).is_pending(),
        "first come, first served"
    );
    assert!(poll_ready(&mut third, &waker).is_ready());
    assert_eq!((layer.in_flight(), layer.waiting()), (2, 1));
    let (tx3, a3) = stream(200);
    let r3 = third.call(Request::new(a3)).await.unwrap();
    // The second ends with an error: the fourth goes in.
    tx2.send(Err(io::Error::other("cut"))).unwrap();
    assert!(r2.into_body().collect().await.is_err());
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
    assert!(poll_ready(&mut fourth, &waker).is_ready());
    drop((r3, tx3, fourth, third));
    assert_eq!((layer.in_flight(), layer.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn every_dropped_future_body_or_service_gives_its_permit_back() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(1)
        .max(1)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));

    // A response future dropped before its response.
    let mut s = svc.clone();
    assert!(poll_ready(&mut s, &waker).is_ready());
    let fut = s.call(Request::new(Answer::Hang));
    assert_eq!(layer.in_flight(), 1);
    drop(fut);
    assert_eq!(layer.in_flight(), 0);

    // A body dropped mid-stream.
    let (tx, answer) = stream(200);
    let resp = svc.clone().oneshot(Request::new(answer)).await.unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
        .unwrap();
    let mut body: AdaptiveBody<TestBody> = resp.into_body();
    assert!(body.frame().await.is_some());
    assert_eq!(layer.in_flight(), 1);
    drop(body);
    assert_eq!(layer.in_flight(), 0);

    // A service that got ready and was dropped without a call.
    let mut ready = svc.clone();
    assert!(poll_ready(&mut ready, &waker).is_ready());
    assert_eq!(layer.in_flight(), 1);
    // One waiting behind it, dropped while waiting.
    let mut behind = svc.clone();
    assert!(poll_ready(&mut behind, &waker).is_pending());
    drop(behind);
    assert_eq!(layer.waiting(), 0);
    // Another waits, is handed the permit, and is dropped before it
    // claims it: the permit goes to the next one.
    let mut granted = svc.clone();
    let mut next = svc.clone();
    assert!(poll_ready(&mut granted, &waker).is_pending());
    assert!(poll_ready(&mut next, &waker).is_pending());
    drop(ready);
    assert_eq!((layer.in_flight(), layer.waiting()), (1, 1));
    drop(granted);
    assert!(poll_ready(&mut next, &waker).is_ready());
    drop(next);
    assert_eq!((layer.in_flight(), layer.waiting()), (0, 0));

    // A clone never carries its original's permit.
    let mut original = svc.clone();
    assert!(poll_ready(&mut original, &waker).is_ready());
    let mut copy = original.clone();
    assert!(poll_ready(&mut copy, &waker).is_pending());
    drop(original);
    assert!(poll_ready(&mut copy, &waker).is_ready());
    drop(copy);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_permit_leaks_when_calls_are_cancelled_at_random() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(8)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let mut set = tokio::task::JoinSet::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for i in 0..400u64 {
        let svc = svc.clone();
        let answer = match next(6) {
            0 => Answer::Hang,
            1 => reply(503, "busy", Duration::from_millis(next(20))),
            2 => Answer::Fail(
                || io::Error::from(io::ErrorKind::ConnectionReset).into(),
                Duration::from_millis(next(20)),
            ),
            3 => {
                let (tx, answer) = stream(200);
                // The stream stays open as long as its sender lives: past
                // some cancellations, not others.
                let hold = Duration::from_millis(next(40));
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x"))));
                    tokio::time::sleep(hold).await;
                    drop(tx);
                });
                answer
            }
            _ => ok(Duration::from_millis(next(30))),
        };
        let give_up = Duration::from_millis(next(50));
        let abort_instead = i % 7 == 0;
        let handle = set.spawn(async move {
            let _ = tokio::time::timeout(give_up, call_and_read(svc, answer)).await;
        });
        if abort_instead {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                handle.abort();
            });
        }
    }
    while set.join_next().await.is_some() {}
    assert_eq!((layer.in_flight(), layer.waiting()), (0, 0));
    // And the limit still admits.
    let limit = layer.limit();
    assert!(limit >= 1);
    call_and_read(svc.clone(), ok(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn errors_shrink_only_when_they_say_overload() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(100)
        .slow_start(false)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let later = Duration::from_millis(5);
    // Nothing about capacity: refused connections, timeouts before
    // sending, resets.
    for err in [
        (|| io::Error::from(io::ErrorKind::ConnectionRefused).into()) as fn() -> BoxError,
        || TimeoutError::new(Phase::Ready, Duration::from_secs(1), Reach::NotSent).into(),
        || TimeoutError::new(Phase::Total, Duration::from_secs(1), Reach::NotSent).into(),
        || io::Error::from(io::ErrorKind::ConnectionReset).into(),
    ] {
        let e = call_and_read(svc.clone(), Answer::Fail(err, later))
            .await
            .unwrap_err();
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(layer.limit(), 100);
    // A headers timeout passes up unchanged, and shrinks.
    let headers =
        || TimeoutError::new(Phase::Headers, Duration::from_secs(1), Reach::Unknown).into();
    let e = call_and_read(svc.clone(), Answer::Fail(headers, later))
        .await
        .unwrap_err();
    assert!(
        e.downcast_ref::<TimeoutError>().is_some(),
        "the error is passed up as it is"
    );
    assert_eq!(layer.limit(), 90);
    // A read timeout in the body of a success shrinks too.
    let (tx, answer) = stream(200);
    tx.send(Err(io::Error::other(TimeoutError::new(
        Phase::Read,
        Duration::from_secs(1),
        Reach::Acknowledged,
    ))))
    .unwrap();
    assert!(call_and_read(svc.clone(), answer).await.is_err());
    assert_eq!(layer.limit(), 81);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_answers_are_judged_by_their_trailers() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(30)
        .slow_start(false)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    let grpc = |code: &'static str| {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        let mut req = Request::new(Answer::Reply {
            status: 200,
            headers: vec![("content-type", "application/grpc")],
            chunks: vec![Bytes::from_static(b"\0\0\0\0\0")],
            exact: false,
            trailers: Some(trailers),
            delay: Duration::ZERO,
        });
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        req
    };
    let run = |req| {
        let svc = svc.clone();
        async move {
            svc.oneshot(req)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
        }
    };
    run(grpc("0")).await;
    run(grpc("5")).await; // NOT_FOUND: says nothing
    assert_eq!(layer.limit(), 30);
    let collected = run(grpc("8")).await; // RESOURCE_EXHAUSTED
    assert!(collected.trailers().is_some(), "trailers pass through");
    assert_eq!(layer.limit(), 27);
    run(grpc("14")).await; // UNAVAILABLE
    assert_eq!(layer.limit(), 24);
}

#[tokio::test(start_paused = true)]
async fn a_limit_nobody_reaches_does_not_grow() {
    let layer = AdaptiveConcurrencyLayer::new();
    let svc = layer.layer(fake());
    for _ in 0..200 {
        call_and_read(svc.clone(), ok(Duration::from_millis(1)))
            .await
            .unwrap();
    }
    assert_eq!(layer.limit(), 16, "one at a time never reaches half of 16");
    // Eight at a time do.
    for _ in 0..20 {
        wave(&svc, 8, || ok(Duration::from_millis(1))).await;
    }
    assert!(layer.limit() > 16);
}

#[test]
fn bad_settings_are_typed_errors_and_initial_is_clamped() {
    let b = AdaptiveConcurrencyLayer::builder;
    assert_eq!(b().min(0).build().unwrap_err(), LimitConfigError::ZeroMin);
    assert_eq!(
        b().min(9).max(3).build().unwrap_err(),
        LimitConfigError::MinAboveMax { min: 9, max: 3 }
    );
    for d in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(b().decrease(d).build(), Err(LimitConfigError::Decrease(_))),
            "{d}"
        );
    }
    for i in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(b().increase(i).build(), Err(LimitConfigError::Increase(_))),
            "{i}"
        );
    }
    for err in [
        LimitConfigError::ZeroMin,
        LimitConfigError::Decrease(f64::NAN),
        LimitConfigError::Increase(0.0),
        LimitConfigError::MinAboveMax { min: 2, max: 1 },
    ] {
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(b().min(5).initial(1).build().unwrap().limit(), 5);
    assert_eq!(b().max(3).initial(10).build().unwrap().limit(), 3);
    assert_eq!(b().min(7).max(7).build().unwrap().limit(), 7);
    assert_eq!(
        b().max(usize::MAX)
            .initial(usize::MAX)
            .build()
            .unwrap()
            .limit(),
        usize::MAX
    );
    let layer = AdaptiveConcurrencyLayer::default();
    assert!(format!("{layer:?}").contains("limit: 16"));
}
