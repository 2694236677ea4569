//! Throw-away Redis and PostgreSQL servers for the local platform (`make up`, the e2e
//! scenarios, `gavel-local`).
//!
//! A user-facing tool must not stand on test helpers that panic: every start here returns
//! a [`ServerError`] naming what is missing or what the server logged. Each server runs from
//! the installed binaries on a free port in a folder of its own, stops (and its folder is
//! removed) when its handle drops, and a watchdog shell stops it if this process dies
//! without dropping the handle. The engine's `testing` feature keeps its own servers for the
//! crates' tests.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A program is not installed.
    #[error(
        "`{program}` not found: install the Debian package `{package}` (apt-get install {package})"
    )]
    NotInstalled {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: String,
    },
    /// The server did not start, with what it said.
    #[error("{0}")]
    Failed(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A port nothing listens on right now. A server started on it may lose it to another
/// process before it binds: the servers of this module retry on another port then.
pub fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ServerError::Failed(format!("no free TCP port on 127.0.0.1: {e}")))
}

/// A fresh folder under the system temp dir, unique to this process and call.
pub fn temp_dir(prefix: &str) -> Result<PathBuf, ServerError> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gavel-{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    Ok(dir)
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

/// Finds an executable on PATH or in `extra` folders.
fn find_binary(name: &str, extra: &[PathBuf], package: &str) -> Result<PathBuf, ServerError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ServerError::NotInstalled {
            program: name.to_owned(),
            package: package.to_owned(),
        })
}

/// Why one attempt to start a server failed.
enum Attempt {
    /// Another process took the port first: try another one.
    PortTaken,
    /// Anything else.
    Failed(ServerError),
}

impl From<ServerError> for Attempt {
    fn from(e: ServerError) -> Self {
        Attempt::Failed(e)
    }
}

/// Waits until `child` listens on `port` and its log says `ready` (so the server that
/// answers is this one, not another process that took the port).
fn wait_for_port(
    port: u16,
    child: &mut Child,
    what: &str,
    log: &Path,
    ready: &str,
) -> Result<(), Attempt> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("already in use") {
                return Err(Attempt::PortTaken);
            }
            return Err(Attempt::Failed(ServerError::Failed(format!(
                "{what} exited with {status} before listening on {port}:\n{text}"
            ))));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(Attempt::Failed(ServerError::Failed(format!(
        "{what} did not listen on port {port} within 30s"
    ))))
}

