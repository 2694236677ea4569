//! What the CLI tests share: one local platform per test binary (real Redis, PostgreSQL,
//! two bid-api processes and a standalone operator, started by this crate's library), and
//! running this crate's binaries.

#![allow(dead_code)] // Each test binary uses its own part.

use std::sync::OnceLock;
use std::time::Duration;

use gavel_cli::local::{binary_dir, build_platform_binaries, unique_name};
use gavel_cli::target::LocalTarget;
use gavel_cli::{AuctionSpec, LocalOptions, LocalPlatform};

/// The platform of this test binary and its addresses.
pub struct Shared {
    /// Started once; stopped when the test process exits (watchdogs).
    pub local: LocalPlatform,
    /// Its addresses, as `.gavel/env` would give them.
    pub target: LocalTarget,
}

/// The local platform of this test binary, started once (building the bid-api and
/// operator first unless `GAVEL_E2E_BINARIES_BUILT=1`).
pub fn platform() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            build_platform_binaries().expect("build the platform binaries");
            let work_dir = gavel_cli::servers::temp_dir("cli").expect("a temporary folder");
            gavel_cli::servers::run_after_exit(&format!(
                "sleep 5; rm -rf '{}'",
                work_dir.display()
            ));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let local = rt
                .block_on(LocalPlatform::start(LocalOptions::new(
                    binary_dir().expect("the binaries' folder"),
                    work_dir,
                )))
                .unwrap_or_else(|e| panic!("cannot start the local platform: {e}"));
            let target = LocalTarget {
                ws_urls: local.ws_urls.clone(),
                http_urls: local.http_urls.clone(),
                manifests: local.manifests.clone(),
                database_url: Some(local.database_url.clone()),
            };
            Shared { local, target }
        })
        .join()
        .expect("starting the platform panicked")
    })
}

/// Creates an auction `e2e/<prefix>-…` and waits until it is open; its id.
pub async fn open(prefix: &str, spec: AuctionSpec) -> String {
    let target = &platform().target;
    let (id, _) = target
        .create_auction("e2e", &unique_name(prefix), &spec)
        .await
        .unwrap_or_else(|e| panic!("cannot create a {prefix} auction: {e}"));
    target
        .wait_open(&id, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{id} did not open: {e}"));
    id
}

/// Runs one of this crate's binaries to completion; returns (exit code, stdout + stderr).
pub async fn run_bin(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    run_bin_env(bin, args, &[]).await
}

/// [`run_bin`] with extra environment variables; (exit code, stdout + stderr).
pub async fn run_bin_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (code, stdout, stderr) = run_split(bin, args, env).await;
    (code, format!("{stdout}{stderr}"))
}

/// Runs a binary to completion with no `GAVEL_*` connection variables of the caller;
/// (exit code, stdout, stderr).
pub async fn run_split(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(bin)
            .args(args)
            .env_remove("GAVEL_WS_URL")
            .env_remove("GAVEL_HTTP_URL")
            .env_remove("GAVEL_BIDDER")
            .env_remove("GAVEL_TOKEN")
            .env_remove("GAVEL_TOKEN_FILE")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{bin} {args:?} did not finish in 120s"))
    .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HS256 bidder token signed with the platform's secret.
pub fn token(secret: &str, sub: &str, name: &str) -> String {
    let claims = serde_json::json!({
        "sub": sub,
        "name": name,
        "exp": gavel_cli::manifest::now_ms() / 1000 + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}
