//! The soak's own code on a few thousand calls, over HTTP/1.1 and then
//! HTTP/2: every check must hold. (`cargo run --release -p sturdy-soak` is
//! the long run.) One test, one run at a time: the checks read the whole
//! process (its panics, its resident memory).

use sturdy_soak::{SoakConfig, soak};

#[test]
fn a_short_soak_loses_nothing_over_http1_and_http2() {
    for config in [
        SoakConfig::short(6_000),
        SoakConfig {
            http2: true,
            ..SoakConfig::short(4_000)
        },
    ] {
        let report = soak(&config).expect("the soak runs");
        println!("{report}");
        for check in report.checks() {
            assert!(
                check.passed,
                "http2 {}: {}: {}",
                config.http2, check.name, check.detail
            );
        }
    }
}
