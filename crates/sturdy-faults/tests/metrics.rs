//! `GET /metrics`: the server's own request counter, read over real
//! loopback HTTP, against the dashboard's `received` after every kind of
//! ending a request can have.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer, Mix};

const SERIES: &str = "sturdy_faults_requests_total";

/// `(route, code)` → count, from the exposition the server wrote (its
/// format is fixed, so a strict reading doubles as a format check).
type Samples = BTreeMap<(String, String), u64>;

fn samples(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let rest = line
            .strip_prefix(SERIES)
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let (labels, value) = rest
            .strip_prefix("{route=\"")
            .and_then(|r| r.split_once("\"} "))
            .unwrap_or_else(|| panic!("unexpected labels in {line:?}"));
        let (route, code) = labels
            .split_once("\",code=\"")
            .unwrap_or_else(|| panic!("unexpected labels in {line:?}"));
        let n: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value {line:?}"));
        assert!(
            out.insert((route.to_owned(), code.to_owned()), n).is_none(),
            "duplicate series {line:?}"
        );
    }
    out
}

/// Scrapes `/metrics`, checking the answer is a whole, unfaulted exposition.
async fn scrape(client: &HttpClient, base: &str) -> (String, Samples) {
    let reply = ok_exchange(client, get(base, "/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(reply.body()).expect("UTF-8 exposition");
    assert!(text.starts_with(&format!("# HELP {SERIES} ")), "{text}");
    assert!(
        text.contains(&format!("\n# TYPE {SERIES} counter\n")),
        "{text}"
    );
    let parsed = samples(&text);
    (text, parsed)
}

fn total(samples: &Samples) -> u64 {
    samples.values().sum()
}

fn expected(rows: &[(&str, &str, u64)]) -> Samples {
    rows.iter()
        .map(|(route, code, n)| (((*route).to_owned(), (*code).to_owned()), *n))
        .collect()
}

fn request(method: &str, base: &str, path: &str, call: &str, script: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, script)
        .body(Full::new(Bytes::new()))
        .expect("test request")
}

/// Checks `text` with promtool when it is installed (CI machines may lack
/// it; the strict parse above checks the format there).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not found: exposition checked by the test's own parse only");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_count_what_the_dashboard_received_by_route_and_code() {
    let server = FaultServer::start().await.unwrap();
    let client = client();
    let base = server.base_url();

    // Nothing yet: the family alone, and scraping it counts nothing.
    let (text, before) = scrape(&client, &base).await;
    assert!(before.is_empty(), "{text}");
    promtool_accepts(&text);

    // Every kind of ending on chat completions.
    for (call, script) in [("a", "503"), ("b", "200"), ("c", "429;retry-after=1")] {
        ok_exchange(&client, scripted(&base, false, call, script)).await;
    }
    // A reset sends its 200 head, then breaks the body.
    let reset = ok_exchange(&client, scripted(&base, true, "d", "reset")).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert!(reset.body_error.is_some());
    let reset_json = ok_exchange(&client, scripted(&base, false, "e", "reset;at=0")).await;
    assert!(reset_json.body_error.is_some());
    // A close answers nothing.
    for call in ["f", "g"] {
        let closed = exchange(&client, scripted(&base, false, call, "close")).await;
        assert!(closed.is_err(), "{closed:?}");
    }
    // A garbage script is answered 400, and was received all the same.
    let garbage = ok_exchange(&client, scripted(&base, false, "h", "5x3")).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    // The other routes.
    ok_exchange(&client, request("GET", &base, "/v1/models", "i", "200")).await;
    ok_exchange(&client, request("GET", &base, "/v1/files/nope", "j", "200")).await;
    ok_exchange(&client, request("GET", &base, "/v1/batches", "k", "502")).await;
    let closed = exchange(
        &client,
        request("GET", &base, "/v1/batches/x", "l", "close"),
    )
    .await;
    assert!(closed.is_err());
    ok_exchange(&client, request("GET", &base, "/elsewhere", "m", "200")).await;
    // `/metrics` by another method is an ordinary request, counted and
    // faulted like any other.
    let posted = ok_exchange(&client, request("POST", &base, "/metrics", "n", "503")).await;
    assert_eq!(posted.status, StatusCode::SERVICE_UNAVAILABLE);

    let (text, after) = scrape(&client, &base).await;
    promtool_accepts(&text);
    assert_eq!(
        after,
        expected(&[
            ("batches", "502", 1),
            ("batches", "none", 1),
            ("chat_completions", "200", 3),
            ("chat_completions", "400", 1),
            ("chat_completions", "429", 1),
            ("chat_completions", "503", 1),
            ("chat_completions", "none", 2),
            ("files", "404", 1),
            ("models", "200", 1),
            ("other", "404", 1),
            ("other", "503", 1),
        ]),
        "{text}"
    );
    let board = server.dashboard();
    assert_eq!(board.received, 14);
    assert_eq!(total(&after), board.received);
    // Every answered code matches the dashboard's responded counts.
    let mut answered = BTreeMap::<String, u64>::new();
    for ((_, code), n) in &after {
        if code != "none" {
            *answered.entry(code.clone()).or_default() += n;
        }
    }
    assert_eq!(answered, board.responded);
    assert_eq!(after[&("chat_completions".into(), "none".into())], 2);
    assert_eq!(board.faults("close"), 3);
    // Neither `/metrics` nor `/dashboard` counts itself.
    ok_exchange(&client, get(&base, "/dashboard")).await;
    scrape(&client, &base).await;
    assert_eq!(server.dashboard().received, 14);
}

