//! Standalone (development) mode: the same [`Lifecycle`] reconcile run against a directory
//! of Auction manifests instead of a Kubernetes API server, so the platform runs and is
//! tested end to end on a machine with no cluster.
//!
//! - Every `*.yaml` / `*.yml` file of the directory (not hidden, not `*.status.yaml`)
//!   holds one Auction. Its namespace defaults to `default`.
//! - The directory is polled: its own modification time at every poll, every file's every
//!   tenth poll or when the directory changed (a file created, removed or
//!   renamed); a file whose modification time and length did not change is not read again,
//!   and a status write is not a change. A changed file is reconciled at once, and every auction
//!   again when its plan asks (start, effective end) or when it changed in Redis (bids, a
//!   halt, lost data: [`gavel_engine::changes`]), at most once per `--status-refresh`.
//!   An open auction nobody bids on costs nothing until its end.
//! - Up to `--reconcile-concurrency` auctions are reconciled at the same time (auctions
//!   ending together close together).
//! - The status is written beside each file as `<file>.status.yaml` (atomically: a
//!   temporary file renamed over it), and with `--status-stdout` also printed to stdout.
//! - Removing a file deletes the auction: it is cancelled if still open, its last bids
//!   are flushed, its live Redis state removed (PostgreSQL records stay), and its status
//!   file removed. So does a file that now names another auction, for the one it named.
//! - What the operator provisioned from the folder is kept in the hidden file
//!   [`LEDGER_FILE`] (auction → file and last spec). On start, and after every scan, an
//!   auction of that list that no file names any more is deleted as above: a file removed
//!   while no operator ran does not leave its auction open and taking bids.
//! - A failed reconcile is retried with per-auction exponential backoff and jitter,
//!   capped, reset by a success ([`crate::backoff`]); the status says which attempt failed
//!   and when the next one is.
//! - A file that does not parse gets a status with phase Failed and a message; the auction
//!   it described before (if any) keeps its schedule.
//! - Events are log lines (target `gavel_operator::events`).
//!
//! Several standalone operators on the same directory are safe (the close is atomic and
//! idempotent in Redis); they are not coordinated otherwise.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::collections::BTreeMap;

use gavel_crds::{Auction, AuctionStatus, Phase};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, info, warn};

use gavel_engine::changes::{ChangeFeed, Changed};

use crate::backoff::Backoffs;
use crate::lifecycle::{
    Lifecycle, LifecycleError, auction_id, local_now, reconcile_span, recorded_in,
};
use crate::metrics::Metrics;
use crate::status::{self, ConditionType, Failure, Reason, Severity};

/// Suffix of the status files.
pub const STATUS_SUFFIX: &str = ".status.yaml";

/// Files modified this recently are read on every scan, whatever their modification time.
const RECENT: Duration = Duration::from_secs(1);

/// A directory whose own modification time did not change is listed in full only every
/// this many polls (to notice files rewritten in place); at rest a poll costs one `stat`.
const FULL_SCAN_POLLS: u32 = 10;

/// Due again after this long if a reconcile task never reports back (it panicked).
const ERROR_RETRY: Duration = Duration::from_secs(1);

/// How long a stopping operator waits for the reconciles under way.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What woke the loop up.
enum Woke {
    Timer,
    Changed(Changed),
    Done(Box<Result<(tokio::task::Id, Done), tokio::task::JoinError>>),
}

/// The hidden file, in the manifests folder, listing what the operator provisioned from it.
pub const LEDGER_FILE: &str = ".gavel-provisioned.yaml";

/// One auction the operator provisioned from the folder: the file it came from and the
/// last spec read there (what a deletion needs once the file is gone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Held {
    /// The manifest's file name in the folder.
    file: String,
    /// The Auction as last read from it.
    auction: Auction,
}

/// Every auction provisioned from the folder, by `namespace/name`.
type Ledger = BTreeMap<String, Held>;

/// A file's modification time and length.
type Stamp = (SystemTime, u64);

/// When this operator last changed the directory itself (a status file or the ledger
/// written or removed). A directory whose modification time is not later changed because
/// of those writes only (as far as it can tell): it is not listed again for them, so a
/// close storm's thousands of status writes do not make every poll list every file.
/// Someone else's change made in the same instant is noticed by the next full listing
/// (within ten polls).
#[derive(Default)]
struct OwnWrites(std::sync::Mutex<Option<SystemTime>>);

