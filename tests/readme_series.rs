//! README's metrics reference is rendered from `sturdy_metrics::series`, the
//! one table the recorders register from: a renamed series or a new help
//! text fails this test until README is regenerated (`STURDY_BLESS=1 cargo
//! test --test readme_series` rewrites it).

use std::time::Duration;

use sturdy_core::{FailureKind, Workload};
use sturdy_metrics::{
    CallSummary, Dimensions, Ended, MethodLabel, Outcome, Recorder, Scope, ServerAddress,
};
use tower::{Layer, ServiceExt};

const BEGIN: &str = "<!-- series:begin";
const END: &str = "<!-- series:end -->";

#[test]
fn the_readme_lists_every_series_as_the_code_registers_it() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let begin = readme.find(BEGIN).expect("the series block's start");
    let body_start = begin + readme[begin..].find("-->\n").expect("its marker's end") + 4;
    let end = readme.find(END).expect("the series block's end");
    assert!(body_start <= end, "markers out of order");
    let table = sturdy_metrics::series::markdown_table();
    if readme[body_start..end] != table {
        if std::env::var_os("STURDY_BLESS").is_some() {
            let updated = format!("{}{}{}", &readme[..body_start], table, &readme[end..]);
            std::fs::write(path, updated).expect("README.md written");
        } else {
            panic!(
                "README.md's metrics reference is stale; run STURDY_BLESS=1 cargo test --test readme_series\n{table}"
            );
        }
    }
}

#[tokio::test]
async fn every_series_in_the_table_is_what_a_registry_exposes() {
    let mut registry = prometheus_client::registry::Registry::default();
    let recorder = sturdy_metrics::PrometheusRecorder::new(&mut registry);
    // The rate control's collectors: a pacer that has seen a server (one
    // request to the fault server on loopback) and an adaptive limit.
    let pacer = sturdy::rate::PacerLayer::new();
    sturdy_metrics::PacerCollector::new(&pacer).register(&mut registry);
    let limit = sturdy::rate::AdaptiveConcurrencyLayer::new();
    sturdy_metrics::ConcurrencyCollector::new(limit.gauge()).register(&mut registry);
    let server = sturdy_faults::FaultServer::start()
        .await
        .expect("fault server");
    let client = pacer.layer(sturdy::client().no_proxy().build().expect("a client"));
    let req = http::Request::get(format!("{}/v1/models", server.base_url()))
        .body(sturdy::boxed(http_body_util::Empty::<bytes::Bytes>::new()))
        .expect("a request");
    let resp = client.oneshot(req).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    server.shutdown().await;
    // One attempt and one call with every part: empty families print
    // nothing.
    let summary = CallSummary {
        attempts: 2,
        retry_reasons: vec![FailureKind::Reset],
        refusals: [1, 0, 0, 0, 0, 0],
        possibly_duplicated: 1,
    };
    for scope in Scope::ALL {
        let dims = Dimensions {
            scope,
            workload: Workload::Interactive,
            method: MethodLabel::from_static("POST"),
            server: ServerAddress::from_static("127.0.0.1:8080"),
        };
        recorder.started(scope);
        recorder.finished(&Ended {
            dims: &dims,
            outcome: Outcome::Ok,
            status: Some(200),
            duration: Duration::from_millis(3),
            time_to_head: Some(Duration::from_millis(1)),
            time_to_first_frame: Some(Duration::from_millis(2)),
            call: (scope == Scope::Call).then_some(&summary),
        });
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding");
    for s in sturdy_metrics::series::SERIES {
        let name = s.name();
        // prometheus-client writes HELP without the _total of a counter.
        let help_name = name.strip_suffix("_total").unwrap_or(&name);
        assert!(
            text.contains(&format!("# HELP {help_name} {}.", s.help))
                || text.contains(&format!("# HELP {help_name} {}", s.help)),
            "{name}: help text not as in the table\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {help_name} {}", s.kind.label())),
            "{name}\n{text}"
        );
    }
}
