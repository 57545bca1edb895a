//! One chat completion per workload through `sturdy::client()` + `Stack`,
//! against an in-process fault server. The first call meets two failures
//! (a 503 with a retry hint, then a reset connection) and still succeeds.
//!
//! Run: `cargo run --example chat`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::metrics::Report;
use sturdy::{CallContext, RetrySafe, Stack, Workload};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), sturdy::BoxError> {
    let server = FaultServer::start().await?;

    // The preset, with the guide's defaults: 60 s for interactive calls,
    // 30 min for agentic and long-context ones, 60 s for batch submissions;
    // retries of 429/5xx with backoff, server hints honoured.
    let stack = Stack::builder().build()?;
    let service = stack.layer(sturdy::client().no_proxy().build()?);

    for (i, workload) in Workload::ALL.into_iter().enumerate() {
        let body = format!(
            r#"{{"model":"demo","messages":[{{"role":"user","content":"hello from a {workload} call"}}]}}"#
        );
        let mut req = http::Request::post(format!("{}/v1/chat/completions", server.base_url()))
            .header("content-type", "application/json")
            .header(CALL_HEADER, format!("chat-{i}"))
            .body(Full::new(Bytes::from(body)))?;
        if i == 0 {
            // Scripted: a 503 asking for 50 ms, then a reset mid-body, then 200.
            req.headers_mut()
                .insert(FAULT_HEADER, "503;retry-after-ms=50, reset, 200".parse()?);
        }
        req.extensions_mut().insert(workload);
        // Inference has no side effect but billing: safe to send twice.
        req.extensions_mut().insert(RetrySafe);
        let ctx = CallContext::attach(&mut req);

        let resp = service.clone().oneshot(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let reply: serde_json::Value = serde_json::from_slice(&body)?;
        println!(
            "{workload:>12}: {status} after {} attempt(s), retries for {:?}: {}",
            ctx.attempts(),
            ctx.retry_reasons()
                .iter()
                .map(|k| k.label())
                .collect::<Vec<_>>(),
            reply["choices"][0]["message"]["content"]
        );
    }

    let report = Report::new(&stack.recorder().snapshot());
    println!("\n{report}");
    println!("server received {} requests", server.dashboard().received);
    Ok(())
}
