//! A capturing `tracing_subscriber::Layer` for the span tests (this crate's
//! and the facade's `tests/spans.rs`, which includes this file by path):
//! every span (name, target, parent, fields as recorded, whether closed)
//! and every event, at TRACE, as the binary's global subscriber (a scoped
//! one would race with callsite caching across test threads); the tests
//! take turns.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone)]
pub struct SpanRec {
    pub name: &'static str,
    pub target: String,
    pub parent: Option<usize>,
    pub fields: BTreeMap<String, String>,
    pub closed: bool,
}

#[derive(Debug, Clone)]
pub struct EventRec {
    pub target: String,
    /// The span the event is in (its explicit parent, else the current one).
    pub span: Option<usize>,
    pub fields: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Store {
    pub spans: Vec<SpanRec>,
    pub events: Vec<EventRec>,
}

/// Where a span's record sits in the store (kept in the span's extensions:
/// the registry reuses ids).
struct Index(usize);

#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Store>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut store = self.0.lock().unwrap();
        store.spans.push(SpanRec {
            name: attrs.metadata().name(),
            target: attrs.metadata().target().to_owned(),
            parent,
            fields,
            closed: false,
        });
        let index = store.spans.len() - 1;
        drop(store);
        span.extensions_mut().insert(Index(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(index) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0))
        else {
            return;
        };
        let mut store = self.0.lock().unwrap();
        values.record(&mut Fields(&mut store.spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().events.push(EventRec {
            target: event.metadata().target().to_owned(),
            span,
            fields,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(index) = ctx
            .span(&id)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0))
        else {
            return;
        };
        self.0.lock().unwrap().spans[index].closed = true;
    }
}

impl Capture {
    /// Takes everything captured so far.
    pub fn take(&self) -> Store {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The global capture, and the turn of the test holding the guard.
pub async fn capture() -> (Capture, tokio::sync::MutexGuard<'static, ()>) {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURN.lock().await;
    let capture = CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::TRACE)
                .with(capture.clone());
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            capture
        })
        .clone();
    capture.take();
    (capture, turn)
}
