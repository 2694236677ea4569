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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gavel_engine::testing::{
    TestCluster, TestPostgres, TestRedis, create_database, free_port, run_after_exit,
};
use serde_json::{Value, json};

use crate::client::{Auth, ClientError, WsClient};
use crate::http;
use crate::protocol::{Amount, Millis, Phase, Snapshot, format_rfc3339};

/// The bid-api binary's name.
pub const BID_API_BIN: &str = "gavel-bid-api";
/// The operator binary's name.
pub const OPERATOR_BIN: &str = "gavel-operator";

/// Failures setting up or driving a platform.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A needed environment variable is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A binary of the platform is not built.
    #[error(
        "{0} not found: build it with `cargo build -p gavel-bid-api -p gavel-operator` \
         (or set GAVEL_BIN_DIR to the folder holding it)"
    )]
    MissingBinary(PathBuf),
    /// Starting a part failed.
    #[error("starting {what}: {message}")]
    Start {
        /// Which part.
        what: String,
        /// Why, with the end of its log when there is one.
        message: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `kubectl` failed.
    #[error("kubectl {args}: {message}")]
    Kubectl {
        /// Its arguments.
        args: String,
        /// Its error output.
        message: String,
    },
    /// An HTTP request failed.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// A WebSocket client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Something did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PlatformError + '_ {
    move |source| PlatformError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An Auction's spec, as a scenario or the demo declares it (README § The Auction resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionSpec {
    /// The lot's title (`spec.title`).
    pub title: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Lowest first bid.
    pub starting_price: Amount,
    /// Hidden reserve.
    pub reserve_price: Option<Amount>,
    /// Increment tiers `(from, step)`.
    pub increments: Vec<(Amount, Amount)>,
    /// Opening time; `None` opens as soon as provisioned.
    pub starts_at: Option<Millis>,
    /// Scheduled end.
    pub ends_at: Millis,
    /// When set, [`Platform::create_auction`] sets `ends_at` to this long after the
    /// moment it creates the auction (so a spec built early still ends when meant).
    pub ends_in: Option<Duration>,
    /// Soft close `(window, extension)` as durations such as `3s`.
    pub soft_close: Option<(String, String)>,
    /// Per-bidder rate limit `(perSecond, burst)`.
    pub bid_limit: Option<(u32, u32)>,
    /// How long the closed auction stays in Redis (`spec.retention`, e.g. `0s`).
    pub retention: Option<String>,
}

pub use gavel_engine::runtime::now_ms;

impl AuctionSpec {
    /// An auction in USD opening when provisioned and ending `ends_in` from now, with a
    /// flat increment `step` and a generous rate limit.
    pub fn new(title: &str, starting_price: Amount, step: Amount, ends_in: Duration) -> Self {
        Self {
            title: title.to_owned(),
            currency: "USD".to_owned(),
            starting_price,
            reserve_price: None,
            increments: vec![(0, step)],
            starts_at: None,
            ends_at: now_ms() + ends_in.as_millis() as Millis,
            ends_in: Some(ends_in),
            soft_close: None,
            bid_limit: Some((50, 100)),
            retention: None,
        }
    }

    /// Replaces the increment tiers.
    pub fn tiers(mut self, tiers: &[(Amount, Amount)]) -> Self {
        self.increments = tiers.to_vec();
        self
    }

    /// Sets a reserve price.
    pub fn reserve(mut self, reserve: Amount) -> Self {
        self.reserve_price = Some(reserve);
        self
    }

    /// Sets soft close: a bid within `window` of the end moves it to now + `extension`.
    pub fn soft_close(mut self, window: Duration, extension: Duration) -> Self {
        self.soft_close = Some((
            format!("{}ms", window.as_millis()),
            format!("{}ms", extension.as_millis()),
        ));
        self
    }

