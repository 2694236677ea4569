//! Secrets never reach the operator's output (issue #10 part 5): passwords in the Redis
//! and PostgreSQL URLs, set in the environment, appear neither in
//! `--help` nor in the logs of a process that cannot reach its servers (it waits for
//! them, saying why).

use std::time::Duration;

use gavel_engine::testing::{free_port, output_within};

const REDIS_PASSWORD: &str = "RedisPw-7f3a9c";
const PG_PASSWORD: &str = "PgPw-2b8e41";

/// The output of the operator run with `args` and secrets in its environment, pointed at
/// servers that are not there: `--help` exits at once; otherwise it waits for them, logging
/// why (with the URLs), until it is stopped after 4 s.
fn run(args: &[&str]) -> String {
    let port = free_port();
    let envs = [
        (
            "GAVEL_REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"),
        ),
        (
            "GAVEL_DATABASE_URL",
            format!("postgres://gavel:{PG_PASSWORD}@127.0.0.1:{port}/gavel"),
        ),
        ("GAVEL_OPERATOR_LISTEN", "127.0.0.1:0".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ];
    output_within(
        env!("CARGO_BIN_EXE_gavel-operator"),
        args,
        &envs,
        Duration::from_secs(4),
    )
}

#[test]
fn passwords_appear_in_neither_help_nor_errors() {
    let help = run(&["--help"]);
    assert!(help.contains("GAVEL_REDIS_URL"), "{help}");
    let failed = run(&[]);
    assert!(
        failed.contains("Redis") || failed.contains("redis"),
        "{failed}"
    );
    for out in [help, failed] {
        for secret in [REDIS_PASSWORD, PG_PASSWORD] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
    }
}
