//! Arbitrary text as a fault script and as a mix: parsing never panics, and
//! what parses prints back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sturdy_faults::{Mix, Script};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(script) = text.parse::<Script>() {
        let again: Script = script.to_string().parse().expect("a printed script parses");
        assert_eq!(again, script);
    }
    let _ = text.parse::<Mix>();
});