impl OwnWrites {
    /// Notes a change of the directory just made by this operator.
    fn mark(&self) {
        let now = SystemTime::now();
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|l| l < now) {
            *last = Some(now);
        }
    }

    fn last(&self) -> Option<SystemTime> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One manifest file and what the operator knows of it.
#[derive(Default)]
struct Entry {
    /// The file's text as last read.
    text: String,
    /// Modification time and length when last read: an unchanged file is not read again.
    stamp: Option<Stamp>,
    /// The last Auction that parsed.
    auction: Option<Auction>,
    /// Why the current text does not parse.
    parse_error: Option<String>,
    /// Bumped on each change of the spec (stands in for metadata.generation).
    generation: i64,
    /// The status as last written.
    status: Option<AuctionStatus>,
    /// When to reconcile again (`None`: only when the file changes).
    due: Option<Instant>,
    /// The file is gone: deletion under way.
    deleting: bool,
    /// A reconcile of it is under way.
    running: bool,
    /// For an auction whose file is gone (or names another auction now): that file's name
    /// (its status file is removed with the auction, unless the file is back).
    orphan_of: Option<String>,
}

/// The directory-driven operator.
pub struct Standalone {
    dir: PathBuf,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    poll: Duration,
    stdout: bool,
    entries: HashMap<PathBuf, Entry>,
    /// Limits the reconciles running at the same time to `--reconcile-concurrency`.
    permits: Arc<Semaphore>,
    /// The reconciles under way, each in a task of its own, writing its status file.
    running: JoinSet<Done>,
    /// The manifest of each reconcile under way: never two at a time for one auction.
    in_flight: HashMap<tokio::task::Id, PathBuf>,
    feed: Option<ChangeFeed>,
    feed_tried: Option<Instant>,
    backoffs: Backoffs,
    /// The ledger as last written (`None` until read at the first scan).
    ledger: Option<Ledger>,
    /// The entries changed in a way the ledger may not hold yet (an auction read, changed
    /// or forgotten): orphans are looked for and the ledger rebuilt only then, not at
    /// every scan (with 10,000 auctions that cloned and compared them all every `--poll`).
    ledger_dirty: bool,
    /// Auctions deleted and forgotten since the ledger was last written: the ledger still
    /// lists them until then, and they must not be adopted as orphans again (which deleted
    /// every removed auction again at every scan, for ever).
    forgotten: HashSet<String>,
    /// The directory's modification time at the last full listing.
    dir_stamp: Option<SystemTime>,
    /// When the directory was last listed in full.
    full_scan: Option<Instant>,
    /// The last listing read a file (new, changed or recent): list again at the next poll.
    relist: bool,
    /// This operator's own last change of the directory.
    own: Arc<OwnWrites>,
}

/// A finished reconcile, back from its task.
struct Done {
    job: Job,
    result: Result<crate::lifecycle::Outcome, crate::lifecycle::LifecycleError>,
    took: Duration,
    /// The status the task wrote (or found already written).
    written: Option<AuctionStatus>,
}

/// Default number of auctions reconciled at the same time.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How often starting the change feed is retried while Redis cannot be reached.
const FEED_RETRY: Duration = Duration::from_secs(2);

/// One reconcile to run: what it needs, taken from its entry.
struct Job {
    path: PathBuf,
    auction: Auction,
    deleting: bool,
    key: String,
    /// Why the current text of the file does not parse (the last valid one is used).
    parse_error: Option<String>,
    generation: i64,
    /// The entry's `due` while the reconcile runs: anything earlier at its end means the
    /// auction changed meanwhile and is due again at once.
    watchdog: Instant,
}

/// The path of the status file of manifest `path`.
pub fn status_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(STATUS_SUFFIX);
    PathBuf::from(name)
}

/// Parses one manifest into an Auction, with a message a person can act on: unknown
/// fields are refused with their path and the nearest known name, type errors name their
/// path (see [`gavel_crds::manifest`]).
pub fn parse_manifest(text: &str) -> Result<Auction, String> {
    let mut auction = gavel_crds::manifest::from_yaml(text).map_err(|e| e.to_string())?;
    if auction.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err("metadata.name is required".into());
    }
    if auction.metadata.namespace.is_none() {
        auction.metadata.namespace = Some("default".into());
    }
    auction.status = None;
    Ok(auction)
}

