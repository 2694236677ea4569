//! `gavel`: watch an auction's live feed or bid from a terminal, over WebSocket protocol
//! v1. Defaults come from the environment or from `.gavel/env` (written by `make up`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gavel_cli::protocol::{ClientMessage, Subscribe};
use gavel_cli::{Auth, BidReply, ClientError, ServerMessage, WsClient, envfile, feed};

/// The exit statuses `gavel --help` documents.
mod status {
    /// A bid refused by the rules (too low, closed, not open, rate limited…).
    pub const REFUSED: u8 = 2;
    /// No such auction.
    pub const UNKNOWN_AUCTION: u8 = 3;
    /// No identity, a token refused, or a scope missing.
    pub const UNAUTHORISED: u8 = 4;
    /// The server cannot be reached, or answers that it cannot decide now.
    pub const UNAVAILABLE: u8 = 5;
    /// A command line clap refuses.
    pub const USAGE: u8 = 64;
}

/// Bidding was asked for without any identity.
#[derive(Debug, thiserror::Error)]
#[error(
    "bidding needs a token (--token-file PATH, GAVEL_TOKEN) or, on a development server, --bidder NAME"
)]
struct NoIdentity;

/// The exit status for a protocol code.
fn status_for_code(code: &str) -> Option<u8> {
    match code {
        "UNKNOWN_AUCTION" => Some(status::UNKNOWN_AUCTION),
        "UNAUTHENTICATED" | "FORBIDDEN" | "HTTP 401" | "HTTP 403" => Some(status::UNAUTHORISED),
        "UNAVAILABLE" | "HTTP 429" | "HTTP 503" => Some(status::UNAVAILABLE),
        _ => None,
    }
}

/// The exit status for an error that ended a command.
fn status_for_error(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<NoIdentity>().is_some() {
            return status::UNAUTHORISED;
        }
        match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Refused { code, .. }) => return status_for_code(code).unwrap_or(1),
            Some(ClientError::WebSocket { .. } | ClientError::Closed { .. }) => {
                return status::UNAVAILABLE;
            }
            _ => {}
        }
    }
    1
}

/// Watch and bid on Gavel auctions from a terminal.
///
/// Auctions are named `<namespace>/<name>`. Amounts are integers in the currency's
/// minor unit (cents for USD: 12550 is USD 125.50). Without `--url`, the first address
/// of GAVEL_WS_URLS (from the environment or `.gavel/env`, written by `make up`) is
/// used, else ws://127.0.0.1:8080/v1/ws.
///
/// Examples:
///   gavel watch demo/strat-1962
///   gavel bid demo/strat-1962 --amount 105 --bidder bob
///   gavel bid demo/strat-1962 --max 200 --bidder carol
///   gavel bid shop/lot-7 --amount 12550 --token-file ~/.config/gavel/token
///   gavel feed dead-letters
///   gavel feed replay --all
///
/// Exit status: 0 done (bid accepted, auction closed), 1 any other error, 2 bid refused
/// (too low, closed, not open, rate limited…), 3 no such auction, 4 not authorised (no or
/// bad token, missing scope), 5 server unreachable or unavailable, 64 bad command line.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Conn {
    /// WebSocket URL of a bid-api (`ws://host:port/v1/ws`).
    #[arg(long, env = "GAVEL_WS_URL")]
    url: Option<String>,
    /// Bidder name, for servers in development auth mode (`?bidder=<name>`).
    #[arg(long, env = "GAVEL_BIDDER", conflicts_with_all = ["token", "token_file"])]
    bidder: Option<String>,
    /// JWT to authenticate with (`Authorization: Bearer`), e.g. an access token from
    /// your identity provider. Prefer GAVEL_TOKEN or --token-file: a command line is
    /// visible to other users of the machine.
    #[arg(
        long,
        env = "GAVEL_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// File holding the JWT (surrounding whitespace ignored), e.g. written by your
    /// identity provider's CLI.
    #[arg(long, env = "GAVEL_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

