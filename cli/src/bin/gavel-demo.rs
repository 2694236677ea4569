//! `gavel-demo`: the scripted bidders of `make demo`, against a platform started by
//! `make up` (addresses from `.gavel/env`).
//!
//! 1. The seed example of the README's bidding rules (flat step 2): five bidders, proxy bids, the
//!    price ends at 192 with carol leading.
//! 2. A soft-close fight: two bidders keep bidding in the last seconds, each bid moves
//!    the end; the last one is a proxy bid the other cannot beat.
//!
//! A watcher prints the live feed; each bidder prints its replies and outbid notices;
//! at the end the results are read back from PostgreSQL and from the Auction status.
//! The bidder page's address of each auction is printed as it is created, to watch the
//! demo in a browser while it plays.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use gavel_cli::local::unique_name;
use gavel_cli::manifest::now_ms;
use gavel_cli::protocol::{Amount, Closed, Millis};
use gavel_cli::target::LocalTarget as Platform;
use gavel_cli::{AuctionSpec, BidReply, ClientError, ServerMessage, WsClient, envfile, feed};
use tokio::sync::{mpsc, oneshot, watch};

/// Runs Gavel's demo against the local platform of `make up`: the seed example of
/// README § Bidding rules, then a soft-close fight, with a live feed and the final results read
/// back from PostgreSQL.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The env file written by `make up`.
    #[arg(long, default_value = envfile::DEFAULT_PATH)]
    env_file: std::path::PathBuf,
    /// Pause between scripted bids, in milliseconds.
    #[arg(long, default_value_t = 700)]
    pace_ms: u64,
}

const NAMESPACE: &str = "demo";
const CURRENCY: &str = "USD";

fn say(who: &str, line: &str) {
    println!("{}  {who:>6} | {line}", feed::clock(now_ms()));
}

/// The bidder page of `id` on the first bid-api process.
fn page_url(platform: &Platform, id: &str) -> String {
    format!("{}/auctions/{id}", platform.http_url(0))
}

fn watch_in_browser(platform: &Platform, id: &str) {
    say(
        "demo",
        &format!("watch it in a browser: {}", page_url(platform, id)),
    );
}

fn header(text: &str) {
    println!("\n=== {text}\n");
}

/// A command to a bidder's task.
struct BidCmd {
    amount: Option<Amount>,
    max: Option<Amount>,
    done: oneshot::Sender<Result<BidReply, ClientError>>,
}

/// A scripted bidder: its own connection, printing its replies and outbid notices.
struct Bidder {
    name: String,
    tx: mpsc::Sender<BidCmd>,
}

impl Bidder {
    async fn join(platform: &Platform, process: usize, name: &str, auction: &str) -> Result<Self> {
        let mut client = platform.bidder(process, name).await?;
        client.subscribe(auction, Duration::from_secs(10)).await?;
        say(
            name,
            &format!(
                "joined on bid-api #{} ({})",
                process % platform.ws_urls.len().max(1) + 1,
                client.url()
            ),
        );
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(bidder_task(client, name.to_owned(), rx));
        Ok(Self {
            name: name.to_owned(),
            tx,
        })
    }

    async fn bid(&self, amount: Option<Amount>, max: Option<Amount>) -> Result<BidReply> {
        let what = match (amount, max) {
            (Some(a), Some(m)) => format!(
                "bids {} with a ceiling of {}",
                feed::money(a, CURRENCY),
                feed::money(m, CURRENCY)
            ),
            (Some(a), None) => format!("bids {}", feed::money(a, CURRENCY)),
            (None, Some(m)) => format!(
                "places a proxy bid, ceiling {} (secret)",
                feed::money(m, CURRENCY)
            ),
            (None, None) => "bids nothing".into(),
        };
        say(&self.name, &what);
        let (done, reply) = oneshot::channel();
        self.tx
            .send(BidCmd { amount, max, done })
            .await
            .map_err(|_| anyhow!("{}'s connection is gone", self.name))?;
        Ok(reply
            .await
            .map_err(|_| anyhow!("{}'s connection is gone", self.name))??)
    }
}

async fn bidder_task(mut client: WsClient, name: String, mut rx: mpsc::Receiver<BidCmd>) {
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let auction = last_auction(&client);
                let reply = client.bid(&auction, cmd.amount, cmd.max, Duration::from_secs(10)).await;
                if let Ok(r) = &reply {
                    say(&name, &feed::describe_reply(r, CURRENCY));
                }
                let _ = cmd.done.send(reply);
            }
            msg = client.next(Duration::from_secs(3600)) => match msg {
                Ok(m @ ServerMessage::Outbid(_)) => say(&name, &feed::describe(&m, CURRENCY)),
                Ok(_) | Err(ClientError::Timeout { .. }) => {}
                Err(e) => {
                    say(&name, &format!("connection lost: {e}"));
                    break;
                }
            }
        }
    }
}

