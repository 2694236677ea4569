//! Fuzz target: the standalone operator's reader of Auction manifests (YAML files).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(auction) = gavel_operator::standalone::parse_manifest(text) {
        let _ = auction.spec.to_settings();
    }
});
