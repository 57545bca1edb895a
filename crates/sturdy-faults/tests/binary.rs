//! The `sturdy-faults` binary: announces its address, serves, refuses
//! non-loopback addresses.

mod common;

use std::process::Stdio;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sturdy-faults");

#[tokio::test]
async fn binary_prints_the_listening_line_then_serves() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--seed", "7", "--mix"])
        .arg("503=0.05,429=0.05,reset=0.02,close=0.02,delay=0.02,stall=0.02")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    within(BufReader::new(stdout).read_line(&mut line))
        .await
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = client();
    // A script overrides the mix, so the answer is certain.
    let reply = ok_exchange(&client, scripted(&base, false, "bin", "200")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let board = ok_exchange(&client, get(&base, "/dashboard")).await;
    let board: sturdy_faults::Dashboard = serde_json::from_slice(&board.body()).unwrap();
    assert_eq!(board, dashboard(1, &[(200, 1)], &[]));

    child.start_kill().unwrap();
    within(child.wait()).await.unwrap();
}

#[tokio::test]
async fn binary_refuses_a_non_loopback_address() {
    let output = within(
        Command::new(BIN)
            .args(["--listen", "0.0.0.0:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[tokio::test]
async fn binary_rejects_a_bad_mix() {
    let output = within(
        Command::new(BIN)
            .args(["--mix", "503=0.9,429=0.9"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("more than 1"), "{stderr}");
}

#[tokio::test]
async fn binary_rejects_an_idle_close_that_is_not_a_probability() {
    for bad in ["1.5", "-0.1", "often"] {
        let output = within(
            Command::new(BIN)
                .arg(format!("--idle-close={bad}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output(),
        )
        .await
        .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not a probability"), "{stderr}");
    }
}