#[tokio::test]
async fn metrics_equal_received_after_a_seeded_mix_and_are_never_faulted() {
    let mix: Mix = "503=0.25,reset=0.15,close=0.15,hostile;headers=10=0.1,delay;ms=1=0.1"
        .parse()
        .unwrap();
    let server = FaultServer::builder()
        .mix(mix)
        .seed(11)
        .start()
        .await
        .unwrap();
    let base = server.base_url();
    for client in [client(), h2_client()] {
        // With 75 % of requests faulted, not one scrape is: each is a whole
        // 200 with the family in it, and none is counted.
        for _ in 0..20 {
            scrape(&client, &base).await;
        }
    }
    assert_eq!(server.dashboard().received, 0);

    let client = client();
    let h2 = h2_client();
    let body = r#"{"model":"m","stream":false,"messages":[]}"#;
    let mut answered = 0;
    for i in 0..60 {
        let c = if i % 2 == 0 { &client } else { &h2 };
        if let Ok(reply) = exchange(c, chat(&base, body, &[])).await {
            answered += 1;
            // Drain nothing more: `exchange` read the body (or its failure).
            drop(reply);
        }
    }
    let board = server.dashboard();
    assert_eq!(board.received, 60);
    assert!(answered < 60, "the mix closed some connections");
    for kind in ["status", "reset", "close", "hostile"] {
        assert!(board.faults(kind) > 0, "{kind}: {board:?}");
    }
    let (text, after) = scrape(&client, &base).await;
    assert_eq!(total(&after), board.received, "{text}");
    assert_eq!(
        after.get(&("chat_completions".into(), "none".into())),
        Some(&board.faults("close")),
        "{text}"
    );
    assert_eq!(
        after.get(&("chat_completions".into(), "503".into())),
        Some(&board.responded(503)),
        "{text}"
    );
    promtool_accepts(&text);
}

#[tokio::test]
async fn a_request_cut_off_by_an_outage_counts_as_unanswered() {
    let server = FaultServer::start().await.unwrap();
    let base = server.base_url();
    let client = client();
    let pending = tokio::spawn(client.request(scripted(&base, false, "slow", "delay;ms=8000")));
    within(async {
        while server.dashboard().faults("delay") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Received, in progress: not on `/metrics` yet.
    let (_, during) = scrape(&client, &base).await;
    assert_eq!(total(&during), 0);

    server.outage(Duration::from_millis(200)).await.unwrap();
    assert!(within(pending).await.unwrap().is_err());
    // Back after the outage: the cut request is over, unanswered.
    let after = within(async {
        loop {
            if let Ok(reply) = exchange(&client, get(&base, "/metrics")).await {
                break samples(&String::from_utf8_lossy(&reply.body()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(after, expected(&[("chat_completions", "none", 1)]));
    assert_eq!(total(&after), server.dashboard().received);
}

#[tokio::test]
async fn a_request_its_client_gives_up_on_counts_as_unanswered_at_once() {
    let server = FaultServer::start().await.unwrap();
    let base = server.base_url();
    for (client, call) in [(client(), "h1"), (h2_client(), "h2")] {
        let request = scripted(&base, false, call, "delay;ms=8000");
        // The client gives up long before the 8 s delay ends.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(300), client.request(request)).await;
        assert!(gave_up.is_err(), "{call}: answered early");
    }
    // The server drops each handler with its connection or stream, well
    // before the delay would have ended: both are over, unanswered.
    let scraper = client();
    let after = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let (_, now) = scrape(&scraper, &base).await;
            if total(&now) == 2 {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dropped requests are counted within 4 s");
    assert_eq!(after, expected(&[("chat_completions", "none", 2)]));
    assert_eq!(server.dashboard().received, 2);
}
