//! Every example runs to completion and says what it shows. `cargo test`
//! builds the examples before it runs the tests; this runs each binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop();
    path.pop();
    path.push("examples");
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path
}

fn run(name: &str) -> String {
    let path = example(name);
    assert!(path.exists(), "{} was not built", path.display());
    let started = Instant::now();
    let mut child = Command::new(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("example starts");
    // Bounded: an example that hangs fails the test instead of the suite.
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{name} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn chat_makes_one_call_per_workload_and_recovers_the_scripted_failures() {
    let out = run("chat");
    for w in ["interactive", "agentic", "long_context", "batch"] {
        assert!(out.contains(&format!("{w}: 200 OK")), "{out}");
    }
    assert!(
        out.contains("interactive: 200 OK after 3 attempt(s)"),
        "{out}"
    );
}

#[test]
fn streaming_measures_ttft_and_cuts_a_stalled_stream() {
    let out = run("streaming");
    assert!(out.contains("healthy: 6 chunk(s)"), "{out}");
    assert!(
        out.contains("stalled: 1 chunk(s)") && out.contains("read_timeout"),
        "{out}"
    );
}

#[test]
fn grpc_retries_an_unavailable_call_to_serving() {
    let out = run("grpc");
    assert!(
        out.contains("health: Serving after 2 server call(s)"),
        "{out}"
    );
}

#[test]
fn custom_service_retries_a_hand_written_service() {
    let out = run("custom_service");
    assert!(out.contains("200 OK \"payload\" after 3 attempts"), "{out}");
}

#[test]
fn prometheus_serves_the_stacks_metrics() {
    let out = run("prometheus");
    assert!(
        out.contains("sturdy_client_call_duration_seconds_count"),
        "{out}"
    );
    assert!(out.contains("error_type=\"400\""), "{out}");
    assert!(out.contains("reason=\"429\"} 1"), "{out}");
}

#[test]
fn batch_waits_a_job_through_a_restart() {
    let out = run("batch");
    assert!(out.contains("submitted batch_"), "{out}");
    assert!(out.contains("Completed after"), "{out}");
    let waited: u32 = out
        .split(" failures waited through")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of failures waited through: {out}"));
    assert!(waited > 0, "the restart was waited through: {out}");
}