    /// The Auction object as JSON (also valid YAML for `kubectl apply`).
    pub fn manifest(&self, namespace: &str, name: &str) -> Value {
        let mut spec = json!({
            "title": self.title,
            "currency": self.currency,
            "startingPrice": self.starting_price,
            "increments": self.increments.iter()
                .map(|(from, step)| json!({ "from": from, "step": step }))
                .collect::<Vec<_>>(),
            "endsAt": format_rfc3339(self.ends_at),
        });
        if let Some(reserve) = self.reserve_price {
            spec["reservePrice"] = json!(reserve);
        }
        if let Some(starts) = self.starts_at {
            spec["startsAt"] = json!(format_rfc3339(starts));
        }
        if let Some((window, extension)) = &self.soft_close {
            spec["softClose"] = json!({ "window": window, "extension": extension });
        }
        if let Some((per_second, burst)) = self.bid_limit {
            spec["bidLimit"] = json!({ "perSecond": per_second, "burst": burst });
        }
        if let Some(retention) = &self.retention {
            spec["retention"] = json!(retention);
        }
        json!({
            "apiVersion": "gavel.dev/v1alpha1",
            "kind": "Auction",
            "metadata": { "name": name, "namespace": namespace },
            "spec": spec,
        })
    }

    /// The Auction object as YAML, fields in the order a person writes them.
    pub fn to_yaml(&self, namespace: &str, name: &str) -> String {
        // JSON strings are valid YAML double-quoted scalars.
        let q = |s: &str| Value::from(s).to_string();
        let mut y = format!(
            "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata:\n  name: {}\n  namespace: {}\n\
             spec:\n  title: {}\n  currency: {}\n  startingPrice: {}\n",
            q(name),
            q(namespace),
            q(&self.title),
            q(&self.currency),
            self.starting_price
        );
        if let Some(reserve) = self.reserve_price {
            y.push_str(&format!("  reservePrice: {reserve}\n"));
        }
        y.push_str("  increments:\n");
        for (from, step) in &self.increments {
            y.push_str(&format!("    - {{ from: {from}, step: {step} }}\n"));
        }
        if let Some(starts) = self.starts_at {
            y.push_str(&format!("  startsAt: {}\n", q(&format_rfc3339(starts))));
        }
        y.push_str(&format!("  endsAt: {}\n", q(&format_rfc3339(self.ends_at))));
        if let Some((window, extension)) = &self.soft_close {
            y.push_str(&format!(
                "  softClose: {{ window: {}, extension: {} }}\n",
                q(window),
                q(extension)
            ));
        }
        if let Some((per_second, burst)) = self.bid_limit {
            y.push_str(&format!(
                "  bidLimit: {{ perSecond: {per_second}, burst: {burst} }}\n"
            ));
        }
        if let Some(retention) = &self.retention {
            y.push_str(&format!("  retention: {}\n", q(retention)));
        }
        y
    }
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

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

static NAME_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh auction name starting with `prefix`, unique across runs (lower-case, DNS-safe).
pub fn unique_name(prefix: &str) -> String {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let stamp = (now_ms() / 10) % 1_000_000_000;
    format!("{prefix}-{}-{n}", radix36(stamp as u64))
}

/// A fresh HS256 secret for the local platform: 32 bytes from the kernel's CSPRNG, hex.
fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh signing secret of the event feed, `whsec_<base64 of 32 random bytes>`.
fn random_webhook_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(gavel_engine::outbound::WebhookSecret::from_key(&bytes).to_text())
}

