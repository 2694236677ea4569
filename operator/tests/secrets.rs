//! Secrets never reach the operator's output (issue #10 part 5): passwords in the Redis
//! and PostgreSQL URLs, set in the environment, appear neither in
//! `--help` nor in the errors of a process that cannot reach its servers.

use std::process::{Command, Stdio};

const REDIS_PASSWORD: &str = "RedisPw-7f3a9c";
const PG_PASSWORD: &str = "PgPw-2b8e41";

fn run(args: &[&str]) -> String {
    let port = gavel_engine::testing::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_gavel-operator"))
        .args(args)
        .env(
            "GAVEL_REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"),
        )
        .env(
            "GAVEL_DATABASE_URL",
            format!("postgres://gavel:{PG_PASSWORD}@127.0.0.1:{port}/gavel"),
        )
        .env("GAVEL_OPERATOR_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .expect("run gavel-operator");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