impl Conn {
    /// The token from `--token`/GAVEL_TOKEN or `--token-file`/GAVEL_TOKEN_FILE.
    fn token(&self) -> Result<Option<String>> {
        if let Some(token) = self.token.as_ref().filter(|t| !t.trim().is_empty()) {
            return Ok(Some(token.trim().to_owned()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        Ok(Some(token.to_owned()))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// The outbound event feed's dead letters (events a sink refused for good or too many
    /// times): list them, or put them back for delivery. Reads PostgreSQL directly.
    Feed {
        #[command(subcommand)]
        command: FeedCmd,
        /// PostgreSQL of the platform (default: GAVEL_DATABASE_URL, from the environment or
        /// `.gavel/env`).
        #[arg(
            long,
            env = "GAVEL_DATABASE_URL",
            hide_env_values = true,
            global = true
        )]
        database_url: Option<String>,
    },
    /// Print an auction's live feed (price, leader, outbid, extensions) until it closes.
    Watch {
        /// `<namespace>/<name>`.
        auction: String,
        /// Replay every event after this sequence number first.
        #[arg(long)]
        since: Option<u64>,
        /// Keep watching after the auction closes (until Ctrl-C).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Place a bid (`--amount`), a proxy bid (`--max`: Gavel bids for you up to it), or
    /// both; prints the reply. Exit status 2 when the bid is refused (see `gavel --help`).
    Bid {
        /// `<namespace>/<name>`.
        auction: String,
        /// Amount to bid now, in minor units.
        #[arg(long, required_unless_present = "max")]
        amount: Option<i64>,
        /// Your ceiling for proxy bidding, in minor units (kept secret from others).
        #[arg(long)]
        max: Option<i64>,
        /// After the reply, keep printing the feed until the auction closes.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum FeedCmd {
    /// List dead-lettered events, newest first: sink, event id, attempts, last error.
    DeadLetters {
        /// Only this sink (`cluster` or `auction`).
        #[arg(long)]
        sink: Option<String>,
        /// Only this auction (`<namespace>/<name>`).
        #[arg(long)]
        auction: Option<String>,
        /// Most entries shown.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deliver dead-lettered events again (in feed order per auction): the given event ids,
    /// or every one with --all.
    Replay {
        /// Event ids (as listed by `gavel feed dead-letters`).
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every dead letter (of --sink if given).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only this sink (`cluster` or `auction`).
        #[arg(long)]
        sink: Option<String>,
    },
}

async fn feed_command(command: FeedCmd, database_url: Option<String>) -> Result<()> {
    let url = database_url
        .or_else(|| envfile::lookup("GAVEL_DATABASE_URL"))
        .context("no database: set --database-url or GAVEL_DATABASE_URL (or run `make up`)")?;
    let store = gavel_engine::store::Store::connect_lazy(&url)
        .with_context(|| format!("invalid database URL {}", gavel_engine::redact::url(&url)))?;
    let feed = gavel_engine::outbound::FeedStore::new(store.pool().clone());
    match command {
        FeedCmd::DeadLetters {
            sink,
            auction,
            limit,
            json,
        } => {
            let dead = feed
                .dead_letters(sink.as_deref(), auction.as_deref(), limit)
                .await?;
            for d in &dead {
                if json {
                    println!("{}", serde_json::to_string(d)?);
                } else {
                    println!(
                        "{}  {:<7}  {}  attempts {}  {}",
                        d.dead_at, d.sink, d.event_id, d.attempts, d.last_error
                    );
                }
            }
            if !json {
                eprintln!("{} dead-lettered event(s)", dead.len());
            }
        }
        FeedCmd::Replay { ids, all, sink } => {
            let ids = if all { Vec::new() } else { ids };
            let n = feed.replay(sink.as_deref(), &ids).await?;
            println!("{n} event(s) queued for delivery again");
        }
    }
    Ok(())
}

fn ws_url(conn: &Conn) -> String {
    conn.url
        .clone()
        .or_else(|| {
            envfile::lookup("GAVEL_WS_URLS")
                .and_then(|urls| urls.split(',').next().map(|u| u.trim().to_owned()))
        })
        .unwrap_or_else(|| "ws://127.0.0.1:8080/v1/ws".to_owned())
}

fn auth(conn: &Conn) -> Result<Auth> {
    Ok(match (conn.token()?, &conn.bidder) {
        (Some(token), _) => Auth::Token(token),
        (None, Some(name)) => Auth::Dev(name.clone()),
        (None, None) => Auth::Anonymous,
    })
}

fn now_clock() -> String {
    feed::clock(gavel_cli::manifest::now_ms())
}

async fn connect(conn: &Conn) -> Result<WsClient> {
    let url = ws_url(conn);
    let client = WsClient::connect(&url, &auth(conn)?)
        .await
        .with_context(|| format!("cannot connect to {url} (is the platform up? `make up`)"))?;
    println!(
        "{}  {}",
        now_clock(),
        feed::describe(&ServerMessage::Welcome(client.welcome().clone()), "")
    );
    Ok(client)
}

/// Prints messages until the auction closes (or forever with `follow`).
async fn follow_feed(
    client: &mut WsClient,
    auction: &str,
    mut currency: String,
    follow: bool,
) -> Result<()> {
    loop {
        let msg = match client.next(Duration::from_secs(3600)).await {
            Ok(m) => m,
            Err(gavel_cli::ClientError::Timeout { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if let ServerMessage::Snapshot(s) = &msg {
            currency = s.currency.clone();
        }
        println!("{}  {}", now_clock(), feed::describe(&msg, &currency));
        let done = match &msg {
            ServerMessage::Closed(c) => c.auction == auction,
            ServerMessage::Snapshot(s) => s.auction == auction && s.phase.is_final(),
            ServerMessage::Error(e) => {
                return Err(ClientError::Refused {
                    label: "watch".into(),
                    code: e.code.to_string(),
                    message: e.message.clone(),
                }
                .into());
            }
            _ => false,
        };
        if done && !follow {
            return Ok(());
        }
    }
}

async fn watch(auction: String, since: Option<u64>, follow: bool, conn: Conn) -> Result<()> {
    let mut client = connect(&conn).await?;
    client.keep_history(false);
    client
        .send(&ClientMessage::Subscribe(Subscribe {
            auction: auction.clone(),
            since,
            epoch: None,
        }))
        .await?;
    follow_feed(&mut client, &auction, String::new(), follow).await
}

async fn bid(
    auction: String,
    amount: Option<i64>,
    max: Option<i64>,
    then_watch: bool,
    conn: Conn,
) -> Result<ExitCode> {
    if conn.bidder.is_none() && conn.token()?.is_none() {
        return Err(NoIdentity.into());
    }
    let mut client = connect(&conn).await?;
    let snapshot = client
        .subscribe(&auction, Duration::from_secs(10))
        .await
        .with_context(|| format!("cannot subscribe to {auction}"))?;
    let currency = snapshot.currency.clone();
    println!(
        "{}  {}",
        now_clock(),
        feed::describe(&ServerMessage::Snapshot(snapshot), &currency)
    );
    let reply = client
        .bid(&auction, amount, max, Duration::from_secs(10))
        .await?;
    println!(
        "{}  {}",
        now_clock(),
        feed::describe_reply(&reply, &currency)
    );
    let status = match &reply {
        BidReply::Accepted(_) => 0,
        BidReply::Rejected(r) => status_for_code(r.code.as_str()).unwrap_or(status::REFUSED),
        BidReply::Error(e) => status_for_code(e.code.as_str()).unwrap_or(1),
    };
    if then_watch && status == 0 {
        follow_feed(&mut client, &auction, currency, false).await?;
    }
    client.close().await;
    Ok(ExitCode::from(status))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Cmd::Watch {
            auction,
            since,
            follow,
            conn,
        } => rt
            .block_on(watch(auction, since, follow, conn))
            .map(|()| ExitCode::SUCCESS),
        Cmd::Bid {
            auction,
            amount,
            max,
            watch,
            conn,
        } => rt.block_on(bid(auction, amount, max, watch, conn)),
        Cmd::Feed {
            command,
            database_url,
        } => rt
            .block_on(feed_command(command, database_url))
            .map(|()| ExitCode::SUCCESS),
    }
}

fn main() -> ExitCode {
    gavel_cli::exit_quietly_on_closed_pipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(gavel_engine::startup::log_colours(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(status::USAGE)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gavel: error: {e:#}");
            ExitCode::from(status_for_error(&e))
        }
    }
}
