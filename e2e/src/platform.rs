//! The platform the scenarios run against, through its public interfaces only.
//!
//! A [`Platform`] knows the bid-api WebSocket and HTTP URLs and how to create an
//! auction and read its status:
//!
//! - from the environment ([`Platform::from_env`]): `GAVEL_E2E_WS_URLS` and
//!   `GAVEL_E2E_HTTP_URLS` (comma-separated, same order), optional
//!   `GAVEL_E2E_DATABASE_URL` and `GAVEL_E2E_JWT_SECRET` (HS256), and either `GAVEL_E2E_MANIFESTS` (a folder watched by a
//!   standalone operator) or `GAVEL_E2E_KUBECTL=1` (or a path to `kubectl`) with
//!   `GAVEL_E2E_NAMESPACE` (auctions are `kubectl apply`-ed and read with
//!   `kubectl get -o json`);
//! - or started on this machine ([`LocalPlatform`]): throw-away Redis and PostgreSQL, two
//!   bid-api processes in development auth mode and the operator in standalone mode.
//!
//! [`Platform::shared`] gives the scenario tests of one test binary a single platform.
//! Starting a local one, it first runs `cargo build -p gavel-bid-api -p gavel-operator`
//! (skipped with `GAVEL_E2E_SKIP_BUILD=1`; `GAVEL_BIN_DIR` names another folder of
//! binaries) and removes its folder of logs and manifests after the test process exits
//! (kept with `GAVEL_E2E_KEEP_LOGS=1`; errors name it).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gavel_cli::client::{Auth, ClientError, WsClient};
use gavel_cli::http;
pub use gavel_cli::local::{
    PlatformError, binary_dir, build_platform_binaries, kubectl_with, unique_name,
};
pub use gavel_cli::manifest::{AuctionSpec, manifest_path, now_ms, status_paths};
use gavel_cli::protocol::Snapshot;

use gavel_cli::manifest;
pub use gavel_cli::{LocalOptions, LocalPlatform};
use serde_json::Value;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> PlatformError + '_ {
    move |source| PlatformError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Removes `dir` a few seconds after this process is gone (once the platform's processes
/// have stopped writing their logs there).
fn remove_after_exit(dir: &std::path::Path) {
    gavel_cli::servers::run_after_exit(&format!("sleep 5; rm -rf '{}'", dir.display()));
}

/// How auctions are created and their status read.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A folder watched by a standalone operator: `<ns>_<name>.yaml`, status beside it.
    Manifests(PathBuf),
    /// `kubectl` against a cluster.
    Kubectl {
        /// The `kubectl` program.
        program: String,
    },
}

/// A running platform the scenarios talk to.
pub struct Platform {
    /// WebSocket URLs of the bid-api processes (`ws://…/v1/ws`).
    pub ws_urls: Vec<String>,
    /// HTTP base URLs of the same processes (`http://host:port`).
    pub http_urls: Vec<String>,
    /// Namespace the scenarios create their auctions in.
    pub namespace: String,
    /// PostgreSQL, when the scenarios can read it.
    pub database_url: Option<String>,
    /// HS256 secret of bidder tokens, when the scenarios may mint tokens
    /// (`GAVEL_E2E_JWT_SECRET`, or the local platform's).
    pub jwt_secret: Option<String>,
    /// How auctions are created.
    pub backend: Backend,
    local: Option<LocalPlatform>,
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

fn pick(urls: &[String], i: usize) -> &str {
    urls.get(i % urls.len().max(1)).map_or("", String::as_str)
}

impl Platform {
    /// A platform described by `GAVEL_E2E_*` variables, or `None` when
    /// `GAVEL_E2E_WS_URLS` is not set.
    pub fn from_env() -> Result<Option<Self>, PlatformError> {
        Self::from_vars(env)
    }

