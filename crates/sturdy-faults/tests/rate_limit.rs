//! The rate-limit and capacity modes over real loopback HTTP: the
//! `x-ratelimit-*` headers and their Go durations, 429s with their hints
//! and bodies, refills, the token estimate, suppressed headers, capacity
//! refusals, and how both count and stand behind faults.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use sturdy_faults::{
    CALL_HEADER, Capacity, FAULT_HEADER, FaultServer, Mix, OverCapacity, RateLimit,
};

const BODY: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;

/// Slack for durations the server computed a moment before (or after) the
/// client's own reckoning, on a noisy box.
const SLACK: Duration = Duration::from_millis(60);

/// Parses a Go `time.Duration` string: `0s`, `20ms`, `1.5s`, `6m0s`,
/// `1h2m3.004s`, `250µs`. Panics (failing the test) on anything else.
fn go_duration(text: &str) -> Duration {
    assert!(!text.is_empty(), "empty duration");
    if text == "0" {
        return Duration::ZERO;
    }
    let mut rest = text;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or_else(|| panic!("{text:?}: a number without a unit"));
        assert!(number_len > 0, "{text:?}: a unit without a number");
        let number: f64 = rest[..number_len]
            .parse()
            .unwrap_or_else(|_| panic!("{text:?}: bad number"));
        rest = &rest[number_len..];
        let (unit, scale) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("h", 3600.0),
            ("m", 60.0),
            ("s", 1.0),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))
        .unwrap_or_else(|| panic!("{text:?}: unknown unit at {rest:?}"));
        total += number * scale;
        rest = &rest[unit.len()..];
    }
    Duration::from_secs_f64(total)
}

fn near(got: Duration, want: Duration, slack: Duration) -> bool {
    got.abs_diff(want) <= slack
}

/// The `x-ratelimit-*` header names of an answer.
fn ratelimit_headers(reply: &Exchange) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("x-ratelimit-"))
        .collect()
}

fn number(reply: &Exchange, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {:?}", reply.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", reply.header(name)))
}

fn reset(reply: &Exchange, what: &str) -> Duration {
    let name = format!("x-ratelimit-reset-{what}");
    go_duration(
        reply
            .header(&name)
            .unwrap_or_else(|| panic!("no {name}: {:?}", reply.headers)),
    )
}

/// A chat request with body `body` (no script).
fn plain(base: &str, body: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    chat(base, body, &[])
}

/// The server's token estimate for `body` without a budget field, plus
/// `budget`.
fn cost(body: &str, budget: u64) -> u64 {
    body.len().div_ceil(4) as u64 + budget
}

/// Checks the OpenAI rate-limit error body of a refused request.
fn assert_rate_limit_body(reply: &Exchange, kind: &str) {
    let body = reply.json();
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], "rate_limit_exceeded", "{body}");
    assert!(error["param"].is_null(), "{body}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn headers_on_success_state_the_buckets_in_go_durations() {
    let server = FaultServer::builder()
        .rate_limit(
            RateLimit::per_second(10.0)
                .burst(5)
                .tokens_per_minute(60_000.0)
                .token_burst(1000),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();
    let body = r#"{"model":"gpt-test","max_tokens":100,"messages":[]}"#;
    let spent = cost(body, 100);

    let first = ok_exchange(&client, plain(&base, body)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("4"));
    // One request at 10 per second: 100 ms until full.
    let requests_reset = reset(&first, "requests");
    assert!(
        near(requests_reset, Duration::from_millis(100), SLACK),
        "{requests_reset:?}"
    );
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("1000"));
    let remaining = number(&first, "x-ratelimit-remaining-tokens");
    assert_eq!(remaining, 1000 - spent);
    // `spent` tokens at 1000 per second.
    let tokens_reset = reset(&first, "tokens");
    assert!(
        near(tokens_reset, Duration::from_millis(spent), SLACK),
        "{tokens_reset:?} for {spent} tokens"
    );
    for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
        let value = first.header(name).unwrap();
        assert!(
            value.ends_with("ms") || value.ends_with('s'),
            "{name}: {value:?}"
        );
        assert!(value.is_ascii(), "{name}: {value:?}");
    }
    assert!(first.header("retry-after").is_none());
    assert!(first.header("retry-after-ms").is_none());

    // Once the resets have passed, both buckets are full again.
    tokio::time::sleep(requests_reset.max(tokens_reset) + Duration::from_millis(20)).await;
    let second = ok_exchange(&client, plain(&base, body)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("x-ratelimit-remaining-requests"), Some("4"));
    assert_eq!(
        number(&second, "x-ratelimit-remaining-tokens"),
        1000 - spent
    );
    // Models are not limited: no headers.
    let models = ok_exchange(&client, get(&base, "/v1/models")).await;
    assert_eq!(models.status, StatusCode::OK);
    assert!(ratelimit_headers(&models).is_empty());
}