/// Starts a server with `start` on a free port, on another one if the port was taken
/// before the server bound it.
fn on_free_port<T>(
    mut start: impl FnMut(u16) -> Result<T, Attempt>,
) -> Result<(u16, T), ServerError> {
    for _ in 0..10 {
        let port = free_port()?;
        match start(port) {
            Ok(server) => return Ok((port, server)),
            Err(Attempt::PortTaken) => continue,
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Err(ServerError::Failed(
        "no free port kept long enough to start a server on it".into(),
    ))
}

/// The persistence and memory settings Gavel ships for Redis: an append-only file fsynced
/// before every reply, so a killed Redis restarts with every acknowledged bid, and a memory
/// cap with `noeviction`, so a full Redis refuses writes instead of dropping auction state.
pub const DURABLE_REDIS_ARGS: [&str; 10] = [
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--maxmemory",
    "1gb",
    "--maxmemory-policy",
    "noeviction",
];

fn spawn_redis(port: u16, dir: &Path, args: &[String]) -> Result<Child, Attempt> {
    let bin = find_binary("redis-server", &[], "redis-server")?;
    let log = dir.join("redis.log");
    let mut child = Command::new(&bin)
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
        .map_err(io_error(&bin))?;
    wait_for_port(
        port,
        &mut child,
        "redis-server",
        &log,
        "Ready to accept connections",
    )?;
    Ok(child)
}

/// Starts `redis-server` on a port fixed in advance (a restart).
fn respawn_redis(port: u16, dir: &Path, args: &[String]) -> Result<Child, ServerError> {
    spawn_redis(port, dir, args).map_err(|e| match e {
        Attempt::PortTaken => ServerError::Failed(format!("port {port} is taken")),
        Attempt::Failed(e) => e,
    })
}

/// One `redis-server` with Gavel's persistence ([`DURABLE_REDIS_ARGS`]).
pub struct Redis {
    child: Child,
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
}

impl Redis {
    /// Starts a server on a free port.
    pub fn start_durable() -> Result<Self, ServerError> {
        let dir = temp_dir("redis")?;
        let args: Vec<String> = DURABLE_REDIS_ARGS.iter().map(|a| (*a).to_owned()).collect();
        let (port, child) = on_free_port(|port| spawn_redis(port, &dir, &args))?;
        watchdog(child.id(), &dir);
        Ok(Self {
            child,
            dir,
            port,
            args,
        })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (a crash: nothing is written on the way out).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data (after [`Redis::kill`]; it reloads
    /// its append-only file).
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.child = respawn_redis(self.port, &self.dir, &self.args)?;
        watchdog(self.child.id(), &self.dir);
        Ok(())
    }

    /// Kills the server, deletes its data and starts it empty on the same port: Redis
    /// "lost everything" (a new node, a failover to an empty replica).
    pub fn restart_empty(&mut self) -> Result<(), ServerError> {
        self.kill();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.file_name().is_some_and(|n| n != "redis.log") {
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        self.child = respawn_redis(self.port, &self.dir, &self.args)?;
        watchdog(self.child.id(), &self.dir);
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The arguments of every cluster node besides its port, folder and persistence.
const CLUSTER_ARGS: [&str; 8] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    "--cluster-require-full-coverage",
    "no",
];

/// A Redis Cluster of masters only on loopback (`GAVEL_LOCAL_REDIS_CLUSTER=1`), each node
/// with Gavel's persistence, joined by `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<(Child, PathBuf, u16)>,
}

fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> String {
    Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl RedisCluster {
    /// Starts `masters` (at least 3) nodes and waits until every one sees all slots served.
    pub fn start_durable(masters: usize) -> Result<Self, ServerError> {
        let cli = find_binary("redis-cli", &[], "redis-tools")?;
        let mut args: Vec<String> = CLUSTER_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.extend(DURABLE_REDIS_ARGS.iter().map(|a| (*a).to_owned()));
        let mut cluster = Self { nodes: Vec::new() };
        for _ in 0..masters {
            let dir = temp_dir("redis-cluster")?;
            let (port, child) = on_free_port(|port| spawn_redis(port, &dir, &args))?;
            watchdog(child.id(), &dir);
            cluster.nodes.push((child, dir, port));
        }
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.2)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(&cli))?;
        if !out.status.success() {
            return Err(ServerError::Failed(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.nodes.iter().all(|n| {
            let info = redis_cli(&cli, n.2, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        }) {
            if Instant::now() > deadline {
                return Err(ServerError::Failed(
                    "the Redis Cluster did not become ready within 60s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// `redis-cluster://127.0.0.1:<port>,…` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.2))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (child, dir, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A PostgreSQL cluster of its own (`initdb` + `postgres` in a temp folder), with trust
/// authentication for the `postgres` user on loopback. It can be stopped and started again
/// on the same port and data (fault scenarios).
pub struct Postgres {
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

/// PostgreSQL refuses to run as root: the uid/gid of the `postgres` (or `nobody`) account
/// to run it as, when this process is root.
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

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), ServerError> {
    let status = Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .map_err(io_error(Path::new("chown")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ServerError::Failed(format!(
            "chown of {} failed",
            path.display()
        )))
    }
}

impl Postgres {
    /// Creates and starts a cluster on a free port.
    pub fn start() -> Result<Self, ServerError> {
        use std::os::unix::process::CommandExt;
        let dirs = postgres_bin_dirs();
        let initdb = find_binary("initdb", &dirs, "postgresql")?;
        let postgres = find_binary("postgres", &dirs, "postgresql")?;
        let dir = temp_dir("pg")?;
        let run_as = unprivileged_account();
        if let Some(account) = run_as {
            chown(&dir, account)?;
        }
        let mut cmd = Command::new(&initdb);
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
        let out = cmd.output().map_err(io_error(&initdb))?;
        if !out.status.success() {
            return Err(ServerError::Failed(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut pg = Self {
            child: None,
            dir,
            port: 0,
            postgres,
            run_as,
        };
        let (port, ()) = on_free_port(|port| {
            pg.port = port;
            pg.start_server()
        })?;
        pg.port = port;
        Ok(pg)
    }

    fn start_server(&mut self) -> Result<(), Attempt> {
        use std::os::unix::process::CommandExt;
        let log = self.dir.join("postgres.log");
        let log_file = std::fs::File::create(&log).map_err(io_error(&log))?;
        if let Some(account) = self.run_as {
            chown(&log, account)?;
        }
        let mut cmd = Command::new(&self.postgres);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            // A throw-away platform: no durability against a power cut is needed, speed is.
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(io_error(&self.postgres))?;
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
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.start_server().map_err(|e| match e {
            Attempt::PortTaken => ServerError::Failed(format!("port {} is taken", self.port)),
            Attempt::Failed(e) => e,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates database `name` on the server of `base_url` and migrates it (Gavel's schema);
/// returns its URL.
pub async fn create_database(base_url: &str, name: &str) -> Result<String, ServerError> {
    use sqlx::Connection;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        ServerError::Failed(format!(
            "{what} on {}: {e}",
            gavel_engine::redact::url(base_url)
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match sqlx::PgConnection::connect(base_url).await {
            Ok(conn) => break conn,
            // "the database system is starting up" right after the port opens.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(failed("cannot connect", &e)),
        }
    };
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql)
            .execute(&mut conn)
            .await
            .map_err(|e| failed(&sql, &e))?;
    }
    let url = match base_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => return Err(failed("no database name in the URL", &base_url)),
    };
    let store =
        gavel_engine::store::Store::connect_lazy(&url).map_err(|e| failed("connecting", &e))?;
    store.migrate().await.map_err(|e| failed("migrating", &e))?;
    store.pool().close().await;
    Ok(url)
}
