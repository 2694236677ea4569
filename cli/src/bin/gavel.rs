//! `gavel`: list, show, watch and bid on auctions from a terminal, over the REST reads and
//! WebSocket protocol v1 of a bid-api. Defaults come from the environment or from
//! `.gavel/env` (written by `make up`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use gavel_cli::manifest::now_ms;
use gavel_cli::money::{TypedAmount, money};
use gavel_cli::protocol::{ClientMessage, Millis, Phase, Snapshot, Subscribe};
use gavel_cli::{Auth, BidReply, ClientError, ServerMessage, WsClient, envfile, feed, http};
use serde_json::{Value, json};

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
        if cause.downcast_ref::<http::HttpError>().is_some() {
            return status::UNAVAILABLE;
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

/// List, show, watch and bid on Gavel auctions from a terminal.
///
/// Auctions are named `<namespace>/<name>`. Amounts are read as a bidder reads them:
/// written with a decimal point they are in the auction's currency (`105.00` is USD 105.00,
/// `1.234` is BHD 1.234, converted with the currency's ISO 4217 decimals); a plain integer
/// is the currency's minor unit, as on the wire (`10500` is USD 105.00, `500` is JPY 500).
/// Without `--url`, the first address of GAVEL_WS_URLS (from the environment or
/// `.gavel/env`, written by `make up`) is used, else ws://127.0.0.1:8080/v1/ws; `list` and
/// `show` read the REST endpoints of GAVEL_HTTP_URLS likewise (or of `--url`'s server).
///
/// Examples (the local platform of `make up`, README § The local platform):
///   gavel list
///   gavel show shop/strat-1962
///   gavel watch shop/strat-1962
///   gavel bid shop/strat-1962 --amount 105.00 --bidder bob
///   gavel bid shop/strat-1962 --max 200.00 --bidder carol
///   gavel bid shop/lot-7 --amount 125.50 --token-file ~/.config/gavel/token
///   gavel --json watch shop/strat-1962 | jq .type
///   gavel feed dead-letters
///   gavel completions bash > ~/.local/share/bash-completion/completions/gavel
///
/// Output: lines for people; with --json one JSON object per line (watch and bid: each
/// server message as the protocol defines it; list: each auction as `GET /v1/auctions`
/// gives it; show: one object with the snapshot, the bids and the result); with --quiet
/// only what a script needs (list: the ids; show: the phase and result line; watch: the
/// closing line; bid: nothing unless refused).
///
/// Exit status: 0 done (bid accepted, auction closed), 1 any other error, 2 bid refused
/// (too low, closed, not open, rate limited…), 3 no such auction, 4 not authorised (no or
/// bad token, missing scope), 5 server unreachable or unavailable, 64 bad command line.
#[derive(Parser)]
#[command(name = "gavel", version, verbatim_doc_comment)]
struct Cli {
    /// One JSON object per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Only what a script needs (see above).
    #[arg(long, short, global = true, conflicts_with = "json")]
    quiet: bool,
    #[command(subcommand)]
    command: Cmd,
}

/// How the output is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    Quiet,
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

/// Where the REST reads go.
#[derive(Args, Clone)]
struct Rest {
    /// HTTP address of a bid-api (`http://host:port`); default: GAVEL_HTTP_URLS' first, or
    /// the server of `--url`.
    #[arg(long, env = "GAVEL_HTTP_URL")]
    http_url: Option<String>,
    /// WebSocket URL of a bid-api; its server answers the REST reads.
    #[arg(long, env = "GAVEL_WS_URL")]
    url: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The open and upcoming auctions: price in their currency, bids, time left (REST
    /// `GET /v1/auctions`).
    List {
        /// Only this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        #[command(flatten)]
        rest: Rest,
    },
    /// One auction: phase, price, leader or winner, reserve, start and end with the time
    /// left, soft-close extensions, the bid history, and the result after the close.
    Show {
        /// `<namespace>/<name>`.
        auction: String,
        #[command(flatten)]
        rest: Rest,
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
        /// Amount to bid now: `105.00` in the auction's currency, or an integer of minor
        /// units (`10500`).
        #[arg(long, required_unless_present = "max")]
        amount: Option<TypedAmount>,
        /// Your ceiling for proxy bidding (kept secret from others), read like --amount.
        #[arg(long)]
        max: Option<TypedAmount>,
        /// After the reply, keep printing the feed until the auction closes.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        conn: Conn,
    },
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard
    /// output, e.g. `gavel completions bash > ~/.local/share/bash-completion/completions/gavel`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output, e.g. `gavel man | man -l -`.
    Man,
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

async fn feed_command(command: FeedCmd, database_url: Option<String>, out: Output) -> Result<()> {
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
        } => {
            let dead = feed
                .dead_letters(sink.as_deref(), auction.as_deref(), limit)
                .await?;
            for d in &dead {
                match out {
                    Output::Json => println!("{}", serde_json::to_string(d)?),
                    Output::Quiet => println!("{}", d.event_id),
                    Output::Text => println!(
                        "{}  {:<7}  {}  attempts {}  {}",
                        d.dead_at, d.sink, d.event_id, d.attempts, d.last_error
                    ),
                }
            }
            if out == Output::Text {
                eprintln!("{} dead-lettered event(s)", dead.len());
            }
        }
        FeedCmd::Replay { ids, all, sink } => {
            let ids = if all { Vec::new() } else { ids };
            let n = feed.replay(sink.as_deref(), &ids).await?;
            match out {
                Output::Json => println!("{}", json!({ "queued": n })),
                Output::Quiet => {}
                Output::Text => println!("{n} event(s) queued for delivery again"),
            }
        }
    }
    Ok(())
}

fn ws_url(url: &Option<String>) -> String {
    url.clone()
        .or_else(|| {
            envfile::lookup("GAVEL_WS_URLS")
                .and_then(|urls| urls.split(',').next().map(|u| u.trim().to_owned()))
        })
        .unwrap_or_else(|| "ws://127.0.0.1:8080/v1/ws".to_owned())
}

/// `http://host:port` of a `ws://host:port/…` URL.
fn http_of_ws(ws: &str) -> Option<String> {
    let (scheme, rest) = ws.split_once("://")?;
    let host = rest.split('/').next()?;
    let scheme = match scheme {
        "ws" => "http",
        "wss" => "https",
        _ => return None,
    };
    Some(format!("{scheme}://{host}"))
}

fn http_url(rest: &Rest) -> String {
    rest.http_url
        .clone()
        .or_else(|| rest.url.as_deref().and_then(http_of_ws))
        .or_else(|| {
            envfile::lookup("GAVEL_HTTP_URLS")
                .and_then(|urls| urls.split(',').next().map(|u| u.trim().to_owned()))
        })
        .or_else(|| http_of_ws(&ws_url(&None)))
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

fn auth(conn: &Conn) -> Result<Auth> {
    Ok(match (conn.token()?, &conn.bidder) {
        (Some(token), _) => Auth::Token(token),
        (None, Some(name)) => Auth::Dev(name.clone()),
        (None, None) => Auth::Anonymous,
    })
}

/// Prints one message as a line of text (with the time) or of JSON.
fn print_message(msg: &ServerMessage, currency: &str, out: Output) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string(msg)?),
        Output::Quiet => {}
        Output::Text => println!(
            "{}  {}",
            feed::clock(now_ms()),
            feed::describe(msg, currency)
        ),
    }
    Ok(())
}

