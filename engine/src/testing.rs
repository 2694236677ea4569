//! Throw-away Redis and PostgreSQL servers for the tests of every crate.
//!
//! Each server runs from the installed binaries on a free port in a temporary directory
//! and is stopped (and its directory removed) when its handle drops. A watchdog shell
//! also stops it if the test process dies without dropping the handle, so no server
//! outlives its test run. When `GAVEL_TEST_REDIS_URL` / `GAVEL_TEST_DATABASE_URL` are set,
//! [`redis_url`] and [`database_url`] use those servers instead (fault-injection tests,
//! which must stop and start their server, always start their own).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A port nothing listens on right now: for addresses that must refuse connections.
/// A server started on it may lose it to another process before it binds, so servers a
/// test starts bind port 0 and report their port (bid-api, operator: [`logged_port`]) or
/// retry on another port ([`TestRedis`], [`TestPostgres`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gavel-{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create a temporary directory");
    dir
}

/// Finds an executable on PATH or in `extra` directories; panics naming the Debian
/// package that provides it.
fn find_binary(name: &str, extra: &[PathBuf], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install the Debian package `{package}` (apt-get install {package})")
        })
}

/// Why a server a test started is not serving.
#[derive(Debug)]
enum StartError {
    /// Another process took the port first: try another one.
    PortTaken,
    /// Anything else, with the server's log.
    Failed(String),
}

/// Waits until `child` listens on `port` and its log says `ready` (so the server that
/// answers is this one, not another process that took the port).
fn wait_for_port(
    port: u16,
    child: &mut Child,
    what: &str,
    log: &Path,
    ready: &str,
) -> Result<(), StartError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("already in use") {
                return Err(StartError::PortTaken);
            }
            return Err(StartError::Failed(format!(
                "{what} exited with {status} before listening on {port}:\n{text}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(StartError::Failed(format!(
        "{what} did not listen on port {port} within 30s"
    )))
}

/// Starts a server with `start` on a free port, on another one if the port was taken
/// before the server bound it.
fn on_free_port<T>(mut start: impl FnMut(u16) -> Result<T, StartError>) -> (u16, T) {
    for _ in 0..10 {
        let port = free_port();
        match start(port) {
            Ok(server) => return (port, server),
            Err(StartError::PortTaken) => continue,
            Err(StartError::Failed(why)) => panic!("{why}"),
        }
    }
    panic!("no free port kept long enough to start a server on it");
}

/// The port a process reported in its log (`path`): the `listen` or `addr` field of the
/// first line containing `message`, in JSON or text logs. `None` until that line is
/// written. The processes of tests bind port 0 and are found this way.
pub fn logged_port(path: &Path, message: &str) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.contains(message))?;
    let address = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => ["listen", "addr"]
            .iter()
            .find_map(|k| json.get(*k)?.as_str().map(str::to_owned))?,
        Err(_) => line
            .split_whitespace()
            .find_map(|w| {
                w.strip_prefix("listen=")
                    .or_else(|| w.strip_prefix("addr="))
            })?
            .to_owned(),
    };
    address.rsplit_once(':')?.1.parse().ok()
}

/// The answer to a plain HTTP/1.1 GET.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The whole answer as text: status line, headers and body.
    pub raw: String,
}

impl HttpAnswer {
    /// The body.
    pub fn body(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// A plain HTTP/1.1 GET of `path` on `127.0.0.1:port` over a raw TCP socket, with extra
/// `headers` (tests of what a server answers, byte for byte). Fails while nothing listens.
pub async fn http_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpAnswer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(HttpAnswer { status, raw })
}

/// Runs `program` with `args` and `envs` for at most `limit` (then SIGTERM), and returns
/// everything it wrote to stdout and stderr: for tests of what a binary prints, such as
/// `--help`, or the logs of a process that waits for servers that are not there.
pub fn output_within(
    program: &str,
    args: &[&str],
    envs: &[(&str, String)],
    limit: Duration,
) -> String {
    let dir = temp_dir("output");
    let path = dir.join("output.log");
    let log = std::fs::File::create(&path).expect("cannot create a log file");
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cannot clone a log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let out = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(dir);
    out
}

/// Starts a detached shell that waits until this process is gone, then runs `commands`:
/// clean-up that must happen even when the process dies without running its destructors.
pub fn run_after_exit(commands: &str) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {commands}",
        parent = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Stops server `pid` (SIGQUIT, then SIGKILL) and removes `dir` once this process is gone.
fn watchdog(pid: u32, dir: &Path) {
    run_after_exit(&format!(
        "kill -QUIT {pid} 2>/dev/null; sleep 2; kill -9 {pid} 2>/dev/null; rm -rf '{}'",
        dir.display()
    ));
}

/// The persistence and memory settings Gavel ships for Redis (the local platform, the
/// chart's development Redis, the README's production requirements): an append-only file
/// fsynced before every reply, so a killed Redis restarts with every acknowledged bid, and
/// a memory cap with `noeviction`, so a full Redis refuses writes instead of dropping
/// auction state.
pub const DURABLE_REDIS_ARGS: [&str; 8] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--maxmemory",
    "1gb",
    "--maxmemory-policy",
    "noeviction",
];