fn is_manifest(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && !name.ends_with(STATUS_SUFFIX)
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

impl Standalone {
    /// An operator over `dir`, scanning it every `poll`.
    pub fn new(
        dir: PathBuf,
        lifecycle: Lifecycle,
        metrics: Arc<Metrics>,
        poll: Duration,
        stdout: bool,
    ) -> Self {
        metrics.leader.set(1);
        let backoffs = metrics.backoffs(lifecycle.timing().retry);
        Self {
            dir,
            lifecycle,
            metrics,
            backoffs,
            ledger: None,
            ledger_dirty: true,
            forgotten: HashSet::new(),
            dir_stamp: None,
            full_scan: None,
            relist: true,
            own: Arc::default(),
            poll,
            stdout,
            entries: HashMap::new(),
            permits: Arc::new(Semaphore::new(DEFAULT_CONCURRENCY)),
            running: JoinSet::new(),
            in_flight: HashMap::new(),
            feed: None,
            feed_tried: None,
        }
    }

    /// Reconciles up to `n` auctions at the same time (at least 1), so that many auctions
    /// ending together close together.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.permits = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// Starts the change feed if it is not running (retried every [`FEED_RETRY`]); once it
    /// runs, every auction is looked at again, since changes may have been missed.
    async fn ensure_feed(&mut self) {
        if self.feed.is_some() || self.feed_tried.is_some_and(|t| t.elapsed() < FEED_RETRY) {
            return;
        }
        self.feed_tried = Some(Instant::now());
        let every = self.lifecycle.timing().refresh;
        match ChangeFeed::start(self.lifecycle.engine(), every).await {
            Ok(feed) => {
                self.feed = Some(feed);
                self.apply_changes(&Changed {
                    all: true,
                    ..Changed::default()
                });
            }
            Err(e) => warn!(error = %e, "cannot follow changes in Redis yet; retrying"),
        }
    }

    /// Makes the auctions that changed in Redis due now (open ones: a closed and recorded
    /// auction has nothing left to learn from Redis).
    fn apply_changes(&mut self, changed: &Changed) {
        let now = Instant::now();
        for entry in self.entries.values_mut() {
            if entry.deleting || recorded_in(entry.status.as_ref()) {
                continue;
            }
            let Some(auction) = &entry.auction else {
                continue;
            };
            if changed.all || auction_id(auction).is_ok_and(|id| changed.auctions.contains(&id)) {
                entry.due = Some(entry.due.map_or(now, |d| d.min(now)));
            }
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        info!(dir = %self.dir.display(), "standalone mode: reconciling the Auction manifests of a directory (development mode)");
        tokio::pin!(shutdown);
        // A directory that cannot be read at start is a configuration error; later the
        // operator keeps going (and keeps closing what it knows) until it is back.
        self.ensure_feed().await;
        self.tick().await?;
        let mut scanned = Instant::now();
        loop {
            self.ensure_feed().await;
            let now = Instant::now();
            let next = self
                .entries
                .values()
                .filter(|e| !e.running)
                .filter_map(|e| e.due)
                .min()
                .map_or(self.poll, |due| due.saturating_duration_since(now))
                .min(self.poll.saturating_sub(scanned.elapsed()));
            let woke = {
                let feed = self.feed.as_ref();
                let changes = async move {
                    match feed {
                        Some(feed) => feed.changed().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut shutdown => {
                        self.stop().await;
                        return Ok(());
                    }
                    _ = tokio::time::sleep(next) => Woke::Timer,
                    changed = changes => Woke::Changed(changed),
                    Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => Woke::Done(Box::new(done)),
                }
            };
            match woke {
                Woke::Timer => {}
                Woke::Changed(changed) => self.apply_changes(&changed),
                Woke::Done(done) => {
                    self.done(*done).await;
                    // Collect the others that finished too before scanning again.
                    while let Some(done) = self.running.try_join_next_with_id() {
                        self.done(done).await;
                    }
                }
            }
            // The directory is scanned every `poll`, not on every finished reconcile.
            if scanned.elapsed() >= self.poll {
                scanned = Instant::now();
                if let Err(e) = self.scan().await {
                    warn!(error = %e, "cannot scan the directory; retrying");
                }
            }
            self.reconcile_due().await;
        }
    }

    /// One pass: scan the directory, then start a reconcile of every entry that changed or
    /// is due.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        self.scan().await?;
        self.reconcile_due().await;
        Ok(())
    }

    /// Starts a reconcile for every entry that is due and not under way; each runs in a
    /// task of its own (at most `--reconcile-concurrency` at once) and writes its own
    /// status file, so the auctions ending together close together and the loop goes on
    /// scanning and starting others meanwhile.
    async fn reconcile_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.running && e.due.is_some_and(|d| d <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            let Some(job) = self.prepare(&path).await else {
                continue;
            };
            let lifecycle = self.lifecycle.clone();
            let permits = self.permits.clone();
            let metrics = self.metrics.clone();
            let stdout = self.stdout;
            let own = self.own.clone();
            let span = reconcile_span(&job.auction, job.deleting);
            let task = self.running.spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    let started = Instant::now();
                    let result = lifecycle.reconcile(&job.auction, job.deleting).await;
                    let took = started.elapsed();
                    let written = match &result {
                        Ok(outcome) if !outcome.released && !job.deleting => {
                            let status = with_parse_error(outcome.status.clone(), &job);
                            metrics.set_phase(&job.key, status.phase);
                            write_status(
                                &job.path,
                                job.auction.status.as_ref(),
                                status,
                                stdout,
                                &own,
                            )
                            .await
                        }
                        _ => None,
                    };
                    Done {
                        job,
                        result,
                        took,
                        written,
                    }
                }
                .instrument(span),
            );
            if let Some(entry) = self.entries.get_mut(&path) {
                entry.running = true;
            }
            self.in_flight.insert(task.id(), path);
        }
    }

    /// Waits (a few seconds at most) for the reconciles under way, so their statuses are
    /// written before the process exits.
    async fn stop(&mut self) {
        let all = async { while self.running.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_WAIT, all).await.is_err() {
            warn!("stopping with reconciles still under way; they are retried on the next start");
        }
    }

    /// Takes back a finished reconcile task.
    async fn done(&mut self, done: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        match done {
            Ok((id, done)) => {
                self.settled(id);
                self.finish(done).await;
            }
            // A panicked task: its entry is due again after ERROR_RETRY (set by `prepare`).
            Err(e) => {
                warn!(error = %e, "a reconcile task failed; retrying");
                self.settled(e.id());
            }
        }
    }

    /// Marks the entry of task `id` as no longer under way.
    fn settled(&mut self, id: tokio::task::Id) {
        if let Some(path) = self.in_flight.remove(&id)
            && let Some(entry) = self.entries.get_mut(&path)
        {
            entry.running = false;
        }
    }

    async fn scan(&mut self) -> anyhow::Result<()> {
        if self.ledger.is_none() {
            self.ledger = Some(read_ledger(&self.dir).await);
        }
        // One blocking task lists the directory and stats every manifest (thousands of
        // files cost a few system calls each, not a task each) — only when the directory
        // changed (a file created, removed or renamed) or every FULL_SCAN_POLLS polls (a
        // file rewritten in place changes its own time, not the directory's).
        let dir = self.dir.clone();
        let last = self.dir_stamp.filter(|_| {
            !self.relist
                && self
                    .full_scan
                    .is_some_and(|t| t.elapsed() < self.poll * FULL_SCAN_POLLS)
        });
        let own = self.own.last();
        let listing = tokio::task::spawn_blocking(move || {
            let stamp = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
            // A change within the clock's granularity could leave the same time: a
            // directory modified in the last second is listed again.
            let quiet = stamp.is_some_and(|m| m.elapsed().is_ok_and(|age| age > RECENT));
            // Changed by this operator's own writes only.
            let ours = stamp.is_some_and(|m| own.is_some_and(|own| m <= own));
            if last.is_some() && ((quiet && stamp == last) || ours) {
                return Ok((stamp, None));
            }
            list_manifests(&dir).map(|listing| (stamp, Some(listing)))
        })
        .await
        .map_err(|e| anyhow::anyhow!("directory scan failed: {e}"))?
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.dir.display()))?;
        let listing = match listing {
            (_, None) => {
                self.settle_ledger().await;
                return Ok(());
            }
            (stamp, Some(listing)) => {
                self.dir_stamp = stamp;
                self.full_scan = Some(Instant::now());
                self.relist = false;
                listing
            }
        };
        let mut seen = HashSet::new();
        for (path, stamp) in listing {
            if let (Some(entry), Some((modified, _))) = (self.entries.get(&path), stamp)
                && !entry.deleting
                && entry.stamp == stamp
                // A write within the clock's granularity could leave the same time: files
                // modified in the last second are read again.
                && modified.elapsed().is_ok_and(|age| age > RECENT)
            {
                seen.insert(path);
                continue;
            }
            // Read now: listed again at the next poll too, until it is a second old.
            self.relist = true;
            let Ok(text) = tokio::fs::read_to_string(&path).await else {
                continue; // removed or unreadable right now; the next scan decides
            };
            seen.insert(path.clone());
            let is_new = !self.entries.contains_key(&path);
            let entry = self.entries.entry(path.clone()).or_default();
            if is_new {
                // Continue the generations of a status written by an earlier run, so the
                // first reconcile of this run provisions again (idempotent) and picks up
                // edits made while no operator was running.
                entry.status = read_status(&path).await;
                entry.generation = entry
                    .status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .unwrap_or(0);
            }
            let unchanged = !is_new && entry.text == text && !entry.deleting;
            entry.stamp = stamp;
            if unchanged {
                continue;
            }
            entry.deleting = false;
            entry.text = text;
            entry.due = Some(Instant::now());
            match parse_manifest(&entry.text) {
                Ok(auction) => {
                    let changed = entry.auction.as_ref().is_none_or(|a| {
                        a.spec != auction.spec || a.metadata.name != auction.metadata.name
                    });
                    if changed {
                        entry.generation += 1;
                    }
                    if entry.auction.as_ref() != Some(&auction) {
                        self.ledger_dirty = true;
                    }
                    entry.auction = Some(auction);
                    entry.parse_error = None;
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "manifest does not parse");
                    entry.parse_error = Some(e);
                }
            }
        }
        for (path, entry) in &mut self.entries {
            if !seen.contains(path) && !entry.deleting {
                info!(file = %path.display(), "manifest removed: deleting the auction");
                entry.deleting = true;
                entry.due = Some(Instant::now());
            }
        }
        self.settle_ledger().await;
        Ok(())
    }

    /// Looks for orphans and writes the ledger, if the entries changed since.
    async fn settle_ledger(&mut self) {
        if self.ledger_dirty {
            self.adopt_orphans();
            self.save_ledger().await;
        }
    }

    /// Every auction of the ledger that no file names any more (its file was removed while
    /// no operator ran, or names another auction now) becomes an entry of its own, to be
    /// deleted.
    fn adopt_orphans(&mut self) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        let claimed: HashSet<String> = self
            .entries
            .values()
            .filter(|e| e.orphan_of.is_none())
            .filter_map(|e| e.auction.as_ref())
            .map(auction_key)
            .collect();
        // A file names the auction again: it is no orphan any more.
        self.entries.retain(|_, e| {
            e.orphan_of.is_none()
                || e.auction
                    .as_ref()
                    .is_none_or(|a| !claimed.contains(&auction_key(a)))
        });
        let adopted: HashSet<String> = self
            .entries
            .values()
            .filter(|e| e.orphan_of.is_some())
            .filter_map(|e| e.auction.as_ref())
            .map(auction_key)
            .collect();
        for (key, held) in ledger {
            if claimed.contains(key) || adopted.contains(key) || self.forgotten.contains(key) {
                continue;
            }
            info!(
                auction = %key,
                file = %held.file,
                "the file this auction was provisioned from is gone or names another auction: deleting the auction"
            );
            let mut auction = held.auction.clone();
            auction.status = None;
            self.entries.insert(
                self.dir.join(format!(".orphan:{key}")),
                Entry {
                    auction: Some(auction),
                    deleting: true,
                    due: Some(Instant::now()),
                    orphan_of: Some(held.file.clone()),
                    ..Entry::default()
                },
            );
        }
    }

    /// Writes the ledger if what the entries hold changed since it was last written.
    async fn save_ledger(&mut self) {
        let ledger: Ledger = self
            .entries
            .iter()
            .filter_map(|(path, entry)| {
                let auction = entry.auction.as_ref()?;
                let file = match &entry.orphan_of {
                    Some(file) => file.clone(),
                    None => path.file_name()?.to_string_lossy().into_owned(),
                };
                let mut auction = auction.clone();
                auction.status = None;
                Some((auction_key(&auction), Held { file, auction }))
            })
            .collect();
        if self.ledger.as_ref() == Some(&ledger) {
            self.ledger_dirty = false;
            self.forgotten.clear();
            return;
        }
        let text = match serde_yaml::to_string(&ledger) {
            Ok(yaml) => format!(
                "# Written by gavel-operator --standalone: the auctions provisioned from this \
                 folder, so that one whose file is removed while no operator runs is still \
                 deleted. Do not edit.\n{yaml}"
            ),
            Err(e) => {
                warn!(error = %e, "cannot serialise the ledger");
                return;
            }
        };
        let written = write_atomically(&self.dir.join(LEDGER_FILE), &text).await;
        self.own.mark();
        match written {
            Ok(()) => {
                self.ledger = Some(ledger);
                self.ledger_dirty = false;
                self.forgotten.clear();
            }
            Err(e) => warn!(error = %e, "cannot write {LEDGER_FILE}; retrying at the next scan"),
        }
    }

    /// What the reconcile of `path` needs, or `None` when there is nothing to reconcile
    /// (a file that never parsed: its status is written here).
    async fn prepare(&mut self, path: &Path) -> Option<Job> {
        let entry = self.entries.get_mut(path)?;
        // Due again when the reconcile says (or after ERROR_RETRY if it never finishes).
        let watchdog = Instant::now() + ERROR_RETRY;
        entry.due = Some(watchdog);
        let Some(mut auction) = entry.auction.clone() else {
            // Never parsed: nothing was provisioned.
            entry.due = None;
            if entry.deleting {
                self.forget(path).await;
            } else if let Some(error) = entry.parse_error.clone() {
                let status = failed_status(entry.status.as_ref(), &error);
                self.write_status(path, status).await;
            }
            return None;
        };
        auction.metadata.generation = Some(entry.generation);
        auction.status = entry.status.clone();
        let key = auction_key(&auction);
        Some(Job {
            path: path.to_owned(),
            auction,
            deleting: entry.deleting,
            key,
            parse_error: entry.parse_error.clone(),
            generation: entry.generation,
            watchdog,
        })
    }

    /// Applies a finished reconcile to its entry: when to come back, events, and (for a
    /// failure) the status saying why.
    async fn finish(&mut self, done: Done) {
        let Done {
            job,
            result,
            took,
            written,
        } = done;
        let path = job.path.as_path();
        let Some(entry) = self.entries.get_mut(path) else {
            return;
        };
        self.metrics
            .reconciled(took, result.as_ref().err().map(LifecycleError::kind));
        if result.is_ok() {
            self.backoffs.reset(&job.key);
        }
        if written.is_some() {
            entry.status = written;
        }
        // Changed while the reconcile ran (file edited or removed, or news from Redis):
        // due again at once, whatever the reconcile asked.
        let changed = entry.due.is_some_and(|d| d < job.watchdog);
        let now = Instant::now();
        match result {
            Ok(outcome) if outcome.released => {
                for note in &outcome.events {
                    log_event(&job.key, note);
                }
                if changed && !entry.deleting {
                    // Re-created while its deletion finished: a new auction.
                    entry.status = None;
                    entry.due = Some(now);
                } else {
                    self.forget(path).await;
                }
            }
            Ok(outcome) => {
                entry.due = outcome.requeue.map(|d| now + d);
                if job.deleting && entry.due.is_none() {
                    entry.due = Some(now + ERROR_RETRY);
                }
                if changed {
                    entry.due = Some(now);
                }
                for note in &outcome.events {
                    log_event(&job.key, note);
                }
            }
            Err(e) => {
                let delay = self.backoffs.fail(&job.key);
                warn!(
                    auction = %job.key,
                    error = %e,
                    attempt = delay.attempt,
                    retry_in_ms = u64::try_from(delay.wait.as_millis()).unwrap_or(u64::MAX),
                    "reconcile failed; retrying"
                );
                entry.due = Some(if changed { now } else { now + delay.wait });
                let failure = Failure {
                    message: e.to_string(),
                    redis: e.is_redis(),
                    attempt: delay.attempt,
                    retry_in: delay.wait,
                };
                let status = status::unavailable(
                    entry.status.as_ref(),
                    &failure,
                    local_now(),
                    Some(entry.generation),
                );
                if !job.deleting {
                    let old = entry.status.clone();
                    if let Some(status) =
                        write_status(path, old.as_ref(), status, self.stdout, &self.own).await
                    {
                        entry.status = Some(status);
                    }
                }
            }
        }
    }

    async fn forget(&mut self, path: &Path) {
        let Some(entry) = self.entries.remove(path) else {
            return;
        };
        self.ledger_dirty = true;
        if let Some(a) = &entry.auction {
            let key = auction_key(a);
            // Gone: not an orphan to adopt again from the ledger not yet rewritten.
            self.forgotten.insert(key.clone());
            self.metrics.set_phase(&key, None);
            self.backoffs.reset(&key);
        }
        let status_file = match &entry.orphan_of {
            // The file's status file, unless the file is there (naming another auction,
            // whose status it holds now).
            Some(file) => Some(self.dir.join(file))
                .filter(|f| !f.exists())
                .map(|f| status_path(&f)),
            None => Some(status_path(path)),
        };
        if let Some(status_file) = status_file {
            let _ = tokio::fs::remove_file(status_file).await;
            self.own.mark();
        }
        // The ledger is written at the next scan (within `--poll`), once for every auction
        // forgotten meanwhile, not once each: a storm of removals would write the whole
        // ledger a thousand times. Should the process stop before, the next start deletes
        // these auctions again, which changes nothing.
    }

    /// Writes the status of the entry of `path` (no reconcile of it under way).
    async fn write_status(&mut self, path: &Path, status: AuctionStatus) {
        let Some(entry) = self.entries.get_mut(path) else {
            return;
        };
        if let Some(status) =
            write_status(path, entry.status.as_ref(), status, self.stdout, &self.own).await
        {
            entry.status = Some(status);
        }
    }
}