async fn connect(conn: &Conn, out: Output) -> Result<WsClient> {
    let url = ws_url(&conn.url);
    let client = WsClient::connect(&url, &auth(conn)?)
        .await
        .with_context(|| format!("cannot connect to {url} (is the platform up? `make up`)"))?;
    print_message(&ServerMessage::Welcome(client.welcome().clone()), "", out)?;
    Ok(client)
}

/// Prints messages until the auction closes (or forever with `follow`).
async fn follow_feed(
    client: &mut WsClient,
    auction: &str,
    mut currency: String,
    follow: bool,
    out: Output,
) -> Result<()> {
    loop {
        let msg = match client.next(Duration::from_secs(3600)).await {
            Ok(m) => m,
            Err(ClientError::Timeout { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if let ServerMessage::Snapshot(s) = &msg {
            currency = s.currency.clone();
        }
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
        if out == Output::Quiet && done {
            println!("{}", feed::describe(&msg, &currency));
        }
        print_message(&msg, &currency, out)?;
        if done && !follow {
            return Ok(());
        }
    }
}

async fn watch(
    auction: String,
    since: Option<u64>,
    follow: bool,
    conn: Conn,
    out: Output,
) -> Result<()> {
    let mut client = connect(&conn, out).await?;
    client.keep_history(false);
    client
        .send(&ClientMessage::Subscribe(Subscribe {
            auction: auction.clone(),
            since,
            epoch: None,
        }))
        .await?;
    follow_feed(&mut client, &auction, String::new(), follow, out).await
}

async fn bid(
    auction: String,
    amount: Option<TypedAmount>,
    max: Option<TypedAmount>,
    then_watch: bool,
    conn: Conn,
    out: Output,
) -> Result<ExitCode> {
    if conn.bidder.is_none() && conn.token()?.is_none() {
        return Err(NoIdentity.into());
    }
    let mut client = connect(&conn, out).await?;
    let snapshot = client
        .subscribe(&auction, Duration::from_secs(10))
        .await
        .with_context(|| format!("cannot subscribe to {auction}"))?;
    let currency = snapshot.currency.clone();
    let convert = |a: Option<TypedAmount>| -> Result<Option<i64>> {
        a.map(|a| a.minor_units(&currency))
            .transpose()
            .with_context(|| format!("{auction} is in {currency}"))
    };
    let (amount, max) = (convert(amount)?, convert(max)?);
    print_message(&ServerMessage::Snapshot(snapshot), &currency, out)?;
    let reply = client
        .bid(&auction, amount, max, Duration::from_secs(10))
        .await?;
    let status = match &reply {
        BidReply::Accepted(_) => 0,
        BidReply::Rejected(r) => status_for_code(r.code.as_str()).unwrap_or(status::REFUSED),
        BidReply::Error(e) => status_for_code(e.code.as_str()).unwrap_or(1),
    };
    let msg = match &reply {
        BidReply::Accepted(r) => ServerMessage::BidResult(r.clone()),
        BidReply::Rejected(r) => ServerMessage::BidRejected(r.clone()),
        BidReply::Error(e) => ServerMessage::Error(e.clone()),
    };
    if out == Output::Quiet && status != 0 {
        eprintln!("{}", feed::describe_reply(&reply, &currency));
    }
    print_message(&msg, &currency, out)?;
    if then_watch && status == 0 {
        follow_feed(&mut client, &auction, currency, false, out).await?;
    }
    client.close().await;
    Ok(ExitCode::from(status))
}

/// GETs a REST path; the JSON body of a 200, or the server's error as a [`ClientError`]
/// (so the exit status follows its code).
async fn rest(base: &str, path: &str) -> Result<Value> {
    let url = format!("{base}{path}");
    let r = http::get(&url)
        .await
        .with_context(|| format!("cannot reach {base} (is the platform up? `make up`)"))?;
    let body = r.json();
    if r.status == 200 {
        return Ok(body);
    }
    let code = body["code"]
        .as_str()
        .map_or_else(|| format!("HTTP {}", r.status), str::to_owned);
    let message = body["message"]
        .as_str()
        .map_or_else(|| r.body.trim().to_owned(), str::to_owned);
    Err(ClientError::Refused {
        label: format!("GET {path}"),
        code,
        message,
    }
    .into())
}

/// The money of an optional amount in a JSON object, `-` when null.
fn json_money(v: &Value, currency: &str) -> String {
    v.as_i64()
        .map_or_else(|| "-".to_owned(), |a| money(a, currency))
}

async fn list(namespace: Option<String>, rest_opts: Rest, out: Output) -> Result<()> {
    let base = http_url(&rest_opts);
    let mut after: Option<String> = None;
    let mut rows = Vec::new();
    let mut server_time = now_ms();
    // Every page (100 auctions each), at most 100 pages.
    for _ in 0..100 {
        let mut path = "/v1/auctions?limit=100".to_owned();
        if let Some(ns) = &namespace {
            path.push_str(&format!("&namespace={ns}"));
        }
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = rest(&base, &path).await?;
        server_time = page["server_time"].as_i64().unwrap_or(server_time);
        rows.extend(page["auctions"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if out == Output::Text {
        if rows.is_empty() {
            writeln!(w, "No open or upcoming auctions.")?;
            return Ok(());
        }
        writeln!(
            w,
            "{:<32} {:<9} {:>16} {:>5}  ENDS",
            "AUCTION", "PHASE", "PRICE", "BIDS"
        )?;
    }
    for a in &rows {
        match out {
            Output::Json => writeln!(w, "{a}")?,
            Output::Quiet => writeln!(w, "{}", a["auction"].as_str().unwrap_or_default())?,
            Output::Text => {
                let currency = a["currency"].as_str().unwrap_or_default();
                let price = match a["price"].as_i64() {
                    Some(p) => money(p, currency),
                    None => format!("from {}", json_money(&a["starting_price"], currency)),
                };
                let ends = a["ends_at"].as_i64().unwrap_or_default();
                let phase = a["phase"].as_str().unwrap_or("-");
                let when = match a["starts_at"].as_i64() {
                    Some(s) if phase == "scheduled" => format!(
                        "opens {}, ends {}",
                        feed::when(s, server_time),
                        feed::date_time(ends)
                    ),
                    _ => feed::when(ends, server_time),
                };
                writeln!(
                    w,
                    "{:<32} {:<9} {:>16} {:>5}  {}  \"{}\"",
                    a["auction"].as_str().unwrap_or_default(),
                    phase,
                    price,
                    a["bid_count"].as_u64().unwrap_or_default(),
                    when,
                    a["title"].as_str().unwrap_or_default()
                )?;
            }
        }
    }
    Ok(())
}

/// The result line of a closed or cancelled auction, `None` while it is not over.
fn result_line(s: &Snapshot) -> Option<String> {
    let price = s
        .price
        .map_or_else(|| "-".to_owned(), |p| money(p, &s.currency));
    match s.phase {
        Phase::Cancelled => Some("cancelled: no winner, no sale".into()),
        Phase::Closed => Some(match (&s.leader, s.reserve_met) {
            (Some(w), true) => format!("winner {w} at {price}"),
            (Some(_), false) => format!("reserve not met: no winner (final price {price})"),
            (None, _) => "no bids: no winner".into(),
        }),
        _ => None,
    }
}

async fn show(auction: String, rest_opts: Rest, out: Output) -> Result<()> {
    let base = http_url(&rest_opts);
    let raw = rest(&base, &format!("/v1/auctions/{auction}")).await?;
    let s: Snapshot = serde_json::from_value(raw.clone())
        .with_context(|| format!("unexpected snapshot from {base}: {raw}"))?;
    let mut bids = Vec::new();
    let mut after = 0u64;
    loop {
        let page = rest(
            &base,
            &format!("/v1/auctions/{auction}/bids?after={after}&limit=100"),
        )
        .await?;
        let got = page["bids"].as_array().cloned().unwrap_or_default();
        let last = got.last().and_then(|b| b["seq"].as_u64());
        let full = got.len() == 100;
        bids.extend(got);
        match last {
            Some(seq) if full => after = seq,
            _ => break,
        }
    }
    let now = now_ms();
    let result = result_line(&s);
    match out {
        Output::Json => {
            let mut snapshot = raw;
            snapshot.as_object_mut().map(|o| o.remove("type"));
            println!(
                "{}",
                json!({
                    "auction": s.auction,
                    "snapshot": snapshot,
                    "bids": bids,
                    "winner": (s.phase == Phase::Closed && s.reserve_met).then_some(s.leader.clone()).flatten(),
                    "result": result,
                })
            );
        }
        Output::Quiet => println!(
            "{} {}{}",
            s.auction,
            s.phase,
            result.map(|r| format!(": {r}")).unwrap_or_default()
        ),
        Output::Text => {
            let stdout = std::io::stdout();
            let mut w = stdout.lock();
            let c = &s.currency;
            writeln!(w, "{}  \"{}\"", s.auction, s.title)?;
            writeln!(w, "  phase     {}", s.phase)?;
            let over = s.phase.is_final();
            match (&s.price, &s.leader) {
                (Some(p), Some(l)) => writeln!(
                    w,
                    "  price     {} ({} {l}), {} bid(s){}",
                    money(*p, c),
                    if over { "last bid by" } else { "leader" },
                    s.bid_count,
                    if over {
                        String::new()
                    } else {
                        format!("; minimum next bid {}", money(s.min_next, c))
                    }
                )?,
                _ => writeln!(
                    w,
                    "  price     no bids yet; opening bid {}",
                    money(s.min_next, c)
                )?,
            }
            writeln!(
                w,
                "  reserve   {}",
                feed::reserve(s.has_reserve, s.reserve_met)
            )?;
            match s.starts_at {
                Some(t) => writeln!(w, "  starts    {}", feed::when(t, now))?,
                None => writeln!(w, "  starts    when provisioned")?,
            }
            writeln!(
                w,
                "  {}      {}",
                if over || s.ends_at <= now {
                    "ended"
                } else {
                    "ends "
                },
                feed::when(s.ends_at, now)
            )?;
            match s.scheduled_ends_at {
                Some(scheduled) if scheduled < s.ends_at => writeln!(
                    w,
                    "  extended  by {} (soft close; scheduled end {})",
                    feed::span(s.ends_at - scheduled),
                    feed::date_time(scheduled)
                )?,
                Some(_) => writeln!(w, "  extended  no")?,
                None => {}
            }
            if let Some(r) = &result {
                writeln!(w, "  result    {r}")?;
            }
            writeln!(
                w,
                "  bids      {}",
                if bids.is_empty() { "none" } else { "" }
            )?;
            for b in &bids {
                let placed: Millis = b["placed_at"].as_i64().unwrap_or_default();
                writeln!(
                    w,
                    "    #{:<4} {}  {:<12} {:>14}  {}, price after {}",
                    b["seq"].as_u64().unwrap_or_default(),
                    feed::date_time(placed),
                    b["bidder"].as_str().unwrap_or("-"),
                    json_money(&b["amount"], c),
                    b["outcome"].as_str().unwrap_or("-"),
                    json_money(&b["price"], c)
                )?;
            }
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let out = if cli.json {
        Output::Json
    } else if cli.quiet {
        Output::Quiet
    } else {
        Output::Text
    };
    match cli.command {
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "gavel", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let rt = tokio::runtime::Runtime::new()?;
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Cmd::List { namespace, rest } => done(rt.block_on(list(namespace, rest, out))),
        Cmd::Show { auction, rest } => done(rt.block_on(show(auction, rest, out))),
        Cmd::Watch {
            auction,
            since,
            follow,
            conn,
        } => done(rt.block_on(watch(auction, since, follow, conn, out))),
        Cmd::Bid {
            auction,
            amount,
            max,
            watch,
            conn,
        } => rt.block_on(bid(auction, amount, max, watch, conn, out)),
        Cmd::Feed {
            command,
            database_url,
        } => done(rt.block_on(feed_command(command, database_url, out))),
        Cmd::Completions { .. } | Cmd::Man => Ok(ExitCode::SUCCESS),
    }
}

fn main() -> ExitCode {
    gavel_cli::exit_quietly_on_closed_pipe();
    gavel_cli::init_logging("warn");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn http_address_of_a_websocket_url() {
        assert_eq!(
            http_of_ws("ws://127.0.0.1:9/v1/ws").as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            http_of_ws("wss://a.example/v1/ws").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(http_of_ws("nope"), None);
    }
}