/// A `redis-server` of this test alone.
pub struct TestRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
}

impl TestRedis {
    /// Starts a server with no persistence on a free port.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a server with Gavel's shipped persistence ([`DURABLE_REDIS_ARGS`]).
    pub fn start_durable() -> Self {
        let mut args = vec!["--save", ""];
        args.extend(DURABLE_REDIS_ARGS);
        Self::start_with(&args)
    }

    /// Starts a server with these extra arguments on a free port.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = temp_dir("redis");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (port, child) = on_free_port(|port| spawn_redis(port, &dir, &args));
        watchdog(child.id(), &dir);
        Self {
            child,
            dir,
            port,
            args,
        }
    }

    /// Starts a server with no persistence on `port`, chosen before the server starts (a
    /// process under test was told to wait for it there); panics if the port was taken.
    pub fn start_on(port: u16) -> Self {
        let dir = temp_dir("redis");
        let args: Vec<String> = ["--save", "", "--appendonly", "no"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        let child = respawn_redis(port, &dir, &args);
        watchdog(child.id(), &dir);
        Self {
            child,
            dir,
            port,
            args,
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (a crash: nothing is written on the way out).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data directory, with the same
    /// settings (after [`TestRedis::kill`]; with persistence it reloads its data).
    pub fn restart(&mut self) {
        self.kill();
        self.child = respawn_redis(self.port, &self.dir, &self.args);
        watchdog(self.child.id(), &self.dir);
    }

    /// Kills the server, deletes its data and starts it empty on the same port: Redis
    /// "lost everything" (a new node, a failover to an empty replica).
    pub fn restart_empty(&mut self) {
        self.kill();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.file_name().is_some_and(|n| n != "redis.log") {
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        self.child = respawn_redis(self.port, &self.dir, &self.args);
        watchdog(self.child.id(), &self.dir);
    }
}

/// Starts `redis-server` on a port fixed in advance (a restart, a port a process under test
/// was told), panicking if it does not start.
fn respawn_redis(port: u16, dir: &Path, args: &[String]) -> Child {
    spawn_redis(port, dir, args).unwrap_or_else(|e| panic!("redis-server did not start: {e:?}"))
}

fn spawn_redis(port: u16, dir: &Path, args: &[String]) -> Result<Child, StartError> {
    let bin = find_binary("redis-server", &[], "redis-server");
    let log = dir.join("redis.log");
    let mut child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start redis-server");
    wait_for_port(
        port,
        &mut child,
        "redis-server",
        &log,
        "Ready to accept connections",
    )?;
    Ok(child)
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of this test alone on loopback: `redis-server`s with `cluster-enabled
/// yes` joined by `redis-cli --cluster create`, with `replicas` replicas per master (for
/// failover tests). Each node runs in a temporary directory, with a watchdog like
/// [`TestRedis`]; all are stopped when the handle drops. Nodes time out after 1 s
/// (`cluster-node-timeout`), so a killed master's replica is promoted within a few
/// seconds, and the cluster keeps serving the slots it still covers
/// (`cluster-require-full-coverage no`).
pub struct TestCluster {
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

/// The arguments of every cluster node besides its port and directory.
const CLUSTER_ARGS: [&str; 10] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    "--cluster-require-full-coverage",
    "no",
    "--cluster-replica-validity-factor",
    "0",
];

impl TestCluster {
    /// Starts `masters` masters (at least 3) and `replicas` replicas of each, without
    /// persistence, and waits until every node sees the whole cluster ready.
    pub fn start(masters: usize, replicas: usize) -> Self {
        Self::start_with(masters, replicas, &["--save", "", "--appendonly", "no"])
    }

    /// [`TestCluster::start`] with Gavel's shipped persistence on every node
    /// ([`DURABLE_REDIS_ARGS`]).
    pub fn start_durable(masters: usize, replicas: usize) -> Self {
        let mut args = vec!["--save", ""];
        args.extend(DURABLE_REDIS_ARGS);
        Self::start_with(masters, replicas, &args)
    }

    /// Starts the cluster with these extra arguments on every node.
    pub fn start_with(masters: usize, replicas: usize, args: &[&str]) -> Self {
        let count = masters * (1 + replicas);
        let mut all: Vec<String> = CLUSTER_ARGS.iter().map(|a| (*a).to_owned()).collect();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let nodes: Vec<ClusterNode> = (0..count)
            .map(|_| {
                let dir = temp_dir("redis-cluster");
                let (port, child) = on_free_port(|port| spawn_redis(port, &dir, &all));
                watchdog(child.id(), &dir);
                ClusterNode {
                    child: Some(child),
                    dir,
                    port,
                }
            })
            .collect();
        let cluster = Self { nodes };
        let cli = find_binary("redis-cli", &[], "redis-tools");
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ready(masters, replicas);
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` with all slots, and
    /// sees `masters` masters with `replicas` replicas each connected.
    fn wait_ready(&self, masters: usize, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.nodes.iter().all(|n| {
                let info = cli(n.port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            }) && {
                let nodes = cli(self.nodes[0].port, &["CLUSTER", "NODES"]);
                let masters_seen = nodes.lines().filter(|l| l.contains("master")).count();
                let replicas_seen = nodes.lines().filter(|l| l.contains("slave")).count();
                masters_seen == masters && replicas_seen == masters * replicas
            } && (replicas == 0
                || self.masters().iter().all(|&port| {
                    cli(port, &["INFO", "replication"])
                        .contains(&format!("connected_slaves:{replicas}"))
                }));
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test Redis Cluster did not become ready: {}",
                cli(self.nodes[0].port, &["CLUSTER", "NODES"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cluster://127.0.0.1:<port>,…` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// Ports of every node, started or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the current masters that serve slots, as a running node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes_view()
            .into_iter()
            .filter(|(_, master, slots)| *master && !slots.is_empty())
            .map(|(port, _, _)| port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The port of the master serving `slot`, as a running node sees it.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.nodes_view()
            .into_iter()
            .find(|(_, master, slots)| {
                *master && slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|(port, _, _)| port)
    }

    /// `CLUSTER NODES` of a running node: (port, is a master that is not failed, slot ranges).
    fn nodes_view(&self) -> Vec<NodeView> {
        let Some(node) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        cli(node.port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f.get(1)?.split(['@', ',']).next()?.rsplit(':').next()?;
                let flags = f.get(2)?;
                let master = flags.contains("master") && !flags.contains("fail");
                let slots = f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|a| (a, a)),
                    })
                    .collect();
                Some((port.parse().ok()?, master, slots))
            })
            .collect()
    }

    /// The `CLUSTER KEYSLOT` of `key`, asked of a running node.
    pub fn key_slot(&self, key: &str) -> u16 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        let out = cli(node.port, &["CLUSTER", "KEYSLOT", key]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {out}"))
    }

    /// Runs a command on the node on `port` with `redis-cli`, returning its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// The process id of the node on `port`, for reading its CPU time.
    pub fn pid(&self, port: u16) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
    }

    /// Kills the node on `port` with SIGKILL (a crash); it stays down.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Moves `slot`, with its keys, to the master on port `to` (`CLUSTER SETSLOT …
    /// IMPORTING/MIGRATING`, `MIGRATE`, `CLUSTER SETSLOT … NODE` on every master), as a
    /// resharding does.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.master_of_slot(slot).expect("the slot's master");
        if from == to {
            return;
        }
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        let slot_arg = slot.to_string();
        let ok = |out: String, what: &str| assert!(out.starts_with("OK"), "{what}: {out}");
        ok(
            cli(
                to,
                &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
            ),
            "IMPORTING",
        );
        ok(
            cli(
                from,
                &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
            ),
            "MIGRATING",
        );
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(cli(from, &args), "MIGRATE");
        }
        for port in [to, from] {
            ok(
                cli(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]),
                "SETSLOT NODE",
            );
        }
        for port in self.masters() {
            let _ = cli(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.master_of_slot(slot) != Some(to) {
            assert!(
                Instant::now() < deadline,
                "slot {slot} did not move to {to}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every replica of the master on `port` has all of its writes (so that
    /// killing it loses nothing).
    pub fn wait_replicated(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = cli(port, &["INFO", "replication"]);
            let field = |line: &str, name: &str| {
                line.split(',')
                    .find_map(|kv| kv.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let master = info
                .lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            let replicas: Vec<Option<u64>> = info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .map(|l| field(l, "offset="))
                .collect();
            if master.is_some() && !replicas.is_empty() && replicas.iter().all(|o| *o == master) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas of {port} did not catch up: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `slot` is served by a master other than `old` (a replica was promoted).
    pub fn wait_failover(&self, slot: u16, old: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(port) = self.master_of_slot(slot)
                && port != old
                && cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over slot {slot} from {old}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A node as `CLUSTER NODES` shows it: port, whether it is a master not marked failed, and
/// the slot ranges it serves.
type NodeView = (u16, bool, Vec<(u16, u16)>);

/// Runs `redis-cli -p port args…` and returns its standard output.
fn cli(port: u16, args: &[&str]) -> String {
    let bin = find_binary("redis-cli", &[], "redis-tools");
    Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&node.dir);
        }
    }
}

/// A PostgreSQL cluster of this test alone (`initdb` + `postgres` in a temp dir), with
/// trust authentication for the `postgres` user. It can be stopped and started again
/// on the same port and data, for fault tests.
pub struct TestPostgres {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    postgres: PathBuf,
    run_as: Option<(u32, u32)>,
}

fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// PostgreSQL refuses to run as root: find the uid/gid of the `postgres` (or `nobody`)
/// account to run it as.
fn unprivileged_account() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
        != 0
    {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    ["postgres", "nobody"].iter().find_map(|user| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == *user)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    })
}

impl TestPostgres {
    /// Creates and starts a cluster on a free port.
    pub fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let dirs = postgres_bin_dirs();
        let initdb = find_binary("initdb", &dirs, "postgresql");
        let postgres = find_binary("postgres", &dirs, "postgresql");
        let dir = temp_dir("pg");
        let run_as = unprivileged_account();
        if let Some((uid, gid)) = run_as {
            let status = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(&dir)
                .status()
                .expect("cannot run chown");
            assert!(status.success(), "chown of {} failed", dir.display());
        }
        let mut cmd = Command::new(initdb);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("cannot run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            child: None,
            dir,
            port: 0,
            postgres,
            run_as,
        };
        let (port, ()) = on_free_port(|port| {
            pg.port = port;
            pg.try_start_server()
        });
        pg.port = port;
        pg
    }

    fn start_server(&mut self) {
        if let Err(e) = self.try_start_server() {
            panic!("postgres did not restart: {e:?}");
        }
    }

    fn try_start_server(&mut self) -> Result<(), StartError> {
        use std::os::unix::process::CommandExt;
        let log = self.dir.join("postgres.log");
        let log_file = std::fs::File::create(&log).expect("cannot create the postgres log");
        if let Some((uid, gid)) = self.run_as {
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(&log)
                .status();
        }
        let mut cmd = Command::new(&self.postgres);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().expect("cannot start postgres");
        wait_for_port(
            self.port,
            &mut child,
            "postgres",
            &log,
            "database system is ready to accept connections",
        )?;
        watchdog(child.id(), &self.dir);
        self.child = Some(child);
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server at once, as a crash would (immediate shutdown: SIGQUIT makes the
    /// postmaster kill every backend without a checkpoint), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
            // A killed postmaster leaves its children to notice; wait for the port to free.
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_file(self.dir.join("data").join("postmaster.pid"));
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis URL for one test: `GAVEL_TEST_REDIS_URL` if set, else a new [`TestRedis`]
/// (returned so that the caller keeps it alive).
pub fn redis_url() -> (String, Option<TestRedis>) {
    match std::env::var("GAVEL_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let redis = TestRedis::start();
            (redis.url(), Some(redis))
        }
    }
}

static SHARED_POSTGRES: OnceCell<(String, Option<TestPostgres>)> = OnceCell::const_new();

/// A URL of a new, empty, migrated database for one test, on `GAVEL_TEST_DATABASE_URL`'s
/// server if set, else on one [`TestPostgres`] shared by the test process.
pub async fn database_url() -> String {
    let (base, _) = SHARED_POSTGRES
        .get_or_init(|| async {
            match std::env::var("GAVEL_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => (url, None),
                _ => {
                    let pg = tokio::task::spawn_blocking(TestPostgres::start)
                        .await
                        .expect("starting postgres panicked");
                    (pg.url(), Some(pg))
                }
            }
        })
        .await;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("gavel_test_{}_{n}", std::process::id());
    create_database(base, &name).await
}

/// Creates database `name` on the server of `base_url`, migrates it, returns its URL.
pub async fn create_database(base_url: &str, name: &str) -> String {
    use sqlx::Connection;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match sqlx::PgConnection::connect(base_url).await {
            Ok(conn) => break conn,
            // "the database system is starting up" right after the port opens.
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot connect to {base_url}: {e}"),
        }
    };
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .expect("drop database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = match base_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("database URL without a database name: {base_url}"),
    };
    let store = crate::store::Store::connect_lazy(&url).expect("pool");
    store.migrate().await.expect("migrations");
    store.pool().close().await;
    url
}