    /// Like [`Platform::from_env`], reading the variables with `var` (empty counts as
    /// unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, PlatformError> {
        let env = |k: &str| var(k).filter(|v| !v.is_empty());
        let Some(ws) = env("GAVEL_E2E_WS_URLS") else {
            return Ok(None);
        };
        let ws_urls = split_urls(&ws);
        let http_urls = split_urls(
            &env("GAVEL_E2E_HTTP_URLS")
                .ok_or_else(|| PlatformError::Config("GAVEL_E2E_HTTP_URLS is not set".into()))?,
        );
        if ws_urls.is_empty() || ws_urls.len() != http_urls.len() {
            return Err(PlatformError::Config(
                "GAVEL_E2E_WS_URLS and GAVEL_E2E_HTTP_URLS must list the same processes".into(),
            ));
        }
        let namespace = env("GAVEL_E2E_NAMESPACE").unwrap_or_else(|| "e2e".into());
        let backend = match (env("GAVEL_E2E_KUBECTL"), env("GAVEL_E2E_MANIFESTS")) {
            (Some(k), _) if k != "0" && k != "false" => Backend::Kubectl {
                program: if k == "1" || k == "true" {
                    "kubectl".into()
                } else {
                    k
                },
            },
            (_, Some(dir)) => Backend::Manifests(PathBuf::from(dir)),
            _ => {
                return Err(PlatformError::Config(
                    "set GAVEL_E2E_MANIFESTS (standalone operator) or GAVEL_E2E_KUBECTL=1 \
                     with GAVEL_E2E_NAMESPACE"
                        .into(),
                ));
            }
        };
        Ok(Some(Self {
            ws_urls,
            http_urls,
            namespace,
            database_url: env("GAVEL_E2E_DATABASE_URL"),
            jwt_secret: env("GAVEL_E2E_JWT_SECRET"),
            backend,
            local: None,
        }))
    }

    /// A platform at known addresses.
    pub fn new(
        ws_urls: Vec<String>,
        http_urls: Vec<String>,
        namespace: &str,
        database_url: Option<String>,
        backend: Backend,
    ) -> Self {
        Self {
            ws_urls,
            http_urls,
            namespace: namespace.to_owned(),
            database_url,
            jwt_secret: None,
            backend,
            local: None,
        }
    }

    /// Wraps a started local platform.
    pub fn local(local: LocalPlatform) -> Self {
        Self {
            ws_urls: local.ws_urls.clone(),
            http_urls: local.http_urls.clone(),
            namespace: "e2e".into(),
            database_url: Some(local.database_url.clone()),
            jwt_secret: Some(local.jwt_secret.clone()),
            backend: Backend::Manifests(local.manifests.clone()),
            local: Some(local),
        }
    }

    /// ` (logs: <dir>)` for a local platform, to append to error messages.
    fn logs_hint(&self) -> String {
        self.local
            .as_ref()
            .map(|l| format!(" (logs: {})", l.logs.display()))
            .unwrap_or_default()
    }

    /// The local platform, when this one was started on this machine.
    pub fn local_platform(&self) -> Option<&LocalPlatform> {
        self.local.as_ref()
    }

