//! A batch job submitted once and waited for through a server restart,
//! against an in-process fault server whose jobs take three seconds: the
//! upload, the submission, progress as it comes, and what the wait went
//! through. Runs with no arguments; nothing leaves the machine.

use std::time::Duration;

use sturdy::Stack;
use sturdy::batch::{BatchClient, NewBatch, PollSchedule};
use sturdy::retry::Backoff;
use sturdy_faults::FaultServer;
use tower::Layer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Jobs run 3 s; the server restarts (its port refuses connections) for
    // 1 s after 1 s.
    let server = FaultServer::builder()
        .job_duration(Duration::from_secs(3))
        .outage_at(Duration::from_secs(1), Duration::from_secs(1))
        .start()
        .await?;

    // The stack, with the demo's short backoff: its retries give up inside
    // the restart, and the waiter waits it through.
    let stack = Stack::builder()
        .map_retry(|r| {
            r.backoff(Backoff::guide(
                Duration::from_millis(10),
                Duration::from_millis(10),
            ))
        })
        .max_retries(2)
        .build()?;
    let service = stack.layer(sturdy::client().no_proxy().build()?);
    let batches = BatchClient::new(service, &format!("{}/v1", server.base_url())).poll_schedule(
        PollSchedule {
            first: Duration::from_millis(200),
            cap: Duration::from_millis(500),
            growth: 1.5,
        },
    );

    let input =
        "{\"custom_id\":\"r1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n"
            .repeat(5);
    let file = batches.upload("requests.jsonl", input).await?;
    let job = batches
        .submit(NewBatch::new(&file.id, "/v1/chat/completions"))
        .await?;
    println!("submitted {}", job.id);
    let done = batches
        .wait_with(&job.id, |b| {
            let c = b.request_counts.unwrap_or_default();
            println!("  {:?}: {}/{} done", b.status, c.completed, c.total);
        })
        .await?;
    println!(
        "{:?} after {} polls, {} failures waited through; output {}",
        done.batch.status,
        done.stats.polls,
        done.stats.failures_waited_through,
        done.batch.output_file_id.as_deref().unwrap_or("none")
    );
    server.shutdown().await;
    Ok(())
}