fn radix36(mut v: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
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
                let work_dir = gavel_engine::testing::temp_dir("e2e");
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
        let mut spec = spec.clone();
        if let Some(ends_in) = spec.ends_in {
            spec.ends_at = now_ms() + ends_in.as_millis() as Millis;
        }
        let yaml = spec.to_yaml(&self.namespace, name);
        match &self.backend {
            Backend::Manifests(dir) => {
                let file = manifest_path(dir, &self.namespace, name);
                let tmp = dir.join(format!(".{}.tmp", name));
                tokio::fs::write(&tmp, yaml).await.map_err(io_error(&tmp))?;
                tokio::fs::rename(&tmp, &file)
                    .await
                    .map_err(io_error(&file))?;
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
        let deadline = Instant::now() + timeout;
        loop {
            let last;
            match self.rest_snapshot(0, id).await {
                Ok(r) if r.status == 200 => match serde_json::from_value::<Snapshot>(r.json()) {
                    Ok(s) if s.phase == Phase::Open => return Ok(s),
                    Ok(s) => last = format!("phase {}", s.phase),
                    Err(e) => last = format!("unparsable snapshot {}: {e}", r.body),
                },
                Ok(r) => last = format!("HTTP {} {}", r.status, r.body),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(PlatformError::Timeout {
                    what: format!("{id} to open (last: {last}){}", self.logs_hint()),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Auction's `status` as the operator wrote it, if any yet.
    pub async fn status(&self, id: &str) -> Result<Option<Value>, PlatformError> {
        let (namespace, name) = id.split_once('/').unwrap_or((&self.namespace, id));
        match &self.backend {
            Backend::Manifests(dir) => {
                let file = manifest_path(dir, namespace, name);
                for candidate in status_paths(&file) {
                    match tokio::fs::read_to_string(&candidate).await {
                        Ok(text) => {
                            let value: Value = match serde_yaml::from_str(&text) {
                                Ok(v) => v,
                                // Caught mid-write: report "no status yet".
                                Err(_) => return Ok(None),
                            };
                            return Ok(Some(match value.get("status") {
                                Some(s) => s.clone(),
                                None => value,
                            }));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_error(&candidate)(e)),
                    }
                }
                Ok(None)
            }
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

/// The manifest file of an auction in a manifests folder.
pub fn manifest_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!("{namespace}_{name}.yaml"))
}

/// Where a standalone operator may write the status of `file`: `<file>.status.yaml`
/// (`a.yaml.status.yaml`), or with the extension replaced (`a.status.yaml`).
pub fn status_paths(file: &Path) -> [PathBuf; 2] {
    let mut appended = file.as_os_str().to_owned();
    appended.push(".status.yaml");
    [PathBuf::from(appended), file.with_extension("status.yaml")]
}

async fn kubectl(
    program: &str,
    args: &[&str],
    stdin: Option<String>,
) -> Result<String, PlatformError> {
    kubectl_with(Path::new(program), None, args, stdin).await
}

/// Runs `program` (a kubectl) with `args`, with `--kubeconfig` when given, `stdin` piped
/// in; its standard output, or its error output as the error.
pub(crate) async fn kubectl_with(
    program: &Path,
    kubeconfig: Option<&Path>,
    args: &[&str],
    stdin: Option<String>,
) -> Result<String, PlatformError> {
    use tokio::io::AsyncWriteExt;
    let err = |message: String| PlatformError::Kubectl {
        args: args.join(" "),
        message,
    };
    let mut cmd = tokio::process::Command::new(program);
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let mut child = cmd
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {}: {e}", program.display())))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The folder holding the bid-api and operator binaries: `$GAVEL_BIN_DIR`, else the
/// folder of the running executable (`target/debug` for binaries and tests alike).
pub fn binary_dir() -> Result<PathBuf, PlatformError> {
    if let Some(dir) = env("GAVEL_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| PlatformError::Config(e.to_string()))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| PlatformError::Config("executable without a folder".into()))?
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Builds the bid-api and operator binaries with cargo (`$CARGO`, else `cargo`), once per
/// process. Test binaries cannot depend on other crates' binaries, so the harness builds
/// them; cargo is fast when they are up to date.
///
/// `GAVEL_E2E_BINARIES_BUILT=1` skips the build: `make test` sets it, because its
/// `cargo test --workspace` has just built both binaries (for their own crates' tests) with
/// the test run's features, and a plain `cargo build` would rebuild most dependencies with
/// other features (minutes on a fresh machine).
pub fn build_platform_binaries() -> Result<(), PlatformError> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if env("GAVEL_E2E_BINARIES_BUILT").is_some_and(|v| v == "1") {
                let dir = binary_dir().map_err(|e| e.to_string())?;
                return match [BID_API_BIN, OPERATOR_BIN]
                    .iter()
                    .find(|bin| !dir.join(bin).is_file())
                {
                    None => Ok(()),
                    Some(bin) => Err(format!(
                        "GAVEL_E2E_BINARIES_BUILT=1 but {} is missing",
                        dir.join(bin).display()
                    )),
                };
            }
            let cargo = env("CARGO").unwrap_or_else(|| "cargo".into());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .to_owned();
            let mut args = vec!["build", "-p", "gavel-bid-api", "-p", "gavel-operator"];
            // A release test binary looks for release binaries beside it.
            if binary_dir().is_ok_and(|d| d.ends_with("release")) {
                args.push("--release");
            }
            eprintln!(
                "e2e: building {BID_API_BIN} and {OPERATOR_BIN} (cargo {})",
                args.join(" ")
            );
            // Cargo gives a test process the variables of its package (CARGO_MANIFEST_DIR,
            // CARGO_PKG_NAME, …); some build scripts (ring's) rerun when one changes, which
            // would rebuild half the dependency tree here and again in the next `cargo test`.
            let mut cmd = Command::new(&cargo);
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key.starts_with("CARGO_PKG_")
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                    ]
                    .contains(&key.as_ref())
                {
                    cmd.env_remove(key.as_ref());
                }
            }
            let status = cmd
                .args(&args)
                .current_dir(&workspace)
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run {cargo}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("cargo {} failed ({status})", args.join(" ")))
            }
        })
        .clone()
        .map_err(|message| PlatformError::Start {
            what: "the platform binaries".into(),
            message,
        })
}

/// What [`LocalPlatform::start`] starts.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Folder of `gavel-bid-api` and `gavel-operator`.
    pub bin_dir: PathBuf,
    /// Folder for the manifests (`manifests/`) and logs (`logs/`).
    pub work_dir: PathBuf,
    /// How many bid-api processes.
    pub bid_apis: usize,
    /// `RUST_LOG` of the processes.
    pub rust_log: String,
    /// Extra command-line flags for every bid-api process, from
    /// `GAVEL_LOCAL_BID_API_ARGS` (whitespace-separated), e.g. the benchmark's
    /// `--messages-per-second 1000000`.
    pub bid_api_args: Vec<String>,
    /// How the operator runs.
    pub operator: OperatorMode,
    /// Run Redis as a cluster of three masters (`GAVEL_LOCAL_REDIS_CLUSTER=1`) instead of
    /// one server: the processes get a `redis-cluster://` URL.
    pub redis_cluster: bool,
}

/// How [`LocalPlatform`] runs the operator.
#[derive(Clone, Debug, Default)]
pub enum OperatorMode {
    /// One process, `--standalone <work_dir>/manifests` (process name `operator`).
    #[default]
    Standalone,
    /// Replicas against a Kubernetes API server (process names `operator-1`, …), each with
    /// this kubeconfig and environment and its own `GAVEL_OPERATOR_ID` (its process name,
    /// as a pod's name would be).
    Kube {
        /// The kubeconfig the replicas authenticate with.
        kubeconfig: PathBuf,
        /// Environment of every replica (e.g. the chart's: Lease name and namespace).
        env: Vec<(String, String)>,
        /// How many replicas.
        replicas: usize,
    },
}

impl LocalOptions {
    /// Two bid-api processes, `RUST_LOG` from the environment or `info`.
    pub fn new(bin_dir: PathBuf, work_dir: PathBuf) -> Self {
        Self {
            bin_dir,
            work_dir,
            bid_apis: 2,
            rust_log: env("RUST_LOG").unwrap_or_else(|| "info".into()),
            bid_api_args: env("GAVEL_LOCAL_BID_API_ARGS")
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            operator: OperatorMode::Standalone,
            redis_cluster: env("GAVEL_LOCAL_REDIS_CLUSTER")
                .is_some_and(|v| v == "1" || v == "true"),
        }
    }
}

/// Builds the command of a platform process again (for a restart).
type Recipe = Box<dyn Fn() -> Command + Send + Sync>;

/// One child process of the platform.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    recipe: Recipe,
    base_url: String,
}

/// A complete platform on this machine: throw-away Redis and PostgreSQL, bid-api
/// processes with development auth, and the operator in standalone mode watching a
/// manifests folder. Everything stops when it is dropped (or when this process dies: a
/// watchdog shell stops each child then).
pub struct LocalPlatform {
    processes: Vec<Process>,
    /// WebSocket URLs of the bid-api processes.
    pub ws_urls: Vec<String>,
    /// HTTP base URLs of the bid-api processes.
    pub http_urls: Vec<String>,
    /// The operator's metrics/health base URL.
    pub operator_url: String,
    /// PostgreSQL database of the platform.
    pub database_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// HS256 secret the bid-api processes verify bidder tokens with (besides development
    /// auth), fresh for each platform.
    pub jwt_secret: String,
    /// The folder the operator watches for Auction YAML files.
    pub manifests: PathBuf,
    /// The cluster-wide sink of the event feed (`GAVEL_EVENTS_SINK` of this process), and
    /// the feed's signing secret (`GAVEL_EVENTS_SECRET`, else a fresh one).
    pub events: Option<(String, String)>,
    /// The folder of the processes' logs.
    pub logs: PathBuf,
    rust_log: String,
    redis: Redis,
    postgres: TestPostgres,
}

/// The platform's Redis: one server, or a cluster.
enum Redis {
    Single(TestRedis),
    Cluster(TestCluster),
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PlatformError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PlatformError::Start {
            what: what.to_owned(),
            message: panic_message(e),
        })
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// Removes `dir` a few seconds after this process is gone (once the platform's processes
/// have stopped writing their logs there).
fn remove_after_exit(dir: &Path) {
    run_after_exit(&format!("sleep 5; rm -rf '{}'", dir.display()));
}

/// Stops `pid` (SIGTERM, then SIGKILL) once this process is gone.
fn watchdog(pid: u32) {
    run_after_exit(&format!(
        "kill -TERM {pid} 2>/dev/null; sleep 3; kill -9 {pid} 2>/dev/null"
    ));
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

impl LocalPlatform {
    /// Starts everything and waits until every process is ready (`/readyz`).
    pub async fn start(opts: LocalOptions) -> Result<Self, PlatformError> {
        let bid_api = opts.bin_dir.join(BID_API_BIN);
        let operator = opts.bin_dir.join(OPERATOR_BIN);
        for bin in [&bid_api, &operator] {
            if !bin.is_file() {
                return Err(PlatformError::MissingBinary(bin.clone()));
            }
        }
        let manifests = opts.work_dir.join("manifests");
        let logs = opts.work_dir.join("logs");
        for dir in [&manifests, &logs] {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let redis = if opts.redis_cluster {
            Redis::Cluster(blocking("a Redis Cluster", || TestCluster::start_durable(3, 0)).await?)
        } else {
            Redis::Single(blocking("redis-server", TestRedis::start_durable).await?)
        };
        let redis_url = match &redis {
            Redis::Single(r) => r.url(),
            Redis::Cluster(c) => c.url(),
        };
        let postgres = blocking("postgres", TestPostgres::start).await?;
        let base = postgres.url();
        let database_url = tokio::spawn(async move { create_database(&base, "gavel").await })
            .await
            .map_err(|e| PlatformError::Start {
                what: "the gavel database".into(),
                message: panic_message(e),
            })?;
        let mut platform = Self {
            processes: Vec::new(),
            ws_urls: Vec::new(),
            http_urls: Vec::new(),
            operator_url: String::new(),
            database_url,
            redis_url,
            jwt_secret: random_secret().map_err(io_error(Path::new("/dev/urandom")))?,
            manifests,
            events: match env("GAVEL_EVENTS_SINK") {
                Some(sink) => Some((
                    sink,
                    match env("GAVEL_EVENTS_SECRET") {
                        Some(secret) => secret,
                        None => {
                            random_webhook_secret().map_err(io_error(Path::new("/dev/urandom")))?
                        }
                    },
                )),
                None => None,
            },
            logs,
            rust_log: opts.rust_log.clone(),
            redis,
            postgres,
        };
        let mut ready_urls = Vec::new();
        for i in 1..=opts.bid_apis {
            let port = free_port();
            let http = format!("http://127.0.0.1:{port}");
            let (bin, secret, args) = (
                bid_api.clone(),
                platform.jwt_secret.clone(),
                opts.bid_api_args.clone(),
            );
            let recipe: Recipe = Box::new(move || {
                let mut cmd = Command::new(&bin);
                cmd.env("GAVEL_LISTEN", format!("127.0.0.1:{port}"))
                    .env("GAVEL_DEV_AUTH", "true")
                    .env("GAVEL_JWT_SECRET", &secret)
                    .args(&args);
                cmd
            });
            platform.spawn(&format!("bid-api-{i}"), recipe, &http)?;
            platform
                .ws_urls
                .push(format!("ws://127.0.0.1:{port}/v1/ws"));
            platform.http_urls.push(http.clone());
            ready_urls.push((format!("bid-api-{i}"), http));
        }
        match &opts.operator {
            OperatorMode::Standalone => {
                let port = free_port();
                let url = format!("http://127.0.0.1:{port}");
                let (bin, manifests, events) = (
                    operator.clone(),
                    platform.manifests.clone(),
                    platform.events.clone(),
                );
                let recipe: Recipe = Box::new(move || {
                    let mut cmd = Command::new(&bin);
                    cmd.arg("--standalone")
                        .arg(&manifests)
                        .env("GAVEL_OPERATOR_LISTEN", format!("127.0.0.1:{port}"));
                    if let Some((sink, secret)) = &events {
                        cmd.env("GAVEL_EVENTS_SINK", sink)
                            .env("GAVEL_EVENTS_SECRET", secret);
                    }
                    cmd
                });
                platform.spawn("operator", recipe, &url)?;
                ready_urls.push(("operator".into(), url));
            }
            OperatorMode::Kube {
                kubeconfig,
                env,
                replicas,
            } => {
                for i in 1..=*replicas {
                    let port = free_port();
                    let url = format!("http://127.0.0.1:{port}");
                    let name = format!("operator-{i}");
                    let (bin, kubeconfig, id) =
                        (operator.clone(), kubeconfig.clone(), name.clone());
                    let mut env = env.clone();
                    if let Some((sink, secret)) = &platform.events {
                        env.push(("GAVEL_EVENTS_SINK".into(), sink.clone()));
                        env.push(("GAVEL_EVENTS_SECRET".into(), secret.clone()));
                    }
                    let recipe: Recipe = Box::new(move || {
                        let mut cmd = Command::new(&bin);
                        cmd.envs(env.iter().map(|(k, v)| (k, v)))
                            .env("KUBECONFIG", &kubeconfig)
                            .env("GAVEL_OPERATOR_ID", &id)
                            .env("GAVEL_OPERATOR_LISTEN", format!("127.0.0.1:{port}"));
                        cmd
                    });
                    platform.spawn(&name, recipe, &url)?;
                    ready_urls.push((name, url));
                }
            }
        }
        platform.operator_url = ready_urls
            .get(opts.bid_apis)
            .map(|(_, url)| url.clone())
            .unwrap_or_default();
        for (i, (name, url)) in ready_urls.iter().enumerate() {
            platform.wait_ready(i, name, url).await?;
        }
        Ok(platform)
    }

    fn spawn(&mut self, name: &str, recipe: Recipe, base_url: &str) -> Result<(), PlatformError> {
        let log = self.logs.join(format!("{name}.log"));
        let child = self.start_child(name, &recipe, &log)?;
        self.processes.push(Process {
            name: name.to_owned(),
            child,
            log,
            recipe,
            base_url: base_url.to_owned(),
        });
        Ok(())
    }

    fn start_child(&self, name: &str, recipe: &Recipe, log: &Path) -> Result<Child, PlatformError> {
        let mut cmd = recipe();
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_error(log))?;
        let err_file = file.try_clone().map_err(io_error(log))?;
        // Only the settings chosen here: none of the caller's GAVEL_* variables (say, from
        // a sourced .gavel/env or a production shell) leak into the platform.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GAVEL_") && cmd.get_envs().all(|(k, _)| k != key)
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env("GAVEL_REDIS_URL", &self.redis_url)
            .env("GAVEL_LOG_FORMAT", "text")
            .env("GAVEL_DATABASE_URL", &self.database_url)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file);
        let child = cmd.spawn().map_err(|e| PlatformError::Start {
            what: name.to_owned(),
            message: e.to_string(),
        })?;
        watchdog(child.id());
        tracing::info!(name, pid = child.id(), log = %log.display(), "started");
        Ok(child)
    }

    /// Kills process `name` (`bid-api-1`, …, `operator`) with SIGKILL: a crash, for
    /// fault tests. Returns whether it was running.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(p) = self.processes.iter_mut().find(|p| p.name == name) else {
            return false;
        };
        let running = matches!(p.child.try_wait(), Ok(None));
        let _ = p.child.kill();
        let _ = p.child.wait();
        running
    }

    /// Whether process `name` is running (it may have exited by itself).
    pub fn is_running(&mut self, name: &str) -> bool {
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Starts process `name` again with its first settings (same port) after
    /// [`LocalPlatform::kill`], and waits until it is ready.
    pub async fn restart(&mut self, name: &str) -> Result<(), PlatformError> {
        self.kill(name);
        let index = self
            .processes
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| PlatformError::Start {
                what: name.to_owned(),
                message: "no such platform process".into(),
            })?;
        let p = &self.processes[index];
        let child = self.start_child(name, &p.recipe, &p.log)?;
        let base = p.base_url.clone();
        self.processes[index].child = child;
        self.wait_ready(index, name, &base).await
    }

    /// The platform's Redis when it is one server, for fault tests (kill, restart,
    /// restart empty).
    pub fn redis(&mut self) -> Option<&mut TestRedis> {
        match &mut self.redis {
            Redis::Single(r) => Some(r),
            Redis::Cluster(_) => None,
        }
    }

    /// The platform's Redis Cluster, if it runs one.
    pub fn redis_cluster(&self) -> Option<&TestCluster> {
        match &self.redis {
            Redis::Single(_) => None,
            Redis::Cluster(c) => Some(c),
        }
    }

    /// The platform's PostgreSQL, for fault tests (stop, restart).
    pub fn postgres(&mut self) -> &mut TestPostgres {
        &mut self.postgres
    }

    /// Waits for `GET /readyz` (or `/healthz` where there is no `/readyz`) to answer 200.
    async fn wait_ready(
        &mut self,
        index: usize,
        name: &str,
        base: &str,
    ) -> Result<(), PlatformError> {
        let timeout = Duration::from_secs(60);
        let deadline = Instant::now() + timeout;
        let mut path = "/readyz";
        let mut last = String::new();
        loop {
            // Which process: bid-apis first, then the operator, in spawn order.
            if let Some(p) = self.processes.get_mut(index)
                && let Ok(Some(status)) = p.child.try_wait()
            {
                return Err(PlatformError::Start {
                    what: name.to_owned(),
                    message: format!("exited with {status}; {}", log_tail(&p.log)),
                });
            }
            match http::get(&format!("{base}{path}")).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) if r.status == 404 && path == "/readyz" => path = "/healthz",
                Ok(r) => last = format!("HTTP {} {}", r.status, r.body.trim()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                let log = self
                    .processes
                    .get(index)
                    .map(|p| log_tail(&p.log))
                    .unwrap_or_default();
                return Err(PlatformError::Start {
                    what: name.to_owned(),
                    message: format!("not ready after {timeout:?} ({last}); {log}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The variables of `.gavel/env`.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GAVEL_WS_URLS", self.ws_urls.join(",")),
            ("GAVEL_HTTP_URLS", self.http_urls.join(",")),
            ("GAVEL_DATABASE_URL", self.database_url.clone()),
            ("GAVEL_REDIS_URL", self.redis_url.clone()),
            ("GAVEL_JWT_SECRET", self.jwt_secret.clone()),
            ("GAVEL_MANIFESTS", self.manifests.display().to_string()),
            ("GAVEL_OPERATOR_URL", self.operator_url.clone()),
            ("GAVEL_LOGS", self.logs.display().to_string()),
        ]
        .into_iter()
        .chain(self.events.iter().flat_map(|(sink, secret)| {
            [
                ("GAVEL_EVENTS_SINK", sink.clone()),
                ("GAVEL_EVENTS_SECRET", secret.clone()),
            ]
        }))
        .collect()
    }

    /// Stops the bid-api and operator processes (SIGTERM, then SIGKILL after 5 s).
    pub fn stop_processes(&mut self) {
        for p in &self.processes {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.processes {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        tracing::warn!(name = %p.name, "did not stop on SIGTERM: killing");
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.processes.clear();
    }
}

impl Drop for LocalPlatform {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_has_the_contract_shape() {
        let spec = AuctionSpec::new("T", 100, 2, Duration::from_secs(5))
            .reserve(500)
            .soft_close(Duration::from_secs(3), Duration::from_millis(2500));
        let m = spec.manifest("shop", "a");
        assert_eq!(m["apiVersion"], "gavel.dev/v1alpha1");
        assert_eq!(m["metadata"]["namespace"], "shop");
        assert_eq!(m["spec"]["increments"][0]["step"], 2);
        assert_eq!(m["spec"]["softClose"]["extension"], "2500ms");
        assert_eq!(m["spec"]["reservePrice"], 500);
        assert!(m["spec"].get("startsAt").is_none());
        let yaml = spec.to_yaml("shop", "a");
        assert!(
            yaml.starts_with("apiVersion: gavel.dev/v1alpha1\nkind: Auction"),
            "{yaml}"
        );
        let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(parsed, m, "{yaml}");
        let mut spec = spec.tiers(&[(0, 1), (100, 5)]);
        spec.title = "Say \"hi\": #1".into();
        spec.starts_at = Some(0);
        spec.bid_limit = None;
        let parsed: Value = serde_yaml::from_str(&spec.to_yaml("n", "b")).unwrap();
        assert_eq!(parsed, spec.manifest("n", "b"));
    }

    #[test]
    fn names_are_unique_and_dns_safe() {
        let a = unique_name("seed");
        let b = unique_name("seed");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn status_file_candidates() {
        let [a, b] = status_paths(Path::new("/m/e2e_x.yaml"));
        assert_eq!(a, Path::new("/m/e2e_x.yaml.status.yaml"));
        assert_eq!(b, Path::new("/m/e2e_x.status.yaml"));
    }
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use std::collections::HashMap;

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
        let dir = gavel_engine::testing::temp_dir("fake-kubectl");
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
        assert!(calls.contains("  namespace: \"e2e\""), "{calls}");
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
