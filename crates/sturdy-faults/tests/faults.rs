//! Every fault kind against a real client, scripted per call or drawn from a
//! seeded mix, with the dashboard checked exactly after each scenario.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultParams, FaultServer, Mix};

#[tokio::test]
async fn status_carries_each_hint_header_and_a_json_error() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let base = server.base_url();

    let plain = ok_exchange(&client, scripted(&base, false, "a", "500")).await;
    assert_eq!(plain.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(plain.json()["error"]["code"], 500);
    assert_eq!(
        plain.header("content-length"),
        Some(plain.body().len().to_string().as_str())
    );
    assert!(plain.header("retry-after").is_none());

    let seconds = ok_exchange(&client, scripted(&base, false, "b", "429;retry-after=2")).await;
    assert_eq!(seconds.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(seconds.header("retry-after"), Some("2"));

    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let script = format!("503;retry-after=\"{date}\"");
    let dated = ok_exchange(&client, scripted(&base, false, "c", &script)).await;
    assert_eq!(dated.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(dated.header("retry-after"), Some(date));

    let millis = ok_exchange(
        &client,
        scripted(&base, true, "d", "503;retry-after-ms=250"),
    )
    .await;
    assert_eq!(millis.header("retry-after-ms"), Some("250"));
    assert_eq!(millis.header("content-type"), Some("application/json"));

    let told = ok_exchange(
        &client,
        scripted(&base, false, "e", "409;x-should-retry=true"),
    )
    .await;
    assert_eq!(told.status, StatusCode::CONFLICT);
    assert_eq!(told.header("x-should-retry"), Some("true"));
    let refused = ok_exchange(
        &client,
        scripted(&base, false, "f", "500;x-should-retry=false"),
    )
    .await;
    assert_eq!(refused.header("x-should-retry"), Some("false"));

    assert_eq!(
        server.dashboard(),
        dashboard(
            6,
            &[(409, 1), (429, 1), (500, 2), (503, 2)],
            &[("status", 6)]
        )
    );
}

#[tokio::test]
async fn script_gives_nth_entry_then_repeats_the_last() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let base = server.base_url();
    let script = "503;retry-after-ms=200, 429, 200";
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    // Interleaved calls keep separate counts.
    for _ in 0..4 {
        seen_a.push(
            ok_exchange(&client, scripted(&base, false, "call-a", script))
                .await
                .status,
        );
        seen_b.push(
            ok_exchange(&client, scripted(&base, false, "call-b", script))
                .await
                .status,
        );
    }
    let expected = [503, 429, 200, 200].map(|s| StatusCode::from_u16(s).unwrap());
    assert_eq!(seen_a, expected);
    assert_eq!(seen_b, expected);
    // Without a call ID every request is a first attempt.
    let anonymous = chat(&base, "{}", &[(FAULT_HEADER, "502, 200")]);
    assert_eq!(
        ok_exchange(&client, anonymous).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        server.dashboard(),
        dashboard(
            9,
            &[(200, 4), (429, 2), (502, 1), (503, 2)],
            &[("status", 5)]
        )
    );
}

#[tokio::test]
async fn garbage_fault_header_gets_a_400_naming_the_problem() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let base = server.base_url();
    for (script, needle) in [
        ("5x3", "unknown fault"),
        ("700", "outside 200..=599"),
        ("delay;ms=soon", "bad value"),
        ("reset;ms=1", "takes no parameter"),
        ("503,,200", "empty"),
    ] {
        let reply = ok_exchange(&client, scripted(&base, false, "g", script)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{script}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(needle), "{script}: {message}");
    }
    let mut request = chat(&base, "{}", &[(CALL_HEADER, "g")]);
    request.headers_mut().insert(
        FAULT_HEADER,
        http::HeaderValue::from_bytes(b"50\xff").unwrap(),
    );
    assert_eq!(
        ok_exchange(&client, request).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(server.dashboard(), dashboard(6, &[(400, 6)], &[]));
}

#[tokio::test]
async fn delay_holds_the_response_head() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let reply = ok_exchange(
        &client,
        scripted(&server.base_url(), false, "d", "delay;ms=300"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.head_after >= Duration::from_millis(300),
        "{:?}",
        reply.head_after
    );
    assert!(reply.body_error.is_none());
    assert_eq!(
        server.dashboard(),
        dashboard(1, &[(200, 1)], &[("delay", 1)])
    );
}

#[tokio::test]
async fn stall_pauses_after_the_first_chunk_or_half_the_json() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let base = server.base_url();
    let sse = ok_exchange(&client, scripted(&base, true, "s1", "stall;ms=400")).await;
    assert_eq!(sse.frames.len(), 6);
    let gap = sse.frames[1].0 - sse.frames[0].0;
    assert!(gap >= Duration::from_millis(350), "gap {gap:?}");
    assert!(sse.body_error.is_none());
    assert_eq!(&sse.frames[5].1[..], b"data: [DONE]\n\n");

    let json = ok_exchange(&client, scripted(&base, false, "s2", "stall;ms=400")).await;
    assert_eq!(json.frames.len(), 2, "half, pause, rest");
    let gap = json.frames[1].0 - json.frames[0].0;
    assert!(gap >= Duration::from_millis(350), "gap {gap:?}");
    assert!(
        json.head_after < Duration::from_millis(350),
        "head is not held"
    );
    assert_eq!(json.json()["object"], "chat.completion");
    assert_eq!(
        json.header("content-length"),
        Some(json.body().len().to_string().as_str())
    );
    assert_eq!(
        server.dashboard(),
        dashboard(2, &[(200, 2)], &[("stall", 2)])
    );
}

