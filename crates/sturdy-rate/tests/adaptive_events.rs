//! The adaptive limit's "limit changed" debug event, in a test binary of
//! its own: a thread-local subscriber races with tests on other threads
//! over tracing's global callsite cache (an event first hit on another
//! thread, with no subscriber, can be cached as never wanted).

use std::sync::Arc;
use std::time::Duration;

use sturdy_rate::AdaptiveConcurrencyLayer;
use tower::Layer;

mod fake;
use fake::*;

/// Collects the `limit` field of every "limit changed" event.
#[derive(Clone, Default)]
struct LimitEvents(Arc<std::sync::Mutex<Vec<(u64, u64, String)>>>);

impl tracing::Subscriber for LimitEvents {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            limit: u64,
            previous: u64,
            cause: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                match field.name() {
                    "limit" => self.limit = value,
                    "previous" => self.previous = value,
                    _ => {}
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "cause" {
                    self.cause = value.to_string();
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.message = format!("{value:?}");
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "adaptive concurrency limit changed"
            && *event.metadata().level() == tracing::Level::DEBUG
            && let Ok(mut seen) = self.0.lock()
        {
            seen.push((fields.previous, fields.limit, fields.cause));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn a_debug_event_says_when_the_limit_changes() {
    let events = LimitEvents::default();
    let _guard = tracing::subscriber::set_default(events.clone());
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(10)
        .slow_start(false)
        .build()
        .unwrap();
    let svc = layer.layer(fake());
    call_and_read(svc.clone(), reply(503, "", Duration::ZERO))
        .await
        .unwrap();
    // A success that leaves the limit where it was says nothing.
    call_and_read(svc.clone(), ok(Duration::ZERO))
        .await
        .unwrap();
    let seen = events.0.lock().unwrap().clone();
    assert_eq!(seen, vec![(10, 9, "overload".to_string())]);
    wave(&svc, 40, || ok(Duration::from_millis(1))).await;
    let seen = events.0.lock().unwrap().clone();
    assert!(
        seen.len() > 1
            && seen[1..]
                .iter()
                .all(|(from, to, cause)| to > from && cause == "success"),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(|e| e.1), Some(layer.limit() as u64));
}