#[tokio::test]
async fn a_burst_beyond_the_bucket_gets_429s_until_room_comes_back() {
    let server = FaultServer::builder()
        .rate_limit(RateLimit::per_second(2.0).burst(3))
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();

    for i in 0..3 {
        let reply = ok_exchange(&client, plain(&base, BODY)).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(
            number(&reply, "x-ratelimit-remaining-requests"),
            2 - i,
            "request {i}"
        );
    }
    let refused = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_rate_limit_body(&refused, "requests");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("Rate limit reached for requests"),
        "{message}"
    );
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    // Until full: three requests at 2 per second, less what refilled.
    let until_full = reset(&refused, "requests");
    assert!(
        until_full <= Duration::from_millis(1500) && until_full > Duration::from_millis(1000),
        "{until_full:?}"
    );
    // Until room for one: two requests' refill (a second) less than until
    // full.
    let retry_ms = number(&refused, "retry-after-ms");
    assert!((1..=500).contains(&retry_ms), "{retry_ms}");
    assert!(
        near(
            Duration::from_millis(retry_ms) + Duration::from_secs(1),
            until_full,
            Duration::from_millis(3)
        ),
        "retry-after-ms {retry_ms}, reset {until_full:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(message.contains("Please try again in"), "{message}");

    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    let again = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("x-ratelimit-remaining-requests"), Some("0"));

    let board = server.dashboard();
    assert_eq!(board.received, 5);
    assert_eq!(board.responded(200), 4);
    assert_eq!(board.responded(429), 1);
    assert_eq!(board.too_many_requests, 1);
    assert_eq!(board.rate_limited, 1);
    assert_eq!(board.over_capacity, 0);
    assert!(board.faults.is_empty(), "{:?}", board.faults);
}