#[tokio::test]
async fn slow_spaces_every_chunk() {
    let server = FaultServer::builder()
        .params(FaultParams {
            slow_ms: 200,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let client = client();
    let reply = ok_exchange(
        &client,
        scripted(&server.base_url(), true, "s", "slow;chunks=3"),
    )
    .await;
    assert_eq!(reply.frames.len(), 4);
    for pair in reply.frames.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_millis(140), "gap {gap:?}");
    }
    assert!(reply.body_error.is_none());
    assert_eq!(
        server.dashboard(),
        dashboard(1, &[(200, 1)], &[("slow", 1)])
    );
}

#[tokio::test]
async fn reset_fails_the_body_after_some_bytes() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let base = server.base_url();

    let json = ok_exchange(&client, scripted(&base, false, "r1", "reset")).await;
    assert_eq!(json.status, StatusCode::OK);
    let announced: usize = json.header("content-length").unwrap().parse().unwrap();
    let got = json.body().len();
    assert!(got > 0 && got < announced, "{got} of {announced} bytes");
    assert!(json.body_error.is_some());

    let sse = ok_exchange(&client, scripted(&base, true, "r2", "reset")).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.frames.len(), 1);
    assert!(sse.frames[0].1.starts_with(b"data: {"));
    assert!(sse.body_error.is_some());

    assert_eq!(
        server.dashboard(),
        dashboard(2, &[(200, 2)], &[("reset", 2)])
    );
}

#[tokio::test]
async fn close_drops_the_connection_without_a_response() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let result = exchange(&client, scripted(&server.base_url(), false, "c", "close")).await;
    assert!(result.is_err(), "got a response: {result:?}");
    assert_eq!(server.dashboard(), dashboard(1, &[], &[("close", 1)]));
    // The next attempt of the same call is served on a new connection.
    let again = ok_exchange(
        &client,
        scripted(&server.base_url(), false, "c", "close, 200"),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        server.dashboard(),
        dashboard(2, &[(200, 1)], &[("close", 1)])
    );
}

/// Status (or "reset") of each of `n` sequential unscripted requests.
async fn outcomes(server: &FaultServer, n: usize) -> Vec<String> {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        let reply = ok_exchange(&client, chat(&server.base_url(), "{}", &[])).await;
        let mut outcome = reply.status.as_str().to_owned();
        if reply.body_error.is_some() {
            outcome.push_str("+reset");
        }
        seen.push(outcome);
    }
    seen
}

