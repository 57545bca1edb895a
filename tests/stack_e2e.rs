//! The whole stack against the bare client: the same seeded fault mix, the
//! same calls. The stack must succeed more often, and its report must
//! account for every call and every attempt.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::metrics::{Report, Scope, ServerCounts};
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy::{Profile, Profiles, Reach, RetrySafe, Stack, Workload};
use sturdy_faults::{FaultParams, FaultServer, Mix};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

const CALLS: usize = 600;
const CONCURRENCY: usize = 16;
const MIX: &str =
    "503=0.06,429;retry-after-ms=20=0.03,500=0.02,reset=0.03,close=0.03,delay=0.02,stall=0.02";

async fn server() -> FaultServer {
    let mix: Mix = MIX.parse().unwrap();
    FaultServer::builder()
        .mix(mix)
        .seed(11)
        .params(FaultParams {
            delay_ms: 3000,
            stall_ms: 3000,
            ..FaultParams::default()
        })
        .start()
        .await
        .unwrap()
}

fn request(base: &str, i: usize) -> http::Request<Full<Bytes>> {
    let stream = i % 4 == 3;
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{i}"}}],"stream":{stream}}}"#
    );
    let mut req = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    req.extensions_mut().insert(RetrySafe);
    req
}

/// Runs the calls through `svc`; returns how many succeeded (a success
/// status and the whole body), each call bounded in time.
async fn drive<S, B>(svc: S, base: String) -> usize
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
{
    let mut set = JoinSet::new();
    let mut ok = 0;
    for i in 0..CALLS {
        if set.len() >= CONCURRENCY {
            ok += usize::from(set.join_next().await.unwrap().unwrap());
        }
        let (svc, req) = (svc.clone(), request(&base, i));
        set.spawn(async move {
            let call = async {
                let resp = svc.oneshot(req).await.ok()?;
                let good = resp.status().is_success();
                let body = resp.into_body().collect().await.ok()?;
                (good && !body.to_bytes().is_empty()).then_some(())
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(20), call).await,
                Ok(Some(()))
            )
        });
    }
    while let Some(r) = set.join_next().await {
        ok += usize::from(r.unwrap());
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_recovers_what_the_bare_client_loses_and_accounts_for_everything() {
    // Bare client.
    let bare_server = server().await;
    let bare = drive(
        sturdy::client()
            .no_proxy()
            .build()
            .expect("a valid client")
            .map_request(|r: http::Request<Full<Bytes>>| r.map(sturdy::boxed)),
        bare_server.base_url(),
    )
    .await;

    // The stack, with millisecond profiles (headers/read 300 ms against
    // 3 s delays and stalls: 10x) and millisecond backoff.
    let stack_server = server().await;
    let mut profiles = Profiles::default();
    *profiles.get_mut(Workload::Interactive) = Profile {
        ready: Duration::from_millis(500),
        headers: Duration::from_millis(300),
        read: Duration::from_millis(300),
        total: Duration::from_secs(10),
    };
    let stack = Stack::builder()
        .profiles(profiles)
        .retry_policy(
            RetryPolicy::builder()
                .backoff(Backoff::guide(
                    Duration::from_millis(2),
                    Duration::from_millis(2),
                ))
                .no_budget(),
        )
        .build()
        .unwrap();
    let svc = stack.layer(sturdy::client().no_proxy().build().expect("a valid client"));
    let with_stack = drive(svc, stack_server.base_url()).await;

    println!("successes out of {CALLS}: bare client {bare}, stack {with_stack}");
    assert!(with_stack > bare, "stack {with_stack} <= bare {bare}");
    assert!(bare < CALLS, "the mix must hurt the bare client");

    // Every call and attempt is in the report, once.
    let snap = stack.recorder().snapshot();
    assert_eq!(snap.started(Scope::Call), CALLS as u64);
    assert_eq!(snap.finished(Scope::Call), CALLS as u64);
    assert_eq!(snap.in_flight(Scope::Call), 0);
    assert_eq!(snap.in_flight(Scope::Attempt), 0);
    let attempts = snap.finished(Scope::Attempt);
    assert_eq!(attempts, snap.started(Scope::Attempt));
    assert_eq!(
        attempts,
        CALLS as u64 + snap.retries_total(),
        "every attempt after a call's first is a retry"
    );
    assert_eq!(snap.call_attempts(), attempts);
    let by_reach: u64 = Reach::ALL
        .iter()
        .map(|r| snap.by_reach(Scope::Attempt, *r))
        .sum();
    assert_eq!(by_reach, attempts);
    assert_eq!(
        snap.count(Scope::Call, "ok", Reach::Acknowledged),
        with_stack as u64
    );

    let d = stack_server.dashboard();
    let report = Report::new(&snap).with_server(ServerCounts {
        received: d.received,
        responded: d.responded.clone(),
    });
    assert_eq!(report.calls.finished, CALLS as u64);
    assert_eq!(report.attempts.finished, attempts);
    assert!(d.received <= attempts - snap.by_reach(Scope::Attempt, Reach::NotSent));
    assert!(d.received >= snap.by_reach(Scope::Attempt, Reach::Acknowledged));
}
