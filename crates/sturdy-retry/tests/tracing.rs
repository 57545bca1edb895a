//! The retry layer's tracing events (inside the span of the attempt each
//! is about), in a test binary of their own: a
//! thread-local subscriber races with tests on other threads over tracing's
//! global callsite cache. Paused time, fake inner service, no sockets.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use sturdy_core::{BoxBody, BoxError, RetrySafe};
use sturdy_retry::{Backoff, RetryLayer, RetryPolicy};
use tower::{Layer, ServiceExt};

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn decisions_are_traced_without_header_values_or_queries() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let calls = Arc::new(Mutex::new(0u32));
    let inner = tower::service_fn(move |req: Request<BoxBody>| {
        let calls = calls.clone();
        async move {
            let _ = req.into_body().collect().await?;
            let n = {
                let mut c = calls.lock().unwrap();
                *c += 1;
                *c
            };
            match n {
                1 => Ok(Response::builder()
                    .status(503)
                    .header("retry-after-ms", "5")
                    .header("x-secret", "sk-response-secret")
                    .body(Full::new(Bytes::new()))
                    .unwrap()),
                2 => Err::<_, BoxError>(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                _ => Ok(Response::builder()
                    .status(400)
                    .body(Full::new(Bytes::new()))
                    .unwrap()),
            }
        }
    });
    let mut req = Request::post("http://127.0.0.1/v1/chat?api_key=sk-query-secret")
        .header("authorization", "Bearer sk-header-secret")
        .body(Full::new(Bytes::from_static(b"sk-body-secret")))
        .unwrap();
    req.extensions_mut().insert(RetrySafe);
    let policy = RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(10),
            Duration::from_nanos(1),
        ))
        .no_budget()
        .build()
        .unwrap();
    RetryLayer::new(policy)
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("retrying"), "{text}");
    assert!(
        text.contains("reason=\"503\"") || text.contains("reason=503"),
        "{text}"
    );
    assert!(text.contains("connect_refused"), "{text}");
    assert!(text.contains("not retryable"), "{text}");
    assert!(text.contains("delay_ms=5"), "{text}");
    assert!(text.contains("hint_used=true"), "{text}");
    assert!(!text.contains("sk-"), "a secret reached the log: {text}");
    // Each decision is an event of the attempt it is about: inside that
    // attempt's span, which tells which resend it was.
    let decisions: Vec<&str> = text.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(decisions.len(), 3, "{text}");
    for (n, line) in decisions.iter().enumerate() {
        assert!(line.contains("sturdy.attempt{"), "{line}");
        assert_eq!(
            line.contains(&format!("http.request.resend_count={n}")),
            n > 0,
            "{line}"
        );
    }
}
