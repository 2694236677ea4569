//! Secrets never reach the operator's output (issue #10 part 5): passwords in the Redis
//! and PostgreSQL URLs, set in the environment, appear neither in
//! `--help` nor in the logs of a process that cannot reach its servers (it waits for
//! them, saying why).

use std::process::{Command, Stdio};

const REDIS_PASSWORD: &str = "RedisPw-7f3a9c";
const PG_PASSWORD: &str = "PgPw-2b8e41";

fn run(args: &[&str]) -> String {
    let port = gavel_engine::testing::free_port();
    let dir = gavel_engine::testing::temp_dir("secrets");
    let path = dir.join("output.log");
    let log = std::fs::File::create(&path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel-operator"))
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
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("run gavel-operator");
    // `--help` exits at once; without its servers the process waits for them, logging
    // why (with the URLs), until it is stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let out = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(dir);
    out
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
