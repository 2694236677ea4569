//! Start-up robustness of the real `gavel-operator` process: it stays alive and not ready
//! (saying why) while Redis, PostgreSQL or the Kubernetes API are not there yet, becomes
//! ready once they are, and stops cleanly on SIGTERM while still waiting.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gavel_engine::testing::{
    TestRedis, database_url, free_port, http_get, logged_port, redis_url, temp_dir,
};

/// Generous bound on any single wait, only to avoid hangs.
const WAIT: Duration = Duration::from_secs(30);

/// A child process killed on drop, with its log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the operator on a port of its choosing (port 0) and returns it with the port it
/// logged.
fn operator(args: &[&str], envs: &[(&str, &str)]) -> (Proc, u16) {
    let dir = temp_dir("operator-startup");
    let log = dir.join("operator.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gavel-operator"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start gavel-operator");
    let mut proc = Proc { child, log };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(port) = logged_port(&proc.log, "health endpoints listening") {
            return (proc, port);
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("the operator exited with {status}:\n{}", proc.logs());
        }
        assert!(
            Instant::now() < deadline,
            "no port logged:\n{}",
            proc.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP GET: (status, the whole answer); None while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let answer = http_get(port, path, &[]).await.ok()?;
    Some((answer.status, answer.raw))
}

/// Polls `path` until it answers `want` with a body containing `needle`.
async fn wait_for(p: &Proc, port: u16, path: &str, want: u16, needle: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = get(port, path).await;
        if let Some((status, body)) = &got
            && *status == want
            && body.contains(needle)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answered {got:?}, wanted {want} with {needle:?}:\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn waits_for_redis_then_becomes_ready() {
    let redis_port = free_port();
    let manifests = temp_dir("operator-manifests");
    let database = database_url().await;
    let (op, port) = operator(
        &[
            "--standalone",
            manifests.to_str().unwrap(),
            "--redis-url",
            &format!("redis://127.0.0.1:{redis_port}"),
            "--database-url",
            &database,
        ],
        &[],
    );
    wait_for(&op, port, "/healthz", 200, "ok").await;
    wait_for(&op, port, "/readyz", 503, "waiting for Redis").await;
    let _redis = TestRedis::start_on(redis_port);
    wait_for(&op, port, "/readyz", 200, "ready").await;
    assert!(op.logs().contains("Redis reached"), "{}", op.logs());
}

#[tokio::test]
async fn waits_for_the_api_server_and_stops_cleanly() {
    let (redis, _guard) = redis_url();
    let database = database_url().await;
    // A kubeconfig whose API server is not there (yet).
    let dir = temp_dir("operator-kubeconfig");
    let kubeconfig = dir.join("kubeconfig");
    let api_port = free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{api_port}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: gavel-system}}\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    let (mut op, port) = operator(
        &["--redis-url", &redis, "--database-url", &database],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    wait_for(&op, port, "/healthz", 200, "ok").await;
    wait_for(&op, port, "/readyz", 503, "waiting for the Kubernetes API").await;
    let status = Command::new("kill")
        .args(["-TERM", &op.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(s) = op.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "operator did not exit:\n{}",
            op.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}:\n{}", op.logs());
}
