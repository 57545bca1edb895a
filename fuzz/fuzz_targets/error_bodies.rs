//! Arbitrary bytes as an error body, as an event's data, and as a
//! server-sent-event stream cut into arbitrary chunks: what sturdy reads
//! from the bodies a peer controls before it decides on a retry.
//!
//! Nothing may panic; an error body says at most "out of quota"; an event
//! says at most "out of quota" or "stream error"; a stream scan gives the
//! same answer however the stream is cut into frames; a 429 or 403 whose
//! body says "out of quota" is final, and its body changes nothing else.
#![no_main]

use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;
use sturdy::core::{SseScan, classify_error_body, classify_event_data};
use sturdy::{Classifier, FailureKind, Verdict};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the cut points of the stream.
    let Some((&step, body)) = data.split_first() else {
        return;
    };

    let said = classify_error_body(body);
    assert!(matches!(said, None | Some(FailureKind::QuotaExhausted)));
    let event = classify_event_data(body);
    assert!(matches!(
        event,
        None | Some(FailureKind::QuotaExhausted | FailureKind::StreamError)
    ));
    // A body that says "out of quota" is an error object, so as an event
    // it says the same.
    if said.is_some() {
        assert_eq!(event, said);
    }

    for status in [429u16, 403, 503, 400] {
        let status = StatusCode::from_u16(status).expect("a valid status");
        let head = Classifier::tables().judge_response(status, &HeaderMap::new(), false);
        let judged = head.clone().with_body(body);
        match said {
            Some(kind) if head.awaits_body() => {
                assert_eq!(judged.verdict, Verdict::Fatal);
                assert_eq!(judged.failure, Some(kind));
            }
            _ => {
                assert_eq!(judged.verdict, head.verdict);
                assert_eq!(judged.failure, head.failure);
            }
        }
    }

    // The same stream, whole and in pieces of 1 to 16 bytes.
    let mut whole = SseScan::default();
    whole.feed(body);
    let mut cut = SseScan::default();
    let size = usize::from(step % 16) + 1;
    for piece in body.chunks(size) {
        cut.feed(piece);
    }
    assert_eq!(whole.saw_data(), cut.saw_data());
    assert_eq!(whole.error(), cut.error());
    if whole.error().is_some() {
        assert!(whole.saw_data(), "an error event is a data line");
    }
});