#[tokio::test]
async fn the_token_bucket_counts_the_estimate_and_refuses_a_huge_max_tokens() {
    // Ten tokens a second: refills are negligible while the test runs.
    let server = FaultServer::builder()
        .rate_limit(
            RateLimit::per_second(100.0)
                .tokens_per_minute(600.0)
                .token_burst(1000),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();

    // `max_completion_tokens` wins over `max_tokens`.
    let body = r#"{"max_tokens":1000000,"max_completion_tokens":10,"messages":[]}"#;
    let first = ok_exchange(&client, plain(&base, body)).await;
    assert_eq!(first.status, StatusCode::OK);
    let left = number(&first, "x-ratelimit-remaining-tokens");
    assert_eq!(left, 1000 - cost(body, 10));

    // Never fits: refused, nothing taken, no hint to come back.
    let huge = r#"{"max_tokens":1000000,"messages":[]}"#;
    let refused = ok_exchange(&client, plain(&base, huge)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_rate_limit_body(&refused, "tokens");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("Request too large"), "{message}");
    assert!(refused.header("retry-after").is_none());
    assert!(refused.header("retry-after-ms").is_none());
    let still = number(&refused, "x-ratelimit-remaining-tokens");
    assert!((left..=left + 2).contains(&still), "{still} vs {left}");
    let requests_left = number(&refused, "x-ratelimit-remaining-requests");
    assert!((99..=100).contains(&requests_left), "{requests_left}");

    // Fits now, not twice.
    let big = r#"{"max_tokens":900,"messages":[]}"#;
    let spent = cost(big, 900);
    let taken = ok_exchange(&client, plain(&base, big)).await;
    assert_eq!(taken.status, StatusCode::OK);
    let left = number(&taken, "x-ratelimit-remaining-tokens");
    assert!(
        (still - spent..=still - spent + 2).contains(&left),
        "{left}"
    );
    let refused = ok_exchange(&client, plain(&base, big)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_rate_limit_body(&refused, "tokens");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("Rate limit reached for tokens"),
        "{message}"
    );
    // Room for `spent` tokens comes back at 10 a second.
    let wait = Duration::from_millis(number(&refused, "retry-after-ms"));
    let want = Duration::from_secs_f64((spent - left) as f64 / 10.0);
    assert!(
        near(wait, want, Duration::from_millis(300)),
        "{wait:?} vs {want:?}"
    );
    assert_eq!(
        number(&refused, "retry-after"),
        wait.as_millis().div_ceil(1000) as u64
    );
    // Full in minutes: Go writes `1m33.5s`.
    let full = refused.header("x-ratelimit-reset-tokens").unwrap();
    assert!(full.contains('m') && full.ends_with('s'), "{full}");
    let want = Duration::from_secs_f64((1000 - left) as f64 / 10.0);
    assert!(
        near(go_duration(full), want, Duration::from_millis(300)),
        "{full} vs {want:?}"
    );

    let board = server.dashboard();
    assert_eq!(board.rate_limited, 2);
    assert_eq!(board.too_many_requests, 2);
}

#[tokio::test]
async fn headers_and_retry_hints_can_be_suppressed() {
    let quiet = FaultServer::builder()
        .rate_limit(RateLimit::per_second(1.0).headers(false))
        .start()
        .await
        .unwrap();
    let client = client();
    let base = quiet.base_url();
    let ok = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ratelimit_headers(&ok).is_empty(), "{:?}", ok.headers);
    let refused = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        ratelimit_headers(&refused).is_empty(),
        "{:?}",
        refused.headers
    );
    assert!(refused.header("retry-after-ms").is_some());
    assert_rate_limit_body(&refused, "requests");

    let silent = FaultServer::builder()
        .rate_limit(RateLimit::per_second(1.0).headers(false).retry_after(false))
        .start()
        .await
        .unwrap();
    let base = silent.base_url();
    assert_eq!(
        ok_exchange(&client, plain(&base, BODY)).await.status,
        StatusCode::OK
    );
    let refused = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(ratelimit_headers(&refused).is_empty());
    assert!(refused.header("retry-after-ms").is_none());
    assert!(refused.header("retry-after").is_none());
    assert_rate_limit_body(&refused, "requests");
}

#[tokio::test]
async fn capacity_refuses_exactly_the_requests_beyond_it() {
    let service = Duration::from_millis(250);
    for (over, status) in [
        (OverCapacity::TooManyRequests, StatusCode::TOO_MANY_REQUESTS),
        (
            OverCapacity::ServiceUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let server = FaultServer::builder()
            .capacity(Capacity::new(3).over(over).service_time(service))
            .start()
            .await
            .unwrap();
        let client = client();
        let base = server.base_url();

        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let (client, base) = (client.clone(), base.clone());
            tasks.spawn(async move { ok_exchange(&client, plain(&base, BODY)).await });
        }
        let mut served = 0;
        let mut refused = Vec::new();
        while let Some(reply) = tasks.join_next().await {
            let reply = reply.unwrap();
            if reply.status == StatusCode::OK {
                served += 1;
                assert!(reply.head_after >= service, "{:?}", reply.head_after);
            } else {
                refused.push(reply);
            }
        }
        assert_eq!(served, 3, "{over:?}");
        assert_eq!(refused.len(), 2, "{over:?}");
        for reply in &refused {
            assert_eq!(reply.status, status);
            // At once, not after a service time.
            assert!(reply.head_after < service, "{:?}", reply.head_after);
            assert!(ratelimit_headers(reply).is_empty(), "{:?}", reply.headers);
            assert!(reply.header("retry-after").is_none());
            assert!(reply.header("retry-after-ms").is_none());
            let body = reply.json();
            assert_eq!(body["error"]["type"], "server_error", "{body}");
            assert!(body["error"]["code"].is_null(), "{body}");
        }

        // The slots are free again.
        let later = ok_exchange(&client, plain(&base, BODY)).await;
        assert_eq!(later.status, StatusCode::OK);

        let board = server.dashboard();
        assert_eq!(board.received, 6);
        assert_eq!(board.over_capacity, 2);
        assert_eq!(board.rate_limited, 0);
        assert_eq!(board.responded(status.as_u16()), 2);
        let seen_429 = if status == StatusCode::TOO_MANY_REQUESTS {
            2
        } else {
            0
        };
        assert_eq!(board.too_many_requests, seen_429);
    }
}