/// The auction a bidder subscribed to (each demo bidder subscribes to exactly one).
fn last_auction(client: &WsClient) -> String {
    client
        .received()
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::Snapshot(s) => Some(s.auction.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// What the watcher saw, for the script.
#[derive(Clone, Debug, Default)]
struct Seen {
    price: Option<Amount>,
    leader: Option<String>,
    ends_at: Option<Millis>,
    extensions: u32,
    closed: Option<(Closed, Millis)>,
}

/// Prints the live feed of `auction` from bid-api process `process` until it closes.
async fn watcher(
    platform: &Platform,
    process: usize,
    auction: &str,
) -> Result<watch::Receiver<Seen>> {
    let mut client = platform.watcher(process).await?;
    let snapshot = client.subscribe(auction, Duration::from_secs(10)).await?;
    say(
        "feed",
        &format!(
            "watching from bid-api #{}: {}",
            process % platform.ws_urls.len().max(1) + 1,
            feed::describe(&ServerMessage::Snapshot(snapshot.clone()), CURRENCY)
        ),
    );
    let (tx, rx) = watch::channel(Seen {
        price: snapshot.price,
        leader: snapshot.leader.clone(),
        ends_at: Some(snapshot.ends_at),
        ..Seen::default()
    });
    tokio::spawn(async move {
        loop {
            let msg = match client.next(Duration::from_secs(3600)).await {
                Ok(m) => m,
                Err(ClientError::Timeout { .. }) => continue,
                Err(e) => {
                    say("feed", &format!("connection lost: {e}"));
                    return;
                }
            };
            if !msg.is_broadcast() {
                continue;
            }
            say("feed", &feed::describe(&msg, CURRENCY));
            tx.send_modify(|seen| match &msg {
                ServerMessage::Price(p) => {
                    seen.price = Some(p.price);
                    seen.leader = Some(p.leader.clone());
                    seen.ends_at = Some(p.ends_at);
                }
                ServerMessage::Extended(e) => {
                    seen.ends_at = Some(e.ends_at);
                    seen.extensions += 1;
                }
                ServerMessage::Closed(c) => seen.closed = Some((c.clone(), now_ms())),
                _ => {}
            });
            if matches!(msg, ServerMessage::Closed(_)) {
                return;
            }
        }
    });
    Ok(rx)
}

async fn wait_closed(
    seen: &mut watch::Receiver<Seen>,
    timeout: Duration,
) -> Result<(Closed, Millis)> {
    let result = tokio::time::timeout(timeout, seen.wait_for(|s| s.closed.is_some()))
        .await
        .context("the auction did not close in time")?
        .map_err(|_| anyhow!("the feed stopped before the auction closed"))?;
    result.closed.clone().ok_or_else(|| anyhow!("no close"))
}

async fn seed_example(platform: &Platform, pace: Duration) -> Result<String> {
    header(
        "1/2  The seed example of the README's bidding rules: flat step 2, proxy bids \
         (amounts are cents: the design's 100 is USD 1.00)",
    );
    let name = unique_name("strat-1962");
    let spec = AuctionSpec::new("1962 Fender Stratocaster", 100, 2, Duration::from_secs(10));
    let (id, file) = platform.create_auction(NAMESPACE, &name, &spec).await?;
    say(
        "demo",
        &format!(
            "created Auction {id}: starting price {}, step {}, ends in 10 s",
            feed::money(100, CURRENCY),
            feed::money(2, CURRENCY)
        ),
    );
    watch_in_browser(platform, &id);
    println!("\n  {}:", file.display());
    for line in std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .lines()
    {
        println!("    {line}");
    }
    println!();
    platform.wait_open(&id, Duration::from_secs(30)).await?;
    say("demo", "the operator opened it");
    let mut seen = watcher(platform, 1, &id).await?;
    let alice = Bidder::join(platform, 0, "alice", &id).await?;
    let bob = Bidder::join(platform, 1, "bob", &id).await?;
    let carol = Bidder::join(platform, 0, "carol", &id).await?;
    let dave = Bidder::join(platform, 1, "dave", &id).await?;
    let erin = Bidder::join(platform, 0, "erin", &id).await?;
    let steps: [(&Bidder, Option<Amount>, Option<Amount>); 5] = [
        (&alice, Some(100), None),
        (&bob, Some(105), None),
        (&carol, None, Some(200)),
        (&dave, Some(120), None),
        (&erin, None, Some(190)),
    ];
    for (bidder, amount, max) in steps {
        tokio::time::sleep(pace).await;
        let reply = bidder.bid(amount, max).await?;
        ensure!(
            matches!(reply, BidReply::Accepted(_)),
            "{}'s bid was not accepted: {reply:?}",
            bidder.name
        );
    }
    let last = tokio::time::timeout(
        Duration::from_secs(10),
        seen.wait_for(|s| s.price == Some(192)),
    )
    .await
    .map_err(|_| anyhow!("the feed never showed the price 192"))?
    .map_err(|_| anyhow!("the feed stopped"))?
    .clone();
    ensure!(
        last.leader.as_deref() == Some("carol"),
        "expected carol to lead at 192, the feed says {:?}",
        last.leader
    );
    say(
        "demo",
        "carol leads at USD 1.92 (192): the runner-up's ceiling 190 plus one step, as README § Bidding rules says (not 124)",
    );
    say("demo", "waiting for the close…");
    let (closed, _) = wait_closed(&mut seen, Duration::from_secs(60)).await?;
    ensure!(
        closed.winner.as_deref() == Some("carol") && closed.final_price == Some(192),
        "unexpected result {closed:?}"
    );
    Ok(id)
}

async fn soft_close_fight(platform: &Platform) -> Result<String> {
    header("2/2  A soft-close fight: a bid in the last 3 s moves the end to 3 s after it");
    let name = unique_name("amp-1965");
    let spec = AuctionSpec::new(
        "1965 Fender Twin Reverb amplifier",
        5000,
        100,
        Duration::from_secs(7),
    )
    .tiers(&[(0, 100), (10_000, 250)])
    .soft_close(Duration::from_secs(3), Duration::from_secs(3));
    let (id, _) = platform.create_auction(NAMESPACE, &name, &spec).await?;
    say(
        "demo",
        &format!(
            "created Auction {id}: starting price {}, ends in 7 s, soft close 3 s / 3 s",
            feed::money(5000, CURRENCY)
        ),
    );
    watch_in_browser(platform, &id);
    platform.wait_open(&id, Duration::from_secs(30)).await?;
    let mut seen = watcher(platform, 0, &id).await?;
    let frank = Bidder::join(platform, 0, "frank", &id).await?;
    let grace = Bidder::join(platform, 1, "grace", &id).await?;
    let mut min_next = match frank.bid(Some(5000), None).await? {
        BidReply::Accepted(r) => r.min_next,
        other => bail!("frank's opening bid failed: {other:?}"),
    };
    let rounds = 5;
    for round in 0..rounds {
        // Wait until the last 1.2 s before the effective end, then snipe.
        let ends_at = seen
            .borrow()
            .ends_at
            .ok_or_else(|| anyhow!("no end time in the feed"))?;
        let wait = ends_at - 1200 - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let (bidder, amount, max) = match round {
            r if r == rounds - 1 => (&grace, None, Some(min_next + 5000)),
            r if r % 2 == 0 => (&grace, Some(min_next), None),
            _ => (&frank, Some(min_next), None),
        };
        say(
            "demo",
            &format!("{} s left", (ends_at - now_ms()) as f64 / 1000.0),
        );
        min_next = match bidder.bid(amount, max).await? {
            BidReply::Accepted(r) => r.min_next,
            BidReply::Rejected(r) => r.min_next.unwrap_or(min_next),
            BidReply::Error(e) => bail!("{}: {e:?}", bidder.name),
        };
    }
    // frank tries once more, against grace's secret ceiling.
    tokio::time::sleep(Duration::from_millis(800)).await;
    frank.bid(Some(min_next), None).await?;
    say("demo", "frank gives up; waiting for the close…");
    let (closed, at) = wait_closed(&mut seen, Duration::from_secs(60)).await?;
    let s = seen.borrow().clone();
    say(
        "demo",
        &format!(
            "closed {} ms after its effective end, after {} extension(s); winner {:?}",
            at - s.ends_at.unwrap_or(at),
            s.extensions,
            closed.winner
        ),
    );
    Ok(id)
}

type ResultRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    bool,
    i64,
    i64,
    Option<i64>,
);

async fn results_from_postgres(database_url: &str, ids: &[String]) -> Result<()> {
    header("Final results, read back from PostgreSQL");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .with_context(|| format!("cannot connect to {database_url}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let rows: Vec<ResultRow> = loop {
        let rows: Vec<ResultRow> = sqlx::query_as(
            "SELECT r.auction_id, a.title, r.winner_name, r.final_price, r.reserve_met, r.bid_count,
                 (EXTRACT(EPOCH FROM r.closed_at) * 1000)::bigint,
                 (EXTRACT(EPOCH FROM a.ends_at) * 1000)::bigint
             FROM results r LEFT JOIN auctions a USING (auction_id)
             WHERE r.auction_id = ANY($1) ORDER BY r.closed_at",
        )
        .bind(ids)
        .fetch_all(&pool)
        .await?;
        if rows.len() == ids.len() || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        rows.len() == ids.len(),
        "PostgreSQL has {} of {} results",
        rows.len(),
        ids.len()
    );
    println!("  table results:");
    for (id, title, winner, price, reserve_met, bids, closed_at, ends_at) in &rows {
        println!(
            "    {id}  \"{}\"\n      winner {}, final price {}, reserve {}, {bids} bids, closed {} UTC (scheduled end {} UTC)",
            title.as_deref().unwrap_or("?"),
            winner.as_deref().unwrap_or("none"),
            price.map_or("-".into(), |p| feed::money(p, CURRENCY)),
            if *reserve_met { "met" } else { "not met" },
            feed::clock(*closed_at),
            ends_at.map_or("?".into(), feed::clock),
        );
    }
    for id in ids {
        let bids: Vec<(i64, String, i64, String, i64)> = sqlx::query_as(
            "SELECT seq, bidder_name, amount, outcome, price_after FROM bids
             WHERE auction_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&pool)
        .await?;
        println!("  table bids, {id} (ceilings are kept in a private table):");
        for (seq, bidder, amount, outcome, price) in bids {
            println!(
                "    #{seq:<3} {bidder:<6} {:>12}  {outcome:<15} price after {}",
                feed::money(amount, CURRENCY),
                feed::money(price, CURRENCY)
            );
        }
    }
    pool.close().await;
    Ok(())
}

async fn statuses(platform: &Platform, ids: &[String]) -> Result<()> {
    header("The Auction status the operator reports");
    for id in ids {
        let status = platform
            .wait_status(id, "phase Closed", Duration::from_secs(15), |s| {
                s["phase"] == "Closed"
            })
            .await?;
        let pick = |k: &str| match status.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "-".into(),
        };
        println!(
            "  {id}: phase {}, winner {}, finalPrice {}, reserveMet {}, bidCount {}, effectiveEndsAt {}",
            pick("phase"),
            pick("winner"),
            pick("finalPrice"),
            pick("reserveMet"),
            pick("bidCount"),
            pick("effectiveEndsAt")
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let vars: BTreeMap<String, String> = envfile::read(&cli.env_file);
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| vars.get(k).cloned())
            .ok_or_else(|| {
                anyhow!(
                    "{k} is not set and not in {} — run `make up` first",
                    cli.env_file.display()
                )
            })
    };
    var("GAVEL_DATABASE_URL")?;
    let platform = Platform::from_env_file(&cli.env_file)?;
    println!(
        "Gavel demo: {} bid-api processes ({}), auctions declared as YAML in {}",
        platform.ws_urls.len(),
        platform.ws_urls.join(", "),
        var("GAVEL_MANIFESTS")?
    );
    println!(
        "The bidder page: {}/ (open and upcoming auctions; each auction's address follows)",
        platform.http_url(0)
    );
    let pace = Duration::from_millis(cli.pace_ms);
    let seed = seed_example(&platform, pace).await?;
    let fight = soft_close_fight(&platform).await?;
    let ids = vec![seed, fight];
    results_from_postgres(&var("GAVEL_DATABASE_URL")?, &ids).await?;
    statuses(&platform, &ids).await?;
    println!(
        "\nTry it yourself (README § The local platform): `make up`, then \
         `target/debug/gavel-local new shop/lot-1 --ends-in 5m`, \
         `target/debug/gavel bid shop/lot-1 --max 5.00 --bidder you` and \
         `target/debug/gavel watch shop/lot-1` (see `gavel --help`), \
         or bid in a browser at {}/ (sign in with any name: development auth).",
        platform.http_url(0)
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    gavel_cli::exit_quietly_on_closed_pipe();
    gavel_cli::init_logging("warn");
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gavel-demo: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
