//! `gavel-local`: starts and stops a complete Gavel platform on this machine (what
//! `make up` and `make down` run).
//!
//! `up` starts `gavel-local run` in the background and returns once every process is
//! ready; `run` starts throw-away Redis and PostgreSQL, two bid-api processes with
//! development auth and the operator in standalone mode, writes `<dir>/env` and
//! `<dir>/local.pid`, and stops everything on SIGTERM or SIGINT; `down` signals it and
//! waits until everything is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gavel_cli::kube::ControlPlane;
use gavel_cli::local::binary_dir;
use gavel_cli::money::TypedAmount;
use gavel_cli::{AuctionSpec, LocalOptions, LocalPlatform, OperatorMode, envfile};

/// Namespace of the chart's objects (and the operator's Lease) with `--kube`.
const KUBE_NAMESPACE: &str = "gavel-system";

/// Starts and stops a complete local Gavel platform: throw-away Redis and PostgreSQL,
/// two bid-api processes (development auth: `?bidder=<name>`), and the operator in
/// standalone mode reconciling the Auction YAML files of `<dir>/manifests`.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// State folder: env file, pid file, manifests and logs.
    #[arg(long, global = true, env = "GAVEL_LOCAL_DIR", default_value = ".gavel")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the platform in the background and wait until it is ready; writes
    /// `<dir>/env` (GAVEL_WS_URLS, GAVEL_HTTP_URLS, GAVEL_DATABASE_URL, GAVEL_REDIS_URL,
    /// GAVEL_MANIFESTS, …). With GAVEL_EVENTS_SINK set (an http(s) URL), the operator
    /// delivers the event feed there, signed with GAVEL_EVENTS_SECRET (a fresh one when
    /// unset, written to the env file).
    Up {
        /// How long to wait for readiness, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// How many bid-api processes.
        #[arg(long, default_value_t = 2)]
        bid_apis: usize,
        /// Run the operator against a local Kubernetes control plane (etcd and
        /// kube-apiserver, the chart applied) instead of a manifests folder; writes
        /// `<dir>/kubeconfig`.
        #[arg(long)]
        kube: bool,
    },
    /// Stop everything `up` started.
    Down,
    /// Check each process of the platform (Redis, PostgreSQL, every bid-api, the operator,
    /// and with `--kube` the API server) and print its state and the addresses; exit 0 if
    /// every one answers, 1 if the platform is not running or any process is down (named).
    Status,
    /// Create an auction on the running platform: writes its Auction manifest into
    /// `<dir>/manifests/` (where the operator picks it up), with its times counted from
    /// now, prints it, and returns once the operator has provisioned the auction. Amounts
    /// are read like `gavel bid`'s: `1.00` in the currency, or an integer of minor units.
    New {
        /// `<namespace>/<name>` (lower-case letters, digits and `-`).
        auction: String,
        /// The lot's title.
        #[arg(long, default_value = "A lot")]
        title: String,
        /// ISO 4217 currency.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Lowest first bid.
        #[arg(long, default_value = "1.00")]
        starting_price: TypedAmount,
        /// Flat bid increment.
        #[arg(long, default_value = "0.50")]
        step: TypedAmount,
        /// Hidden reserve (none by default).
        #[arg(long)]
        reserve: Option<TypedAmount>,
        /// Open this long from now (default: as soon as the operator provisions it).
        #[arg(long, value_parser = gavel_engine::runtime::parse_duration)]
        starts_in: Option<Duration>,
        /// End this long from now (`90s`, `10m`, `2h`).
        #[arg(long, default_value = "10m", value_parser = gavel_engine::runtime::parse_duration)]
        ends_in: Duration,
        /// Soft close: a bid within this long of the end moves the end to this long after
        /// the bid (`30s`; none by default).
        #[arg(long, value_parser = gavel_engine::runtime::parse_duration)]
        soft_close: Option<Duration>,
    },
    /// Run the platform in the foreground until SIGTERM/SIGINT (what `up` starts).
    Run {
        /// How many bid-api processes.
        #[arg(long, default_value_t = 2)]
        bid_apis: usize,
        /// See `up --kube`.
        #[arg(long)]
        kube: bool,
    },
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("local.pid")
}

fn env_file(dir: &Path) -> PathBuf {
    dir.join("env")
}

/// The pid in the pid file, if that process is still a `gavel-local`.
fn running_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("gavel-local")
        .then_some(pid)
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>: check its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A variable as it may be shown on a terminal or in a log: secrets stay in the env file.
fn shown(key: &str, value: &str) -> String {
    if key.contains("SECRET") {
        format!("{key}=(hidden; in the env file)")
    } else {
        format!("{key}={value}")
    }
}

