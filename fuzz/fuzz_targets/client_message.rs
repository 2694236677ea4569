//! Fuzz target: the bid-api's parser of client WebSocket frames (any text a client sends).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = gavel_bid_api::protocol::parse_client_message(text) {
        let _ = e.to_server_message().to_json();
    }
});
