//! Fuzz target: the token and identity path (header, signature, claims policy, display
//! name) of the bid-api, with an HS256 secret, an issuer, an audience and a bid scope.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use gavel_bid_api::auth::{Authenticator, display_name, tagged_name};
use gavel_bid_api::config::Config;
use gavel_bid_api::metrics::Metrics;
use libfuzzer_sys::fuzz_target;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = Config::try_parse_from([
            "fuzz",
            "--jwt-secret",
            "fuzz-secret",
            "--jwt-issuer",
            "https://idp.example",
            "--jwt-audience",
            "gavel",
            "--jwt-bid-scope",
            "bid",
            "--jwt-subject-claim",
            "user.id",
        ])
        .expect("config");
        Authenticator::new(&config, Metrics::new().expect("metrics")).expect("authenticator")
    })
}

fuzz_target!(|text: &str| {
    let _ = futures::executor::block_on(authenticator().verify(text));
    if let Some(name) = display_name(text) {
        let _ = tagged_name(&name, text);
    }
});