/// `status` with the manifest's parse error, if its current text does not parse.
fn with_parse_error(mut status: AuctionStatus, job: &Job) -> AuctionStatus {
    if let Some(error) = &job.parse_error {
        status::set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            false,
            Reason::InvalidManifest,
            &format!("{error}; the auction keeps its last valid settings"),
            local_now(),
            Some(job.generation),
        );
    }
    status
}

/// Writes `status` beside manifest `path` unless it says what `old` said and the file is
/// there; returns the status now on disk when it wrote it.
async fn write_status(
    path: &Path,
    old: Option<&AuctionStatus>,
    status: AuctionStatus,
    stdout: bool,
    own: &OwnWrites,
) -> Option<AuctionStatus> {
    if !status::differs(old, &status) && status_file_exists(path) {
        return None;
    }
    let yaml = match serde_yaml::to_string(&status) {
        Ok(y) => y,
        Err(e) => {
            warn!(error = %e, "cannot serialise a status");
            return None;
        }
    };
    if stdout {
        println!("---\n# {}\n{yaml}", path.display());
    }
    let written = write_atomically(&status_path(path), &yaml).await;
    own.mark();
    if let Err(e) = written {
        warn!(file = %path.display(), error = %e, "cannot write the status file");
    }
    Some(status)
}

