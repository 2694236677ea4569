//! The local platform: throw-away Redis and PostgreSQL ([`crate::servers`]), bid-api
//! processes in development auth mode and the operator (standalone on a manifests folder,
//! or replicas against a Kubernetes API server), on this machine. It backs `gavel-local`
//! (`make up`), and the e2e scenarios start it too.
//!
//! Binaries come from [`binary_dir`] (`$GAVEL_BIN_DIR`, else beside the running
//! executable); [`build_platform_binaries`] builds them with cargo for test processes,
//! which cannot depend on other crates' binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::http;
use crate::manifest::now_ms;
use crate::servers::{
    Postgres, Redis, RedisCluster, ServerError, create_database, free_port, run_after_exit,
};

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
    Client(#[from] crate::client::ClientError),
    /// Redis or PostgreSQL did not start.
    #[error(transparent)]
    Server(#[from] ServerError),
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

/// Runs `program` (a kubectl) with `args`, with `--kubeconfig` when given, `stdin` piped
/// in; its standard output, or its error output as the error.
pub async fn kubectl_with(
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
    /// A Redis (or `redis-cluster://`) URL to use instead of starting one: a server the
    /// caller runs and inspects (the e2e scenarios on a cluster).
    pub redis_url: Option<String>,
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
            redis_url: None,
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
    redis: LocalRedis,
    postgres: Postgres,
}

/// The platform's Redis: one server, or a cluster.
enum LocalRedis {
    Single(Redis),
    Cluster(RedisCluster),
    External(String),
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
        let redis = if let Some(url) = &opts.redis_url {
            LocalRedis::External(url.clone())
        } else if opts.redis_cluster {
            LocalRedis::Cluster(
                blocking("a Redis Cluster", || RedisCluster::start_durable(3)).await??,
            )
        } else {
            LocalRedis::Single(blocking("redis-server", Redis::start_durable).await??)
        };
        let redis_url = match &redis {
            LocalRedis::Single(r) => r.url(),
            LocalRedis::Cluster(c) => c.url(),
            LocalRedis::External(url) => url.clone(),
        };
        let postgres = blocking("postgres", Postgres::start).await??;
        let base = postgres.url();
        let database_url = create_database(&base, "gavel").await?;
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
            let port = free_port()?;
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
                let port = free_port()?;
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
                    let port = free_port()?;
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
    pub fn redis(&mut self) -> Option<&mut Redis> {
        match &mut self.redis {
            LocalRedis::Single(r) => Some(r),
            LocalRedis::Cluster(_) | LocalRedis::External(_) => None,
        }
    }

    /// The platform's PostgreSQL, for fault tests (stop, restart).
    pub fn postgres(&mut self) -> &mut Postgres {
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