fn print_env(dir: &Path) {
    let vars = envfile::read(&env_file(dir));
    for (k, v) in &vars {
        println!("  {}", shown(k, v));
    }
}

/// How long one process may take to answer `status`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One process of the platform, as `status` found it.
struct Check {
    /// `redis`, `postgres`, `bid-api-1`, …, `operator`, `kube-apiserver`.
    name: String,
    /// Where it was asked.
    address: String,
    /// `Err(why)` when it did not answer as it should.
    state: Result<(), String>,
}

/// `host:port` of a `scheme://[user[:password]@]host:port[/…]` URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.to_owned())
}

/// Redis answers `PING` (an authentication error still means it is up).
async fn check_redis(url: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = host_port(url).ok_or_else(|| format!("not a Redis URL: {url}"))?;
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"PING\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).await.map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&reply[..n]);
    if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") {
        Ok(())
    } else {
        Err(format!("answered {:?}", reply.trim()))
    }
}

/// PostgreSQL accepts a connection and answers `SELECT 1`.
async fn check_postgres(url: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// An HTTP server answers `GET /readyz` with 200.
async fn check_ready(base: &str) -> Result<(), String> {
    let r = gavel_cli::http::get(&format!("{base}/readyz"))
        .await
        .map_err(|e| e.to_string())?;
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!("not ready: HTTP {} {}", r.status, r.body.trim()))
    }
}