/// Every manifest of `dir` with its modification time and length (`None` when unknown).
fn list_manifests(dir: &Path) -> std::io::Result<Vec<(PathBuf, Option<Stamp>)>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if !is_manifest(&path) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // removed right now; the next scan decides
        };
        out.push((path, meta.modified().ok().map(|m| (m, meta.len()))));
    }
    Ok(out)
}

fn status_file_exists(path: &Path) -> bool {
    status_path(path).is_file()
}

fn failed_status(old: Option<&AuctionStatus>, error: &str) -> AuctionStatus {
    let mut s = AuctionStatus {
        phase: Some(Phase::Failed),
        conditions: old.map(|o| o.conditions.clone()).unwrap_or_default(),
        ..AuctionStatus::default()
    };
    status::set_condition(
        &mut s.conditions,
        ConditionType::Ready,
        false,
        Reason::InvalidManifest,
        &format!("{error}; fix the file (it is read again on every change)"),
        local_now(),
        None,
    );
    s
}

async fn read_status(path: &Path) -> Option<AuctionStatus> {
    let text = tokio::fs::read_to_string(status_path(path)).await.ok()?;
    serde_yaml::from_str(&text).ok()
}

/// Writes `text` to a temporary file renamed over `path`, so a reader sees the old text or
/// the new one, never a part. One blocking task for the whole write (not one per system
/// call: a close storm writes a thousand status files).
async fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let (path, text) = (path.to_owned(), text.to_owned());
    tokio::task::spawn_blocking(move || {
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `namespace/name` of an Auction read from a file (its namespace defaulted).
fn auction_key(auction: &Auction) -> String {
    format!(
        "{}/{}",
        auction.metadata.namespace.as_deref().unwrap_or("default"),
        auction.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The ledger of `dir` (empty when there is none or it does not parse: nothing is
/// deleted then, and it is written again from what the folder holds).
async fn read_ledger(dir: &Path) -> Ledger {
    let path = dir.join(LEDGER_FILE);
    let Ok(text) = tokio::fs::read_to_string(&path).await else {
        return Ledger::new();
    };
    serde_yaml::from_str(&text).unwrap_or_else(|e| {
        warn!(file = %path.display(), error = %e, "cannot read the ledger; starting a new one");
        Ledger::new()
    })
}

fn log_event(auction: &str, note: &status::Note) {
    match note.severity {
        Severity::Normal => info!(
            target: "gavel_operator::events",
            auction,
            reason = %note.reason,
            action = %note.action,
            "{}",
            note.message
        ),
        Severity::Warning => warn!(
            target: "gavel_operator::events",
            auction,
            reason = %note.reason,
            action = %note.action,
            "{}",
            note.message
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_status_files() {
        assert!(is_manifest(Path::new("/d/a.yaml")));
        assert!(is_manifest(Path::new("/d/a.yml")));
        assert!(!is_manifest(Path::new("/d/a.yaml.status.yaml")));
        assert!(!is_manifest(Path::new("/d/.a.yaml")));
        assert!(!is_manifest(Path::new("/d/a.json")));
        assert_eq!(
            status_path(Path::new("/d/a.yaml")),
            PathBuf::from("/d/a.yaml.status.yaml")
        );
    }

    #[test]
    fn bad_manifests_get_actionable_messages() {
        for (text, expected) in [
            ("{", "not valid YAML"),
            (
                "apiVersion: v1\nkind: Pod\n",
                "expected apiVersion gavel.dev/v1alpha1",
            ),
            (
                "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata: {name: a}\nspec: {title: x}\n",
                "not a valid Auction",
            ),
            (
                "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata: {}\nspec: {title: x, currency: USD, startingPrice: 1, increments: [], endsAt: x}\n",
                "metadata.name is required",
            ),
            (
                "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata: {name: a}\nspec: {title: x, currency: USD, startingPrice: 99999999999999999999999, increments: [], endsAt: x}\n",
                "startingPrice",
            ),
        ] {
            let err = parse_manifest(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let ok = parse_manifest(
            "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata: {name: a}\nspec: {title: x, currency: USD, startingPrice: 1, increments: [{from: 0, step: 1}], endsAt: '2030-01-01T00:00:00Z'}\n",
        )
        .unwrap();
        assert_eq!(ok.metadata.namespace.as_deref(), Some("default"));
    }

    const HEAD: &str = "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata: {name: a}\nspec:\n  title: x\n  currency: USD\n  increments: [{from: 0, step: 1}]\n  endsAt: '2030-01-01T00:00:00Z'\n";

    /// #18: a typo must not silently change an auction (`reserve:` opened it with no
    /// reserve, `softclose:` with no soft close).
    #[test]
    fn unknown_fields_are_refused_with_their_path_and_the_nearest_name() {
        for (extra, expected) in [
            (
                "  startingPrice: 100\n  reserve: 50000\n",
                "unknown field `spec.reserve`, did you mean `reservePrice`?",
            ),
            (
                "  startingPrice: 100\n  softclose: {window: 60s, extension: 60s}\n",
                "unknown field `spec.softclose`, did you mean `softClose`?",
            ),
            (
                "  startingPrice: 100\n  softClose: {window: 60s, extention: 60s}\n",
                "unknown field `spec.softClose.extention`, did you mean `extension`?",
            ),
            (
                "  startingPrice: 100\n  bidLimit: {perSecond: 1, burst: 1, colour: red}\n",
                "unknown field `spec.bidLimit.colour`",
            ),
        ] {
            let err = parse_manifest(&format!("{HEAD}{extra}")).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let err = parse_manifest(
            &HEAD.replace("metadata: {name: a}", "metadata: {name: a, namspace: shop}"),
        )
        .unwrap_err();
        assert!(
            err.contains("unknown field `metadata.namspace`, did you mean `namespace`?"),
            "{err}"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let err = parse_manifest(&format!("{HEAD}  startingPrice: 100.50\n")).unwrap_err();
        assert!(
            err.contains("spec.startingPrice: invalid type: floating point `100.5`, expected i64"),
            "{err}"
        );
        let err = parse_manifest(&format!(
            "{HEAD}  startingPrice: 100\n  bidLimit: {{perSecond: fast, burst: 1}}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("spec.bidLimit.perSecond: invalid type"),
            "{err}"
        );
    }
}
