//! The probe as a user runs it: the binary, its exit codes and its `--json`
//! contract, against its embedded fault server.

use std::process::Command;

use serde_json::Value;

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sturdy-probe"))
        .args(args)
        // No proxy may stand between the probe and its loopback server, and
        // no key may leak in from the environment.
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("the probe binary runs")
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {v}"))
}

#[test]
fn the_default_run_accounts_for_every_attempt_and_meets_its_success_bar() {
    let out = probe(&["--json"]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");

    let calls = u(&v, &["calls"]);
    assert_eq!(calls, 2000);
    assert_eq!(u(&v, &["succeeded"]) + u(&v, &["failed"]), calls);
    let attempts = u(&v, &["attempts"]);
    let (not_sent, unknown, acknowledged) = (
        u(&v, &["by_reach", "not_sent"]),
        u(&v, &["by_reach", "unknown"]),
        u(&v, &["by_reach", "acknowledged"]),
    );
    assert_eq!(
        not_sent + unknown + acknowledged,
        attempts,
        "by_reach sums to attempts"
    );
    assert_eq!(
        attempts,
        calls + u(&v, &["retries"]),
        "every attempt after the first is a retry"
    );
    let received = u(&v, &["server", "received"]);
    assert!(
        received <= attempts - not_sent,
        "{received} > {attempts} - {not_sent}"
    );
    assert!(received >= acknowledged, "{received} < {acknowledged}");

    let outcomes: u64 = v["call_outcomes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(outcomes, calls);
    let attempt_outcomes: u64 = v["attempt_outcomes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(attempt_outcomes, attempts);

    // A call the retry budget refused was given up on purpose (the outage
    // drains the budget; how many calls it catches depends on how fast this
    // machine runs the rest): the bar is for everything the policy allows.
    let refused = u(&v, &["budget_refusals"]);
    let recoverable = calls - u(&v, &["unrecoverable"]) - refused;
    let rate = u(&v, &["succeeded"]) as f64 / recoverable as f64;
    assert!(
        rate >= 0.99,
        "success rate among recoverable calls {rate} ({refused} refused by the budget): {v}"
    );
    // The mix has faults: the run must have retried and seen them.
    assert!(u(&v, &["retries"]) > 0 && u(&v, &["possibly_duplicated"]) > 0);
    // A 429 out of quota is one attempt, a failed call, and beyond any
    // recovery: never in the recoverable calls the bar is for.
    let quota = u(&v, &["call_outcomes", "insufficient_quota"]);
    assert!(quota > 0, "the mix has quota errors: {v}");
    assert_eq!(u(&v, &["attempt_outcomes", "insufficient_quota"]), quota);
    assert!(u(&v, &["unrecoverable"]) >= quota);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(v["latency_ms"][key].as_f64().is_some(), "latency_ms.{key}");
    }
}

#[test]
fn the_text_report_says_what_the_server_never_saw() {
    let out = probe(&["--requests", "200", "--seed", "3"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("demo scale"), "{text}");
    assert!(
        text.contains("failed attempts never reached the server"),
        "{text}"
    );
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["--requests", "0"][..],
        &["--workload", "siesta"],
        &["--mix", "503=7"],
        &["--url", "https://api.example.test/v1"],
        &["--no-such-flag"],
        &[
            "--server-metrics",
            "/metrics",
            "--server-metrics-filter",
            "route",
        ],
        &[
            "--server-metrics",
            "/metrics",
            "--server-metrics-filter",
            "route=a,=b",
        ],
        &["--server-metrics-filter", "route=chat_completions"],
    ] {
        let out = probe(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn live_metrics_are_served_while_it_runs() {
    // A tiny run with live metrics on an ephemeral loopback port: the probe
    // says where, and the run completes.
    let out = probe(&[
        "--requests",
        "50",
        "--metrics-listen",
        "127.0.0.1:0",
        "--json",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/metrics"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_mode_probes_an_endpoint_with_the_real_defaults_and_never_prints_the_key() {
    // A fault server stands in for a real endpoint (loopback only).
    let server = sturdy_faults::FaultServer::start().await.unwrap();
    let url = format!("{}/v1", server.base_url());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sturdy-probe"))
            .args(["--url", &url, "--model", "m", "--json"])
            .env("STURDY_TEST_KEY", "sk-sturdy-canary")
            .args(["--api-key-env", "STURDY_TEST_KEY"])
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains("sk-sturdy-canary"));
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // 20 calls by default: it spends the user's money.
    assert_eq!((u(&v, &["calls"]), u(&v, &["succeeded"])), (20, 20));
    assert!(v.get("server").is_none(), "no embedded server with --url");
    assert_eq!(server.dashboard().received, 20);
}

/// A one-request OpenAI-compatible peer on loopback: records the request it
/// gets (head and body) and answers a chat completion.
fn recording_peer() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("address"));
    let peer = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("the probe connects");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("a timeout");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The head, then as many body bytes as content-length says.
        loop {
            let n = sock.read(&mut buf).expect("the request");
            assert!(
                n > 0,
                "the request ended early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let body = r#"{"id":"c1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(answer.as_bytes()).expect("the answer");
        String::from_utf8_lossy(&seen).into_owned()
    });
    (url, peer)
}

#[test]
fn a_url_run_speaks_the_endpoints_key_header_and_token_field() {
    let (url, peer) = recording_peer();
    let out = Command::new(env!("CARGO_BIN_EXE_sturdy-probe"))
        .args([
            "--url",
            &url,
            "--model",
            "m",
            "--requests",
            "1",
            "--concurrency",
            "1",
            "--api-key-header",
            "api-key",
            "--token-field",
            "max_completion_tokens",
            "--workload",
            "long-context",
            "--json",
        ])
        .env("OPENAI_API_KEY", "sk-probe-canary")
        // Loopback only: no proxy may stand in between.
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("the probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("sk-probe-canary"),
        "the key is never printed"
    );
    let seen = peer.join().expect("the peer");
    let lower = seen.to_ascii_lowercase();
    assert!(lower.contains("\r\napi-key: sk-probe-canary\r\n"), "{seen}");
    assert!(!lower.contains("authorization"), "{seen}");
    assert!(seen.contains("\"max_completion_tokens\":1"), "{seen}");
    assert!(!seen.contains("\"max_tokens\""), "{seen}");
}

#[test]
fn batch_mode_waits_a_job_through_restarts_and_reports_it() {
    let started = std::time::Instant::now();
    let out = probe(&["--batch", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let b = &v["batch"];
    assert_eq!(b["status"], "completed", "{v}");
    assert!(b["id"].as_str().is_some_and(|id| id.starts_with("batch_")));
    assert!(u(&v, &["batch", "failures_waited_through"]) > 0, "{v}");
    assert!(u(&v, &["batch", "polls"]) > 2, "{v}");
    let counts = (
        u(&v, &["batch", "request_counts", "total"]),
        u(&v, &["batch", "request_counts", "completed"]),
    );
    assert_eq!(counts, (2, 2), "{v}");
    assert!(b["seconds"].as_f64().is_some_and(|s| s >= 12.0), "{v}");
    assert!(b["output_file_id"].as_str().is_some(), "{v}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// Runs the probe against `server` with `--url` and extra `args` (off the
/// async runtime, which keeps serving).
async fn probe_url(server: &sturdy_faults::FaultServer, args: &[&str]) -> std::process::Output {
    let base = server.base_url();
    let args: Vec<String> = args.iter().map(|a| a.replace("{base}", &base)).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sturdy-probe"))
            .args(["--url", &format!("{base}/v1"), "--model", "m"])
            .args(&args)
            .env("STURDY_TEST_KEY", "sk-sturdy-canary")
            .args(["--api-key-env", "STURDY_TEST_KEY"])
            // Loopback only: no proxy may stand in between.
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_agree_with_the_servers_dashboard_and_the_reach_bounds() {
    // Some attempts fail: with a status, mid-body, or without any answer.
    let server = sturdy_faults::FaultServer::builder()
        .mix("503=0.1,reset=0.05,close=0.15".parse().unwrap())
        .seed(5)
        .start()
        .await
        .unwrap();
    let received_before = server.dashboard().received;
    let out = probe_url(
        &server,
        &[
            "--server-metrics",
            "{base}/metrics",
            "--json",
            "--requests",
            "60",
            "--concurrency",
            "12",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains("sk-sturdy-canary"));
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sm = &v["server_metrics"];
    assert_eq!(sm["series"], "sturdy_faults_requests_total", "{v}");
    assert!(sm.get("error").is_none(), "{v}");
    // Scrapes are never counted: the server's delta is exactly what its
    // dashboard received during the run.
    let received = server.dashboard().received - received_before;
    assert_eq!(f(sm, &["delta"]), received as f64, "{v}");
    assert_eq!(f(sm, &["after"]) - f(sm, &["before"]), f(sm, &["delta"]));
    assert!(sm["within_reach_bounds"].as_bool().unwrap(), "{v}");
    let (acknowledged, unknown) = (
        u(&v, &["by_reach", "acknowledged"]),
        u(&v, &["by_reach", "unknown"]),
    );
    assert_eq!(u(sm, &["client_acknowledged"]), acknowledged);
    assert_eq!(u(sm, &["client_unknown"]), unknown);
    assert!(acknowledged <= received && received <= acknowledged + unknown);
    // The mix did its work: closes left attempts without an answer, and
    // the run retried them.
    assert!(unknown > 0 && u(&v, &["retries"]) > 0, "{v}");
    assert_eq!(u(&v, &["calls"]), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_metrics_filter_that_matches_nothing_is_outside_the_bounds_and_says_so() {
    let server = sturdy_faults::FaultServer::start().await.unwrap();
    let out = probe_url(
        &server,
        &[
            "--server-metrics",
            "/metrics",
            "--server-metrics-filter",
            "route=models",
            "--requests",
            "3",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "server metrics (sturdy_faults_requests_total{route=\"models\"}): +0 during the run"
        ),
        "{text}"
    );
    assert!(text.contains("outside the reach bounds"), "{text}");
    assert!(text.contains("no sample matched"), "{text}");
    assert_eq!(server.dashboard().received, 3);
}

#[test]
fn the_embedded_run_reads_its_own_servers_metrics_when_asked() {
    let out = probe(&[
        "--requests",
        "100",
        "--server-metrics",
        "/metrics",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sm = &v["server_metrics"];
    assert!(sm["within_reach_bounds"].as_bool().unwrap(), "{v}");
    let delta = f(sm, &["delta"]);
    assert!(delta >= u(&v, &["by_reach", "acknowledged"]) as f64, "{v}");
    assert!(delta <= u(&v, &["server", "received"]) as f64, "{v}");
    // Without the flag, nothing changes.
    let out = probe(&["--requests", "20", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("server_metrics").is_none(), "{v}");
}

#[test]
fn a_failed_scrape_is_reported_and_the_run_goes_on() {
    // A loopback port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = probe(&["--requests", "20", "--server-metrics", &url, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sm = &v["server_metrics"];
    let error = sm["error"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(error.contains("before the run"), "{error}");
    assert!(sm.get("delta").is_none(), "{v}");
    assert_eq!(u(&v, &["calls"]), 20);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the run goes on"), "{stderr}");
}

#[test]
fn the_report_shows_pacing_and_the_adaptive_limit_when_they_acted() {
    let out = probe(&[
        "--rate-limit",
        "rps=100,burst=8",
        "--adaptive",
        "--requests",
        "200",
        "--mix",
        "503=0.02",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pacing (127.0.0.1:"), "{text}");
    assert!(
        text.contains("attempts held by the server's rate-limit headers"),
        "{text}"
    );
    assert!(text.contains("adaptive concurrency: limit "), "{text}");
    // Without them, neither line.
    let out = probe(&["--requests", "100", "--mix", "503=0.02"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("pacing ("), "{text}");
    assert!(!text.contains("adaptive concurrency"), "{text}");
}

/// One plain HTTP/1.1 GET on loopback, the body.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics port");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the one sample of `series` whose line starts with
/// `series` followed by `labels` (`{...}` or nothing).
fn sample(text: &str, series: &str, labels: &str) -> f64 {
    let prefix = format!("{series}{labels} ");
    let mut values = text.lines().filter_map(|l| l.strip_prefix(&*prefix));
    let v = values
        .next()
        .unwrap_or_else(|| panic!("no {series}{labels} in\n{text}"));
    assert!(values.next().is_none(), "{series}{labels} twice");
    v.parse().expect("a number")
}

#[test]
fn live_metrics_hold_the_pacers_and_the_adaptive_limits_series() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sturdy-probe"))
        .args([
            "--rate-limit",
            "rps=100,burst=8",
            "--adaptive",
            "--requests",
            "200",
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-linger",
            "30",
            "--json",
        ])
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the probe binary runs");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the probe said nothing"
        );
        if let Some(rest) = line.split_once("live metrics at http://") {
            break rest.1.trim().trim_end_matches("/metrics").to_owned();
        }
    };
    // The report is out (the run is over); the metrics are still served.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut json = String::new();
    while !json.ends_with("\n}\n") {
        assert!(
            stdout.read_line(&mut json).unwrap() > 0,
            "no report: {json}"
        );
    }
    let text = get(&addr, "/metrics");
    let _ = child.kill();
    let _ = child.wait();

    // The JSON contract is as before: no new field.
    let report: Value = serde_json::from_str(&json).expect("one JSON object");
    assert_eq!(u(&report, &["calls"]), 200);
    assert!(report.get("pacer").is_none() && report.get("pacing").is_none());

    let port = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "sturdy_client_pacer_held_total{server_address=\"127.0.0.1\",server_port=\"",
            )
        })
        .and_then(|rest| rest.split_once('"'))
        .map(|(port, _)| port.to_owned())
        .unwrap_or_else(|| panic!("no pacer series for the embedded server\n{text}"));
    let at = format!("{{server_address=\"127.0.0.1\",server_port=\"{port}\"}}");
    assert!(sample(&text, "sturdy_client_pacer_held_total", &at) > 0.0);
    assert!(sample(&text, "sturdy_client_pacer_held_seconds_total", &at) > 0.0);
    assert_eq!(sample(&text, "sturdy_client_pacer_holding", &at), 0.0);
    sample(&text, "sturdy_client_pacer_deadline_failures_total", &at);
    assert!(sample(&text, "sturdy_client_concurrency_limit", "") >= 1.0);
    assert_eq!(
        sample(&text, "sturdy_client_concurrency_in_flight", ""),
        0.0
    );
    assert_eq!(sample(&text, "sturdy_client_concurrency_waiting", ""), 0.0);
    // The text format 0.0.4: HELP and TYPE name a counter's samples.
    assert!(text.contains("# TYPE sturdy_client_pacer_held_seconds_total counter\n"));
    assert!(text.contains("# TYPE sturdy_client_concurrency_limit gauge\n"));
}