/// The API server (with `--kube`) answers `/readyz`.
async fn check_kube(kubectl: &str, kubeconfig: &str) -> Result<(), String> {
    let out = tokio::process::Command::new(kubectl)
        .args(["--kubeconfig", kubeconfig, "get", "--raw", "/readyz"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {kubectl}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// One process's check, to run: `Err(why)` when it does not answer as it should.
type Probe = futures::future::BoxFuture<'static, Result<(), String>>;

/// Asks every process named in the env file, at the same time.
async fn check_processes(vars: &std::collections::BTreeMap<String, String>) -> Vec<Check> {
    let var = |k: &str| vars.get(k).cloned().unwrap_or_default();
    let mut checks: Vec<(String, String, Probe)> = Vec::new();
    let redis = var("GAVEL_REDIS_URL");
    checks.push((
        "redis".into(),
        host_port(&redis).unwrap_or_default(),
        Box::pin(async move { check_redis(&redis).await }),
    ));
    let database = var("GAVEL_DATABASE_URL");
    checks.push((
        "postgres".into(),
        host_port(&database).unwrap_or_default(),
        Box::pin(async move { check_postgres(&database).await }),
    ));
    for (i, url) in var("GAVEL_HTTP_URLS")
        .split(',')
        .filter(|u| !u.is_empty())
        .enumerate()
    {
        let url = url.to_owned();
        checks.push((
            format!("bid-api-{}", i + 1),
            url.clone(),
            Box::pin(async move { check_ready(&url).await }),
        ));
    }
    let operator = var("GAVEL_OPERATOR_URL");
    checks.push((
        "operator".into(),
        operator.clone(),
        Box::pin(async move { check_ready(&operator).await }),
    ));
    if let (Some(kubectl), Some(kubeconfig)) = (vars.get("GAVEL_KUBECTL"), vars.get("KUBECONFIG")) {
        let (kubectl, kubeconfig) = (kubectl.clone(), kubeconfig.clone());
        checks.push((
            "kube-apiserver".into(),
            kubeconfig.clone(),
            Box::pin(async move { check_kube(&kubectl, &kubeconfig).await }),
        ));
    }
    let asked = checks.into_iter().map(|(name, address, check)| async move {
        let state = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(state) => state,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        Check {
            name,
            address,
            state,
        }
    });
    futures::future::join_all(asked).await
}

/// `status`: every process checked, its state printed; an error naming the ones down.
fn status(dir: &Path) -> Result<()> {
    let pid = match running_pid(dir) {
        Some(pid) if env_file(dir).is_file() => pid,
        _ => bail!("Gavel is not running (`make up` starts it)"),
    };
    let vars = envfile::read(&env_file(dir));
    let checks = tokio::runtime::Runtime::new()?.block_on(check_processes(&vars));
    let down: Vec<&str> = checks
        .iter()
        .filter(|c| c.state.is_err())
        .map(|c| c.name.as_str())
        .collect();
    if down.is_empty() {
        println!("Gavel is up (pid {pid}); every process answers:");
    } else {
        println!("Gavel is running (pid {pid}) but not every process answers:");
    }
    for c in &checks {
        match &c.state {
            Ok(()) => println!("  {:<15} up    {}", c.name, c.address),
            Err(why) => println!("  {:<15} DOWN  {} ({why})", c.name, c.address),
        }
    }
    println!("Addresses (in {}):", env_file(dir).display());
    print_env(dir);
    if !down.is_empty() {
        bail!(
            "down: {}; its log is in {} (`make down` then `make up` starts everything again)",
            down.join(", "),
            dir.join("logs").display()
        );
    }
    Ok(())
}

/// `new`: the manifest of `auction` written into the running platform's folder.
fn new_auction(dir: &Path, auction: &str, spec: &AuctionSpec) -> Result<()> {
    let Some((namespace, name)) = auction.split_once('/') else {
        bail!("name the auction <namespace>/<name>, e.g. shop/strat-1962");
    };
    gavel_engine::AuctionId::new(namespace, name).map_err(|e| anyhow::anyhow!("{auction}: {e}"))?;
    if running_pid(dir).is_none() || !env_file(dir).is_file() {
        bail!("Gavel is not running (`make up` starts it)");
    }
    let vars = envfile::read(&env_file(dir));
    let Some(manifests) = vars.get("GAVEL_MANIFESTS") else {
        bail!(
            "this platform has no manifests folder (with `--kube`, `kubectl apply` the manifest: \
             `gavel-local new` writes files for the standalone operator)"
        );
    };
    let auction = spec.auction(namespace, name);
    // The operator's own checks, before the file is written.
    auction
        .spec
        .to_settings()
        .map_err(|e| anyhow::anyhow!("spec.{}: {}", e.field, e.message))?;
    let yaml = serde_yaml::to_string(&auction)?;
    let rt = tokio::runtime::Runtime::new()?;
    let file = rt.block_on(gavel_cli::manifest::write_manifest(
        Path::new(manifests),
        namespace,
        name,
        &yaml,
    ))?;
    println!("Created {namespace}/{name}: {}", file.display());
    print!("{yaml}");
    // Returns once the operator has provisioned it, so the next command can bid.
    let http = vars
        .get("GAVEL_HTTP_URLS")
        .and_then(|u| u.split(',').next())
        .unwrap_or_default()
        .to_owned();
    let id = format!("{namespace}/{name}");
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    let phase = rt.block_on(async {
        loop {
            let last = match gavel_cli::http::get(&format!("{http}/v1/auctions/{id}")).await {
                Ok(r) if r.status == 200 => {
                    return Ok(r.json()["phase"].as_str().unwrap_or("-").to_owned());
                }
                Ok(r) => format!("HTTP {} {}", r.status, r.body.trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "{id} was not provisioned within {timeout:?} (last answer: {last}); \
                     see {} and the operator's log",
                    status_file(&file).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    println!("{id} is {phase}: `gavel watch {id}`, `gavel bid {id} --amount … --bidder <name>`");
    Ok(())
}

/// Where the standalone operator writes the status of `file`.
fn status_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".status.yaml");
    PathBuf::from(name)
}

fn up(dir: &Path, timeout: Duration, bid_apis: usize, kube: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(pid) = running_pid(dir)
        && env_file(dir).is_file()
    {
        println!("Gavel is already up (pid {pid}); `make down` stops it.");
        print_env(dir);
        return Ok(());
    }
    let _ = std::fs::remove_file(env_file(dir));
    let log_path = dir.join("local.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .arg("--dir")
            .arg(dir)
            .arg("run")
            .arg("--bid-apis")
            .arg(bid_apis.to_string())
            .args(kube.then_some("--kube"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal of `make up` does not reach it.
            .process_group(0)
            .spawn()
            .context("cannot start `gavel-local run`")?
    };
    println!(
        "Starting Gavel locally (Redis, PostgreSQL, {bid_apis} bid-api, operator{}); log: {}",
        if kube {
            ", etcd and kube-apiserver"
        } else {
            ""
        },
        log_path.display()
    );
    let deadline = Instant::now() + timeout;
    loop {
        if env_file(dir).is_file() {
            println!(
                "Gavel is up. Addresses (also in {}):",
                env_file(dir).display()
            );
            print_env(dir);
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the local platform failed to start ({status}):\n{log}");
        }
        if Instant::now() > deadline {
            signal(child.id(), "-TERM");
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the local platform was not ready after {timeout:?}; stopped it. Log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn down(dir: &Path) -> Result<()> {
    let Some(pid) = running_pid(dir) else {
        println!(
            "Gavel is not running (no live {}).",
            pid_file(dir).display()
        );
        let _ = std::fs::remove_file(env_file(dir));
        let _ = std::fs::remove_file(pid_file(dir));
        return Ok(());
    };
    signal(pid, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > deadline {
            eprintln!("gavel-local (pid {pid}) did not stop in 30s: killing it");
            // Its watchdogs stop the children once it is gone.
            signal(pid, "-KILL");
            std::thread::sleep(Duration::from_secs(4));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(env_file(dir));
    let _ = std::fs::remove_file(pid_file(dir));
    println!("Gavel stopped.");
    Ok(())
}

async fn run(dir: &Path, bid_apis: usize, kube: bool) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(pid_file(dir), std::process::id().to_string())?;
    // A fresh platform: auctions of an earlier run would refer to data that is gone.
    let manifests = dir.join("manifests");
    if manifests.is_dir() {
        std::fs::remove_dir_all(&manifests)
            .with_context(|| format!("cannot clear {}", manifests.display()))?;
    }
    let mut opts = LocalOptions::new(binary_dir()?, dir.to_owned());
    opts.bid_apis = bid_apis;
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let started = async {
        // Declared first, dropped last: the control plane outlives the operator.
        let control_plane = if kube {
            let cp = tokio::task::block_in_place(|| ControlPlane::start(&dir.join("k8s")))?;
            let chart = cp.install_chart(KUBE_NAMESPACE, &[]).await?;
            cp.kubectl(&["create", "namespace", "shop"], None).await?;
            std::fs::copy(cp.kubeconfig(), &kubeconfig)?;
            opts.operator = OperatorMode::Kube {
                kubeconfig: chart.operator_kubeconfig,
                env: chart.operator_env,
                replicas: 1,
            };
            Some(cp)
        } else {
            None
        };
        let platform = LocalPlatform::start(opts).await?;
        anyhow::Ok((control_plane, platform))
    };
    let (control_plane, platform) = tokio::select! {
        started = started => started?,
        _ = term.recv() => bail!("stopped while starting"),
        _ = int.recv() => bail!("stopped while starting"),
    };
    let mut vars = platform.env_vars();
    if let Some(cp) = &control_plane {
        vars.retain(|(k, _)| *k != "GAVEL_MANIFESTS");
        vars.push(("KUBECONFIG", kubeconfig.display().to_string()));
        vars.push(("GAVEL_KUBECTL", cp.kubectl_program().display().to_string()));
    }
    let tmp = dir.join(".env.tmp");
    std::fs::write(&tmp, envfile::render(&vars))?;
    std::fs::rename(&tmp, env_file(dir))?;
    let vars: Vec<String> = platform
        .env_vars()
        .iter()
        .map(|(k, v)| shown(k, v))
        .collect();
    tracing::info!("platform ready: {}", vars.join(" "));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
    tracing::info!("stopping");
    let _ = std::fs::remove_file(env_file(dir));
    drop(platform);
    drop(control_plane);
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_file(pid_file(dir));
    Ok(())
}

fn main() -> std::process::ExitCode {
    gavel_cli::exit_quietly_on_closed_pipe();
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gavel-local: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<()> {
    gavel_cli::init_logging("info");
    let cli = Cli::parse();
    let dir = if cli.dir.is_absolute() {
        cli.dir
    } else {
        std::env::current_dir()?.join(cli.dir)
    };
    match cli.command {
        Cmd::Up {
            timeout,
            bid_apis,
            kube,
        } => up(&dir, Duration::from_secs(timeout), bid_apis, kube),
        Cmd::Down => down(&dir),
        Cmd::New {
            auction,
            title,
            currency,
            starting_price,
            step,
            reserve,
            starts_in,
            ends_in,
            soft_close,
        } => {
            let minor = |a: &TypedAmount| {
                a.minor_units(&currency)
                    .with_context(|| format!("the auction is in {currency}"))
            };
            let mut spec =
                AuctionSpec::new(&title, minor(&starting_price)?, minor(&step)?, ends_in);
            spec.currency = currency.clone();
            spec.reserve_price = reserve.as_ref().map(minor).transpose()?;
            spec.starts_at =
                starts_in.map(|d| gavel_cli::manifest::now_ms() + d.as_millis() as i64);
            if let Some(d) = soft_close {
                spec = spec.soft_close(d, d);
            }
            new_auction(&dir, &auction, &spec)
        }
        Cmd::Status => status(&dir),
        Cmd::Run { bid_apis, kube } => {
            tokio::runtime::Runtime::new()?.block_on(run(&dir, bid_apis, kube))
        }
    }
}