    /// The platform of this test binary, started once: from `GAVEL_E2E_*` if set, else a
    /// [`LocalPlatform`] (building the bid-api and operator binaries first). Panics with
    /// the reason when it cannot start — it is test start-up.
    pub fn shared() -> &'static Platform {
        // The outcome is kept either way: after a failed start every test fails at once
        // with the same reason instead of trying again.
        static SHARED: OnceLock<Result<Platform, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            // Start-up runs on its own thread and runtime: the caller may be inside a
            // test's runtime, and the platform outlives it.
            let started = std::thread::spawn(|| -> Result<Platform, PlatformError> {
                if let Some(p) = Platform::from_env()? {
                    return Ok(p);
                }
                if env("GAVEL_E2E_SKIP_BUILD").is_none() {
                    build_platform_binaries()?;
                }
                let bin_dir = binary_dir()?;
                let work_dir = gavel_cli::servers::temp_dir("e2e")?;
                if env("GAVEL_E2E_KEEP_LOGS").is_none() {
                    remove_after_exit(&work_dir);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| PlatformError::Start {
                        what: "a runtime".into(),
                        message: e.to_string(),
                    })?;
                let local =
                    rt.block_on(LocalPlatform::start(LocalOptions::new(bin_dir, work_dir)))?;
                Ok(Platform::local(local))
            })
            .join();
            match started {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("starting it panicked".into()),
            }
        });
        match shared {
            Ok(p) => p,
            Err(e) => panic!("cannot start the e2e platform: {e}"),
        }
    }

    /// WebSocket URL of bid-api process `i` (wrapping around; empty if there is none).
    pub fn ws_url(&self, i: usize) -> &str {
        pick(&self.ws_urls, i)
    }

    /// HTTP base URL of bid-api process `i` (wrapping around; empty if there is none).
    pub fn http_url(&self, i: usize) -> &str {
        pick(&self.http_urls, i)
    }

    /// Connects to bid-api process `i` as a development-mode bidder.
    pub async fn bidder(&self, i: usize, name: &str) -> Result<WsClient, ClientError> {
        WsClient::connect(self.ws_url(i), &Auth::Dev(name.to_owned())).await
    }

    /// Connects to bid-api process `i` anonymously.
    pub async fn watcher(&self, i: usize) -> Result<WsClient, ClientError> {
        WsClient::connect(self.ws_url(i), &Auth::Anonymous).await
    }

    /// Creates an auction `name` in the platform's namespace; returns its id
    /// `<namespace>/<name>`.
    pub async fn create_auction(
        &self,
        name: &str,
        spec: &AuctionSpec,
    ) -> Result<String, PlatformError> {
        let yaml = spec
            .ending_from_now()
            .to_yaml(&self.namespace, name)
            .map_err(|e| PlatformError::Config(format!("cannot write the manifest: {e}")))?;
        match &self.backend {
            Backend::Manifests(dir) => {
                manifest::write_manifest(dir, &self.namespace, name, &yaml)
                    .await
                    .map_err(io_error(&manifest_path(dir, &self.namespace, name)))?;
            }
            Backend::Kubectl { program } => {
                kubectl(program, &["apply", "-f", "-"], Some(yaml)).await?;
            }
        }
        Ok(format!("{}/{}", self.namespace, name))
    }

    /// Creates an auction and waits until bid-api reports it open.
    pub async fn create_open_auction(
        &self,
        name: &str,
        spec: &AuctionSpec,
    ) -> Result<String, PlatformError> {
        let id = self.create_auction(name, spec).await?;
        self.wait_open(&id, Duration::from_secs(30)).await?;
        Ok(id)
    }

    /// The REST snapshot `GET /v1/auctions/{ns}/{name}` from process `i`.
    pub async fn rest_snapshot(&self, i: usize, id: &str) -> Result<http::Response, PlatformError> {
        Ok(http::get(&format!("{}/v1/auctions/{id}", self.http_url(i))).await?)
    }

    /// The REST bid history `GET /v1/auctions/{ns}/{name}/bids?after=&limit=`.
    pub async fn rest_bids(
        &self,
        i: usize,
        id: &str,
        after: u64,
        limit: u32,
    ) -> Result<http::Response, PlatformError> {
        Ok(http::get(&format!(
            "{}/v1/auctions/{id}/bids?after={after}&limit={limit}",
            self.http_url(i)
        ))
        .await?)
    }

    /// Polls the REST snapshot until the auction is open.
    pub async fn wait_open(&self, id: &str, timeout: Duration) -> Result<Snapshot, PlatformError> {
        gavel_cli::target::wait_open(self.http_url(0), id, timeout)
            .await
            .map_err(|e| match e {
                PlatformError::Timeout { what, timeout } => PlatformError::Timeout {
                    what: format!("{what}{}", self.logs_hint()),
                    timeout,
                },
                e => e,
            })
    }

    /// The Auction's `status` as the operator wrote it, if any yet.
    pub async fn status(&self, id: &str) -> Result<Option<Value>, PlatformError> {
        let (namespace, name) = id.split_once('/').unwrap_or((&self.namespace, id));
        match &self.backend {
            Backend::Manifests(dir) => manifest::read_status(dir, namespace, name)
                .await
                .map_err(io_error(&manifest_path(dir, namespace, name))),
            Backend::Kubectl { program } => {
                let out = kubectl(
                    program,
                    &[
                        "get",
                        "auctions.gavel.dev",
                        name,
                        "-n",
                        namespace,
                        "-o",
                        "json",
                    ],
                    None,
                )
                .await?;
                let value: Value =
                    serde_json::from_str(&out).map_err(|e| PlatformError::Kubectl {
                        args: format!("get {id}"),
                        message: format!("unparsable output: {e}"),
                    })?;
                Ok(value.get("status").cloned())
            }
        }
    }

    /// Polls the status until `pred` holds; returns it.
    pub async fn wait_status(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, PlatformError> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(status) = self.status(id).await? {
                if pred(&status) {
                    return Ok(status);
                }
                last = Some(status);
            }
            if Instant::now() > deadline {
                return Err(PlatformError::Timeout {
                    what: format!("status of {id}: {what} (last: {last:?})"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn kubectl(
    program: &str,
    args: &[&str],
    stdin: Option<String>,
) -> Result<String, PlatformError> {
    kubectl_with(std::path::Path::new(program), None, args, stdin).await
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn platform_from_variables() {
        assert!(Platform::from_vars(vars(&[])).unwrap().is_none());
        let p = Platform::from_vars(vars(&[
            ("GAVEL_E2E_WS_URLS", "ws://a/v1/ws, ws://b/v1/ws"),
            ("GAVEL_E2E_HTTP_URLS", "http://a/,http://b"),
            ("GAVEL_E2E_KUBECTL", "/usr/bin/kubectl"),
            ("GAVEL_E2E_NAMESPACE", "e2e-1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.ws_urls, ["ws://a/v1/ws", "ws://b/v1/ws"]);
        assert_eq!(p.http_url(3), "http://b");
        assert_eq!(p.namespace, "e2e-1");
        assert!(
            matches!(&p.backend, Backend::Kubectl { program } if program == "/usr/bin/kubectl")
        );
        assert!(p.database_url.is_none());
        let p = Platform::from_vars(vars(&[
            ("GAVEL_E2E_WS_URLS", "ws://a/v1/ws"),
            ("GAVEL_E2E_HTTP_URLS", "http://a"),
            ("GAVEL_E2E_KUBECTL", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert!(matches!(&p.backend, Backend::Kubectl { program } if program == "kubectl"));
        let p = Platform::from_vars(vars(&[
            ("GAVEL_E2E_WS_URLS", "ws://a/v1/ws"),
            ("GAVEL_E2E_HTTP_URLS", "http://a"),
            ("GAVEL_E2E_MANIFESTS", "/m"),
            ("GAVEL_E2E_DATABASE_URL", "postgres://x/y"),
        ]))
        .unwrap()
        .unwrap();
        assert!(matches!(&p.backend, Backend::Manifests(d) if d == Path::new("/m")));
        assert_eq!(p.database_url.as_deref(), Some("postgres://x/y"));
        for bad in [
            vars(&[("GAVEL_E2E_WS_URLS", "ws://a/v1/ws")]),
            vars(&[
                ("GAVEL_E2E_WS_URLS", "ws://a/v1/ws"),
                ("GAVEL_E2E_HTTP_URLS", "http://a,http://b"),
                ("GAVEL_E2E_MANIFESTS", "/m"),
            ]),
            vars(&[
                ("GAVEL_E2E_WS_URLS", "ws://a/v1/ws"),
                ("GAVEL_E2E_HTTP_URLS", "http://a"),
            ]),
        ] {
            assert!(matches!(
                Platform::from_vars(bad),
                Err(PlatformError::Config(_))
            ));
        }
    }

    /// The kubectl backend applies the manifest on stdin and reads `.status` from
    /// `kubectl get -o json`, here with a stand-in `kubectl` script.
    #[tokio::test]
    async fn kubectl_backend() {
        let dir = gavel_cli::servers::temp_dir("fake-kubectl").unwrap();
        let script = dir.join("kubectl");
        let log = dir.join("calls");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{log}'\nif [ \"$1\" = apply ]; then cat >> '{log}'; echo applied; \
                 elif [ \"$1\" = get ]; then echo '{{\"status\":{{\"phase\":\"Open\",\"bidCount\":2}}}}'; \
                 else echo nope >&2; exit 1; fi\n",
                log = log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = Platform::new(
            vec!["ws://a/v1/ws".into()],
            vec!["http://a".into()],
            "e2e",
            None,
            Backend::Kubectl {
                program: script.display().to_string(),
            },
        );
        let spec = AuctionSpec::new("T", 100, 2, Duration::from_secs(60));
        let id = p.create_auction("k1", &spec).await.unwrap();
        assert_eq!(id, "e2e/k1");
        let status = p.status(&id).await.unwrap().unwrap();
        assert_eq!(status["phase"], "Open");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.starts_with("apply -f -\napiVersion: gavel.dev/v1alpha1"),
            "{calls}"
        );
        assert!(calls.contains("  namespace: e2e\n"), "{calls}");
        assert!(
            calls.contains("get auctions.gavel.dev k1 -n e2e -o json"),
            "{calls}"
        );
        let failing = Platform::new(
            vec![],
            vec![],
            "e2e",
            None,
            Backend::Kubectl {
                program: dir.join("missing").display().to_string(),
            },
        );
        assert!(matches!(
            failing.create_auction("k2", &spec).await,
            Err(PlatformError::Kubectl { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
