//! Fuzz target: an Auction spec (JSON, as the API server stores it) converted to the
//! engine's settings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<gavel_crds::AuctionSpec>(data) {
        let _ = spec.to_settings();
    }
});
