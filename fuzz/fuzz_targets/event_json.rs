//! Fuzz target: the event JSON the engine reads back from Redis, and the protocol
//! messages the bid-api makes of it.
#![no_main]

use gavel_engine::{AuctionEvent, AuctionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = AuctionEvent::from_json(data) {
        let id = AuctionId::new("fuzz", "lot").expect("valid id");
        let messages = gavel_bid_api::protocol::event_messages(&id, &event);
        for m in &messages.public {
            let _ = m.to_json();
        }
    }
});