#[tokio::test]
async fn seeded_mix_repeats_its_fault_sequence() {
    let mix: Mix = "503=0.3,429=0.2,reset=0.1,delay;ms=1=0.1".parse().unwrap();
    let start = |seed| FaultServer::builder().mix(mix.clone()).seed(seed).start();
    let (a, b, c) = (
        start(7).await.unwrap(),
        start(7).await.unwrap(),
        start(8).await.unwrap(),
    );
    let (seen_a, seen_b, seen_c) = (
        outcomes(&a, 30).await,
        outcomes(&b, 30).await,
        outcomes(&c, 30).await,
    );
    assert_eq!(seen_a, seen_b);
    assert_ne!(seen_a, seen_c);
    assert_eq!(a.dashboard(), b.dashboard());
    let board = a.dashboard();
    assert_eq!(board.received, 30);
    assert_eq!(board.responded.values().sum::<u64>(), 30);
    assert!(
        board.faults("status") > 0 && board.faults("reset") > 0,
        "{board:?}"
    );
    assert_eq!(
        board.faults("status"),
        board.responded(503) + board.responded(429)
    );
    assert_eq!(
        board.faults("reset"),
        seen_a.iter().filter(|o| o.ends_with("+reset")).count() as u64
    );
    // A script overrides the mix.
    let scripted_reply = ok_exchange(&client(), scripted(&a.base_url(), false, "x", "200")).await;
    assert_eq!(scripted_reply.status, StatusCode::OK);
}

#[tokio::test]
async fn mix_entries_take_server_defaults() {
    let server = FaultServer::builder()
        .mix("503=0.5,delay=0.5".parse().unwrap())
        .params(FaultParams {
            delay_ms: 200,
            retry_after_ms: Some(40),
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let client = client();
    let (mut unavailable, mut delayed) = (0, 0);
    for _ in 0..12 {
        let reply = ok_exchange(&client, chat(&server.base_url(), "{}", &[])).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
            assert_eq!(reply.header("retry-after-ms"), Some("40"));
        } else {
            delayed += 1;
            assert_eq!(reply.status, StatusCode::OK);
            assert!(
                reply.head_after >= Duration::from_millis(200),
                "{:?}",
                reply.head_after
            );
        }
    }
    // A scripted 503 keeps to its script: no default hint.
    let own = ok_exchange(&client, scripted(&server.base_url(), false, "own", "503")).await;
    assert!(own.header("retry-after-ms").is_none());
    assert_eq!(
        server.dashboard(),
        dashboard(
            13,
            &[(200, delayed), (503, unavailable + 1)],
            &[("delay", delayed), ("status", unavailable + 1)]
        )
    );
}

#[tokio::test]
async fn hostile_heads_carry_every_ambiguity_they_promise() {
    let server = FaultServer::start().await.unwrap();
    // hyper-util parses at most 100 headers: a roomier client reads it all.
    let roomy: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http1_max_headers(5_000)
            .build_http();
    let head = ok_exchange(&roomy, scripted(&server.base_url(), false, "h", "hostile")).await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    let junk = head
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-sturdy-junk-"))
        .count();
    assert_eq!(junk, sturdy_faults::DEFAULT_HOSTILE_HEADERS);
    let retry_after: Vec<_> = head.headers.get_all("retry-after").iter().collect();
    assert_eq!(retry_after, ["1", "3600"]);
    assert!(head.headers["retry-after-ms"].to_str().is_err());
    assert_eq!(head.headers["x-should-retry"].len(), 8 * 1024);
    // A default client refuses the head; the server answered it all the same.
    let refused = exchange(
        &client(),
        scripted(&server.base_url(), false, "h2", "hostile;headers=101"),
    )
    .await;
    assert!(refused.is_err(), "101 junk headers were read: {refused:?}");
    let few = ok_exchange(
        &client(),
        scripted(&server.base_url(), false, "h3", "hostile;headers=3"),
    )
    .await;
    assert_eq!(few.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        server.dashboard(),
        dashboard(3, &[(503, 3)], &[("hostile", 3)])
    );
}

#[tokio::test]
async fn idle_close_closes_a_reused_connection_before_reading_it() {
    let server = FaultServer::builder()
        .idle_close(1.0)
        .start()
        .await
        .unwrap();
    let client = client();
    let first = ok_exchange(&client, get(&server.base_url(), "/v1/models")).await;
    assert_eq!(first.status, StatusCode::OK);
    // The pool takes the connection back in a task of its own; give it the
    // time, so that the next request reuses the connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lost = exchange(&client, get(&server.base_url(), "/v1/models")).await;
    assert!(lost.is_err(), "the reused connection answered: {lost:?}");
    assert_eq!(
        server.dashboard(),
        dashboard(1, &[(200, 1)], &[("idle_close", 1)])
    );
    // A fresh connection is never idle: served.
    let again = ok_exchange(&client, get(&server.base_url(), "/v1/models")).await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn an_idle_close_probability_outside_0_to_1_is_refused() {
    for p in [-0.1, 1.5, f64::NAN] {
        let err = FaultServer::builder()
            .idle_close(p)
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{p}");
    }
}