#[tokio::test]
async fn a_slot_is_held_until_the_body_is_sent() {
    let server = FaultServer::builder()
        .capacity(Capacity::new(1).service_time(Duration::ZERO))
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();

    // A slow stream: its head comes at once, its body over ~400 ms.
    let slow = within(client.request(scripted(&base, true, "slow", "slow;ms=100;chunks=4")))
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    let busy = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);

    let body = within(http_body_util::BodyExt::collect(slow.into_body()))
        .await
        .unwrap()
        .to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    let free = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(free.status, StatusCode::OK);
    assert_eq!(server.dashboard().over_capacity, 1);
}

#[tokio::test]
async fn faults_that_replace_the_answer_go_first_and_refusals_are_counted() {
    let server = FaultServer::builder()
        .rate_limit(RateLimit::per_second(0.5).burst(1))
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();
    let with_script = |call: &str, script: &str| {
        chat(&base, BODY, &[(CALL_HEADER, call), (FAULT_HEADER, script)])
    };

    let first = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(first.status, StatusCode::OK);
    // A scripted 503 is answered as scripted, outside the limiter.
    let scripted_503 = ok_exchange(&client, with_script("a", "503")).await;
    assert_eq!(scripted_503.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ratelimit_headers(&scripted_503).is_empty());
    // So is a scripted 429, with its own hint and body.
    let scripted_429 = ok_exchange(&client, with_script("b", "429;retry-after=7")).await;
    assert_eq!(scripted_429.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(scripted_429.header("retry-after"), Some("7"));
    assert!(ratelimit_headers(&scripted_429).is_empty());

    // A normal answer (unscripted, or a scripted 200) and a fault that
    // only shapes the delivery meet the empty bucket.
    let mut seen_429 = 1;
    for request in [
        plain(&base, BODY),
        with_script("c", "200"),
        with_script("d", "delay;ms=10"),
    ] {
        let reply = ok_exchange(&client, request).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_rate_limit_body(&reply, "requests");
        assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
        seen_429 += 1;
    }
    // Files and models are not limited.
    let models = ok_exchange(&client, get(&base, "/v1/models")).await;
    assert_eq!(models.status, StatusCode::OK);

    let board = server.dashboard();
    assert_eq!(board.too_many_requests, seen_429);
    assert_eq!(board.responded(429), seen_429);
    assert_eq!(board.rate_limited, 3);
    // The refused `delay` was never applied.
    assert_eq!(board.faults("status"), 2);
    assert_eq!(board.faults("delay"), 0);

    // The same counts over HTTP, and on /metrics.
    let json = ok_exchange(&client, get(&base, "/dashboard")).await.json();
    assert_eq!(json["too_many_requests"], seen_429);
    assert_eq!(json["rate_limited"], 3);
    assert_eq!(json["over_capacity"], 0);
    let metrics =
        String::from_utf8(ok_exchange(&client, get(&base, "/metrics")).await.body()).unwrap();
    let line = format!(
        "sturdy_faults_requests_total{{route=\"chat_completions\",code=\"429\"}} {seen_429}\n"
    );
    assert!(metrics.contains(&line), "{metrics}");

    // A mix that always faults: the limiter never sees a request.
    let mixed = FaultServer::builder()
        .mix("503=1".parse::<Mix>().unwrap())
        .rate_limit(RateLimit::per_second(0.5).burst(1))
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        let reply = ok_exchange(&client, plain(&mixed.base_url(), BODY)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(mixed.dashboard().rate_limited, 0);
}

#[tokio::test]
async fn capacity_stands_before_the_rate_limit_and_behind_faults() {
    let server = FaultServer::builder()
        .capacity(
            Capacity::new(1)
                .over(OverCapacity::ServiceUnavailable)
                .service_time(Duration::from_millis(300)),
        )
        .rate_limit(RateLimit::per_second(0.5).burst(2))
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();

    let holder = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { ok_exchange(&client, plain(&base, BODY)).await })
    };
    // Wait until the holder is in service.
    within(async {
        while server.dashboard().received == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // A scripted fault that replaces the answer needs no slot.
    let scripted = ok_exchange(
        &client,
        chat(&base, BODY, &[(CALL_HEADER, "s"), (FAULT_HEADER, "500")]),
    )
    .await;
    assert_eq!(scripted.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Over capacity: refused before the rate limiter takes anything.
    let over = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(over.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ratelimit_headers(&over).is_empty());

    let held = holder.await.unwrap();
    assert_eq!(held.status, StatusCode::OK);
    assert_eq!(held.header("x-ratelimit-remaining-requests"), Some("1"));
    let next = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.header("x-ratelimit-remaining-requests"), Some("0"));

    let board = server.dashboard();
    assert_eq!(board.over_capacity, 1);
    assert_eq!(board.rate_limited, 0);
    assert_eq!(board.too_many_requests, 0);
}

#[tokio::test]
async fn builder_values_out_of_range_fail_start() {
    for limit in [
        RateLimit::per_second(f64::NAN),
        RateLimit::per_second(-5.0),
        RateLimit::per_second(1.0).burst(0),
        RateLimit::per_second(1.0).tokens_per_minute(f64::INFINITY),
    ] {
        let started = FaultServer::builder()
            .rate_limit(limit.clone())
            .start()
            .await;
        let error = started.expect_err(&format!("{limit:?}"));
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
    for capacity in [
        Capacity::new(0),
        Capacity::new(2).service_time(Duration::from_secs(24 * 3600)),
    ] {
        let started = FaultServer::builder()
            .capacity(capacity.clone())
            .start()
            .await;
        let error = started.expect_err(&format!("{capacity:?}"));
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[tokio::test]
async fn binary_serves_the_rate_limit_and_capacity_flags() {
    let (mut child, base) = spawn_binary([
        "--rate-limit",
        "rps=0.5,burst=1,tpm=60000",
        "--capacity",
        "n=4,over=503,service-ms=0",
    ])
    .await;
    let client = client();
    let ok = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("1"));
    assert_eq!(ok.header("x-ratelimit-limit-tokens"), Some("1000"));
    let refused = ok_exchange(&client, plain(&base, BODY)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_rate_limit_body(&refused, "requests");
    let board: sturdy_faults::Dashboard =
        serde_json::from_slice(&ok_exchange(&client, get(&base, "/dashboard")).await.body())
            .unwrap();
    assert_eq!(board.rate_limited, 1);
    assert_eq!(board.too_many_requests, 1);

    child.start_kill().unwrap();
    within(child.wait()).await.unwrap();
}

#[tokio::test]
async fn binary_rejects_bad_rate_limit_and_capacity_specs() {
    for (flag, spec, says) in [
        ("--rate-limit", "rps=-1", "not a number above 0"),
        ("--rate-limit", "rps=NaN", "not a number above 0"),
        ("--rate-limit", "rps=1e99", "not a number above 0"),
        ("--rate-limit", "burst=5", "lacks a rate"),
        ("--rate-limit", "rps=5,colour=red", "unknown rate-limit key"),
        ("--rate-limit", "rps=5,burst=0", "not a whole number"),
        ("--capacity", "n=0", "not a whole number"),
        ("--capacity", "n=5,over=500", "neither 429 nor 503"),
        ("--capacity", "over=429", "lacks n"),
    ] {
        let (code, stderr) = run_binary([format!("{flag}={spec}")]).await;
        assert_eq!(code, Some(2), "{flag} {spec}");
        assert!(stderr.contains(says), "{flag} {spec}: {stderr}");
    }
}

#[test]
fn go_durations_parse_back() {
    assert_eq!(go_duration("0s"), Duration::ZERO);
    assert_eq!(go_duration("20ms"), Duration::from_millis(20));
    assert_eq!(go_duration("1s"), Duration::from_secs(1));
    assert_eq!(go_duration("59.52s"), Duration::from_millis(59_520));
    assert_eq!(go_duration("6m0s"), Duration::from_secs(360));
    assert!(near(
        go_duration("1h2m3.004s"),
        Duration::from_millis(3_723_004),
        Duration::from_micros(1)
    ));
    assert_eq!(go_duration("250µs"), Duration::from_micros(250));
}
