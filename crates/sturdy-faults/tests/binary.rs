//! The `sturdy-faults` binary: announces its address, serves, refuses
//! non-loopback addresses.

mod common;

use common::*;
use http::StatusCode;

#[tokio::test]
async fn binary_prints_the_listening_line_then_serves() {
    let (mut child, base) = spawn_binary([
        "--listen",
        "127.0.0.1:0",
        "--seed",
        "7",
        "--mix",
        "503=0.05,429=0.05,reset=0.02,close=0.02,delay=0.02,stall=0.02",
    ])
    .await;
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
    let (code, stderr) = run_binary(["--listen", "0.0.0.0:0"]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[tokio::test]
async fn binary_rejects_a_bad_mix() {
    let (code, stderr) = run_binary(["--mix", "503=0.9,429=0.9"]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("more than 1"), "{stderr}");
}

#[tokio::test]
async fn binary_rejects_an_idle_close_that_is_not_a_probability() {
    for bad in ["1.5", "-0.1", "often"] {
        let (code, stderr) = run_binary([format!("--idle-close={bad}")]).await;
        assert_eq!(code, Some(2), "{bad}");
        assert!(stderr.contains("not a probability"), "{stderr}");
    }
}
