//! Server-sent events through the stack: time to first token for a healthy
//! stream, then a stream that stalls after its first chunk and is cut by the
//! `read` limit — the caller keeps the chunks it got, then sees a typed
//! `read_timeout`.
//!
//! Run: `cargo run --example streaming`

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::core::classify_body_error;
use sturdy::{Profile, RetrySafe, Stack, Workload};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), sturdy::BoxError> {
    let server = FaultServer::start().await?;
    // A short `read` so the stall below is cut quickly; `total` stays long.
    let stack = Stack::builder()
        .profile(
            Workload::Interactive,
            Profile {
                ready: Duration::from_secs(10),
                headers: Duration::from_secs(60),
                read: Duration::from_millis(300),
                total: Duration::from_secs(60),
            },
        )
        .build()?;
    let service = stack.layer(sturdy::client().no_proxy().build()?);

    for (call, script) in [("healthy", "200"), ("stalled", "stall;ms=5000")] {
        let mut req = http::Request::post(format!("{}/v1/chat/completions", server.base_url()))
            .header("content-type", "application/json")
            .header(CALL_HEADER, call)
            .header(FAULT_HEADER, script)
            .body(Full::new(Bytes::from_static(
                br#"{"model":"demo","stream":true,"messages":[{"role":"user","content":"count to five"}]}"#,
            )))?;
        req.extensions_mut().insert(RetrySafe);
        let sent = Instant::now();
        let resp = service.clone().oneshot(req).await?;
        // The body holds its timers inline (no allocation per call), so it
        // is pinned before it is polled frame by frame.
        let mut body = std::pin::pin!(resp.into_body());
        let (mut chunks, mut first) = (0, None);
        let end = loop {
            match body.frame().await {
                None => break "the stream ended with data: [DONE]".to_owned(),
                Some(Ok(frame)) => {
                    if frame.is_data() {
                        first.get_or_insert(sent.elapsed());
                        chunks += 1;
                    }
                }
                Some(Err(e)) => {
                    let kind = classify_body_error(&*e);
                    break format!("cut: {} (reach {}): {e}", kind.label(), kind.reach());
                }
            }
        };
        println!(
            "{call}: {chunks} chunk(s), time to first token {:?}; {end}",
            first.unwrap_or_default()
        );
    }
    Ok(())
}
