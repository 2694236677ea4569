//! The bidder page in real browsers: headless Chromium driven over WebDriver
//! (`chromedriver`; Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/system-deps.sh`) against the local platform of this test binary.
//!
//! One chromedriver and two browser sessions (alice on a desktop-sized window on bid-api
//! 1, bob on a phone-sized one on bid-api 2) serve every scenario, run in order in one
//! test so that the browsers start once:
//! - the list shows the auction; two bidders sign in by name (development auth); alice
//!   bids with the keyboard, bob sees the price live and outbids her with a maximum, alice
//!   sees "outbid" and a refusal in words;
//! - a late bid moves the end (soft close) on both pages; the close shows the winner on
//!   both; a screenshot of each page at close is written under `target/browser/`;
//! - a page on a bid-api process of this test's own follows the bids while that process
//!   is stopped and started again (its bidder signed in with a token), and its feed shows
//!   every bid once, in order; then
//!   Redis loses the auction, the operator restores it from PostgreSQL, and the page
//!   takes the `reset`, keeps the recorded bids once and goes on live;
//! - a bidder signs in on the page through a real OpenID provider (`oidc-provider`, as
//!   `bid-api/tests/identity.rs` runs it: authorization code with PKCE, public client,
//!   the provider's own login and consent pages), bids under the provider's `sub`, and
//!   keeps bidding after its short-lived access token expired, the page having refreshed
//!   it and handed it to the open socket (`refresh` frame).
//!
//! `GAVEL_CHROMIUM` and `GAVEL_CHROMEDRIVER` name other binaries. Waits are generous
//! bounds, not timings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use gavel_e2e::platform::{binary_dir, now_ms, unique_name};
use gavel_e2e::protocol::Snapshot;
use gavel_e2e::{AuctionSpec, BidReply, Platform, WsClient};
use gavel_engine::testing::{free_port, run_after_exit, temp_dir};
use serde_json::{Value, json};

/// Bound on anything that should happen at once.
const T: Duration = Duration::from_secs(20);
/// Bound on a close or a reconnect.
const LONG: Duration = Duration::from_secs(60);

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// A `chromedriver` process on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Result<Self> {
        let program = env("GAVEL_CHROMEDRIVER").unwrap_or_else(|| "chromedriver".into());
        let port = free_port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot run {program}: install chromium-driver (make check-system-deps)")
            })?;
        run_after_exit(&format!("kill -TERM {} 2>/dev/null", child.id()));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + T;
        loop {
            // It keeps HTTP/1.0 connections open, so readiness is its port accepting.
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self { child, url });
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {url} within {T:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session.
struct Browser {
    label: &'static str,
    client: Client,
    profile: PathBuf,
}

impl Browser {
    async fn open(driver: &Driver, label: &'static str, size: (u32, u32)) -> Result<Self> {
        let profile = temp_dir("chromium-profile");
        let binary = env("GAVEL_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--lang=en-US",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={},{}", size.0, size.1),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .with_context(|| format!("{label}: cannot start a Chromium session"))?;
        Ok(Self {
            label,
            client,
            profile,
        })
    }

    async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("{}: cannot open {url}", self.label))
    }

    /// Runs a script returning a value.
    async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("{}: script failed", self.label))
    }

    /// The visible text of element `id` (null when it is absent or hidden).
    async fn text(&self, id: &str) -> Result<Option<String>> {
        let v = self
            .js(
                "const e = document.getElementById(arguments[0]);
                 return e && !e.closest('[hidden]') ? e.textContent.trim().replace(/\\s+/g, ' ') : null;",
                vec![json!(id)],
            )
            .await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// Waits until element `id` is shown with a text `ok` accepts; returns that text.
    async fn wait_text(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(id).await?;
            if let Some(t) = &text
                && ok(t)
            {
                return Ok(t.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: waited {timeout:?} for #{id} to show {what}; it shows {text:?}",
                    self.label
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_is(&self, id: &str, expected: &str, timeout: Duration) -> Result<()> {
        self.wait_text(id, &format!("{expected:?}"), timeout, |t| t == expected)
            .await
            .map(|_| ())
    }

    /// Waits until a script returns a value `ok` accepts.
    async fn wait_js(
        &self,
        script: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, vec![]).await?;
            if ok(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("{}: waited {timeout:?} for {what}; last {v}", self.label);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replaces the text of input `id` by typing, as a person would.
    async fn type_into(&self, id: &str, text: &str) -> Result<()> {
        let input = self
            .client
            .find(Locator::Id(id))
            .await
            .with_context(|| format!("{}: no #{id}", self.label))?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    async fn click(&self, id: &str) -> Result<()> {
        self.client
            .find(Locator::Id(id))
            .await
            .with_context(|| format!("{}: no #{id}", self.label))?
            .click()
            .await
            .with_context(|| format!("{}: cannot click #{id}", self.label))
    }

    /// Types an amount into the bid box and presses Enter (keyboard only).
    async fn bid_with_keyboard(&self, amount: &str) -> Result<()> {
        self.type_into("amount", &format!("{amount}{}", char::from(Key::Enter)))
            .await
    }

    async fn sign_in(&self, name: &str) -> Result<()> {
        // The name field is shown only because the server says development auth is on.
        self.wait_js(
            "return !document.getElementById('name-field').hidden",
            "the development name field",
            T,
            |v| v == &json!(true),
        )
        .await?;
        self.type_into("name", name).await?;
        self.click("sign-in").await?;
        self.wait_is("who", &format!("Bidding as {name}."), T)
            .await?;
        self.wait_is("conn", "Live", T).await
    }

    async fn ends_at(&self) -> Result<i64> {
        let v = self
            .js(
                "return Number(document.getElementById('countdown').dataset.endsAt || 0)",
                vec![],
            )
            .await?;
        v.as_i64()
            .ok_or_else(|| anyhow!("{}: no end on the page: {v}", self.label))
    }

    /// The seqs of the feed, newest first.
    async fn feed(&self) -> Result<Vec<u64>> {
        let v = self
            .js(
                "return [...document.querySelectorAll('#feed li[data-seq]')].map(li => Number(li.dataset.seq))",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    async fn wait_feed(&self, expected: &[u64]) -> Result<()> {
        let deadline = Instant::now() + LONG;
        loop {
            let feed = self.feed().await?;
            if feed == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}: feed {feed:?}, expected {expected:?}", self.label);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &Path) -> Result<()> {
        self.js(
            "window.scrollTo(0, 0); document.activeElement?.blur(); return true",
            vec![],
        )
        .await?;
        let png = self.client.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        eprintln!("browser: screenshot {}", path.display());
        Ok(())
    }
}

/// Where the screenshots go: `target/browser/`.
fn screenshot_dir() -> Result<PathBuf> {
    let bin = binary_dir().map_err(|e| anyhow!("{e}"))?;
    Ok(bin
        .parent()
        .map(|target| target.join("browser"))
        .unwrap_or_else(|| bin.join("browser")))
}

async fn rest_snapshot(p: &Platform, id: &str) -> Result<Snapshot> {
    let r = p.rest_snapshot(0, id).await?;
    Ok(serde_json::from_value(r.json())?)
}

async fn ws_bid(c: &mut WsClient, id: &str, amount: i64) -> Result<()> {
    match c.bid(id, Some(amount), None, T).await? {
        BidReply::Accepted(_) => Ok(()),
        other => bail!("{} bid {amount} refused: {other:?}", c.label()),
    }
}

/// The page's money helpers, in the browser that runs them: each currency's own minor
/// digits (ISO 4217 through `Intl`), exact parsing of what a bidder types.
async fn money_in_currencies(b: &Browser) -> Result<()> {
    let v = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const n = x => typeof x === 'string' ? x.replace(/\\s/g, ' ') : x;
             import('/assets/app.js').then(m => done([
               m.money(10500, 'USD'), m.money(1050, 'JPY'), m.money(1234567, 'KWD'),
               m.money(1000000000000000, 'EUR'),
               m.parseAmount('105.00', 'USD').value, m.parseAmount('105,5', 'EUR').value,
               m.parseAmount('1,050.25', 'USD').value, m.parseAmount('1.234', 'KWD').value,
               m.parseAmount('1050', 'JPY').value, m.parseAmount('10.5', 'JPY').error,
               m.parseAmount('1.001', 'USD').error, m.parseAmount('abc', 'USD').error,
               m.parseAmount('0', 'USD').error,
             ].map(n)), e => done(String(e)));",
            vec![],
        )
        .await?;
    let expected = json!([
        "$105.00",
        "¥1,050",
        "KWD 1,234.567",
        "€10,000,000,000,000.00",
        10500,
        10550,
        105025,
        1234,
        1050,
        "JPY has no minor unit: type a whole amount.",
        "USD has 2 decimals at most.",
        "Type an amount in USD, for example 105.00.",
        "That amount is out of range."
    ]);
    if v != expected {
        bail!("money helpers: got {v}, expected {expected}");
    }
    Ok(())
}

/// Two bidders, live updates, outbid, refusal, soft close, close on both pages.
async fn two_bidders(p: &Platform, alice: &Browser, bob: &Browser) -> Result<()> {
    let name = unique_name("page");
    let spec = AuctionSpec::new("1962 Fender Stratocaster", 100, 10, Duration::from_secs(25))
        .soft_close(Duration::from_secs(10), Duration::from_secs(10));
    let id = p.create_open_auction(&name, &spec).await?;

    // The list on bid-api 1 shows it with its price and time left.
    alice.goto(&format!("{}/", p.http_url(0))).await?;
    alice
        .wait_js(
            &format!(
                "const li = document.querySelector('#list li[data-auction=\"{id}\"]');
                 return li ? li.textContent : null"
            ),
            "the auction in the list",
            T,
            |v| {
                v.as_str().is_some_and(|t| {
                    t.contains("1962 Fender Stratocaster")
                        && t.contains("Opening bid $1.00")
                        && t.contains("0 bids")
                        && t.contains("left")
                })
            },
        )
        .await?;
    alice.click_link(&id).await?;

    bob.goto(&format!("{}/auctions/{id}", p.http_url(1)))
        .await?;
    alice
        .wait_is("title", "1962 Fender Stratocaster", T)
        .await?;
    money_in_currencies(alice).await?;
    alice.sign_in("alice").await?;
    bob.sign_in("bob").await?;
    for b in [alice, bob] {
        b.wait_is("price", "No bids yet", T).await?;
        b.wait_is("min-next", "$1.00", T).await?;
    }

    // Alice bids with the keyboard; bob sees it live.
    alice.bid_with_keyboard("1.00").await?;
    alice.wait_is("you", "You are leading.", T).await?;
    bob.wait_is("price", "$1.00", T).await?;
    bob.wait_is("leader", "alice", T).await?;
    bob.wait_is("min-next", "$1.10", T).await?;

    // Bob outbids with a maximum: the proxy bids just enough.
    bob.type_into("max", "5.00").await?;
    bob.click("max-button").await?;
    bob.wait_is("you", "You are leading.", T).await?;
    bob.wait_is("your-max", "Your maximum: $5.00", T).await?;
    bob.wait_is("price", "$1.10", T).await?;
    alice.wait_is("price", "$1.10", T).await?;
    alice
        .wait_text("alert", "the outbid alert", T, |t| {
            t.starts_with("You have been outbid: the price is now $1.10")
        })
        .await?;
    alice.wait_is("you", "You have been outbid.", T).await?;
    let live = alice
        .js(
            "return document.getElementById('alert').getAttribute('aria-live')",
            vec![],
        )
        .await?;
    if live != json!("assertive") {
        bail!("the outbid notice is not an assertive live region: {live}");
    }

    // A refusal in words.
    alice.bid_with_keyboard("0.50").await?;
    alice
        .wait_is("message", "Too low: the minimum next bid is $1.20.", T)
        .await?;

    // A late bid moves the end on both pages.
    let deadline = Instant::now() + LONG;
    loop {
        let s = rest_snapshot(p, &id).await?;
        if s.ends_at - now_ms() < 8_000 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{id} never came within 8s of its end");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = alice.ends_at().await?;
    alice.bid_with_keyboard("1.20").await?;
    alice
        .wait_text("message", "accepted below bob's maximum", T, |t| {
            t.contains("another bidder's maximum is higher")
        })
        .await?;
    for b in [alice, bob] {
        b.wait_js(
            "return Number(document.getElementById('countdown').dataset.endsAt)",
            "the end to move",
            T,
            |v| v.as_i64().is_some_and(|e| e > before),
        )
        .await?;
        b.wait_text("end-moved", "the end-moved notice", T, |t| {
            t.starts_with("The end moved to")
        })
        .await?;
    }

    // The close, on both.
    alice
        .wait_is("result", "Won by bob at $1.30.", LONG)
        .await?;
    bob.wait_is("result", "You won at $1.30.", LONG).await?;
    for b in [alice, bob] {
        b.wait_is("countdown", "Ended", T).await?;
        b.wait_is("phase", "Closed", T).await?;
    }
    let dir = screenshot_dir()?;
    alice
        .screenshot(&dir.join("auction-closed-alice.png"))
        .await?;
    bob.screenshot(&dir.join("auction-closed-bob-phone.png"))
        .await?;
    Ok(())
}

impl Browser {
    /// Follows the list's link to `id` with the keyboard (focus, Enter).
    async fn click_link(&self, id: &str) -> Result<()> {
        let link = self
            .client
            .find(Locator::Css(&format!("#list li[data-auction=\"{id}\"] a")))
            .await
            .with_context(|| format!("{}: no link to {id}", self.label))?;
        link.send_keys(&char::from(Key::Enter).to_string()).await?;
        self.wait_js("return location.pathname", "the auction page", T, |v| {
            v.as_str() == Some(&format!("/auctions/{id}"))
        })
        .await
        .map(|_| ())
    }
}

/// A bid-api process of this test, on a fixed port, to stop and start again.
struct OwnBidApi {
    port: u16,
    redis_url: String,
    database_url: String,
    jwt_secret: String,
    log: PathBuf,
    child: Option<Child>,
    /// More environment (the identity provider's settings).
    env: Vec<(String, String)>,
}

impl OwnBidApi {
    fn new(redis_url: &str, database_url: &str, jwt_secret: &str) -> Self {
        Self {
            port: free_port(),
            redis_url: redis_url.to_owned(),
            database_url: database_url.to_owned(),
            jwt_secret: jwt_secret.to_owned(),
            log: temp_dir("browser-bid-api").join("bid-api.log"),
            child: None,
            env: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) -> Result<()> {
        let bin = binary_dir()
            .map_err(|e| anyhow!("{e}"))?
            .join("gavel-bid-api");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&bin)
            .env("GAVEL_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("GAVEL_DEV_AUTH", "true")
            .env("GAVEL_REDIS_URL", &self.redis_url)
            .env("GAVEL_DATABASE_URL", &self.database_url)
            .env("GAVEL_JWT_SECRET", &self.jwt_secret)
            .env("GAVEL_LOG_FORMAT", "text")
            .env("GAVEL_SHUTDOWN_GRACE", "3s")
            // Exact names on the page (the name tag has tests of its own).
            .env("GAVEL_DISPLAY_NAME_TAG", "false")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        run_after_exit(&format!("kill -TERM {} 2>/dev/null", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + LONG;
        loop {
            if let Ok(r) = gavel_e2e::http::get(&format!("{}/readyz", self.url())).await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("own bid-api not ready; log {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM and wait for the exit.
    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for OwnBidApi {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The page reconnects by itself after its bid-api restarts, and its feed has every bid
/// once, in order: those placed while it was offline are replayed with `since`.
async fn reconnects_without_gap(p: &Platform, viewer: &Browser) -> Result<()> {
    let Some(local) = p.local_platform() else {
        eprintln!("browser: reconnect scenario needs the local platform (skipped on GAVEL_E2E_*)");
        return Ok(());
    };
    let mut own = OwnBidApi::new(&local.redis_url, &local.database_url, &local.jwt_secret);
    own.start().await?;
    let name = unique_name("page-rc");
    let spec = AuctionSpec::new("Restart lot", 100, 10, Duration::from_secs(300));
    let id = p.create_open_auction(&name, &spec).await?;
    let mut carol = p.bidder(0, "carol").await?;
    let mut dave = p.bidder(1, "dave").await?;

    viewer.goto(&format!("{}/auctions/{id}", own.url())).await?;
    viewer.wait_is("conn", "Live", T).await?;
    // Signed in with a token this time (kept in the tab's session storage).
    viewer
        .type_into("token", &token(&local.jwt_secret, "frank-1", "Frank"))
        .await?;
    viewer.click("sign-in").await?;
    viewer.wait_is("who", "Bidding as Frank.", T).await?;
    viewer.wait_is("conn", "Live", T).await?;
    ws_bid(&mut carol, &id, 100).await?;
    ws_bid(&mut dave, &id, 110).await?;
    ws_bid(&mut carol, &id, 120).await?;
    viewer.wait_feed(&[3, 2, 1]).await?;

    own.stop()?;
    viewer.wait_is("conn", "Offline — reconnecting…", T).await?;
    ws_bid(&mut dave, &id, 130).await?;
    ws_bid(&mut carol, &id, 140).await?;
    own.start().await?;
    viewer.wait_is("conn", "Live", LONG).await?;
    viewer.wait_feed(&[5, 4, 3, 2, 1]).await?;
    ws_bid(&mut dave, &id, 150).await?;
    viewer.wait_feed(&[6, 5, 4, 3, 2, 1]).await?;
    viewer.wait_is("price", "$1.50", T).await?;
    viewer.wait_is("bid-count", "6", T).await?;
    viewer.wait_is("leader", "dave", T).await?;

    // Redis loses the auction: the operator restores it from PostgreSQL, the page gets
    // `reset` and a fresh snapshot, keeps the recorded bids once, and goes on live.
    wait_recorded(p, &id, 6).await?;
    lose_live_state(&local.redis_url, &id)?;
    viewer
        .wait_js(
            "return [...document.querySelectorAll('#feed li.system')].map(li => li.textContent).join('|')",
            "the restore note in the feed",
            LONG,
            |v| v.as_str().is_some_and(|t| t.contains("restored")),
        )
        .await?;
    let mut erin = p.bidder(0, "erin").await?;
    let deadline = Instant::now() + LONG;
    // Bids are refused as UNAVAILABLE while the restore runs.
    while let Err(e) = ws_bid(&mut erin, &id, 160).await {
        if Instant::now() > deadline {
            return Err(e.context("bidding after the restore"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    viewer.wait_feed(&[7, 6, 5, 4, 3, 2, 1]).await?;
    viewer.wait_is("leader", "erin", T).await?;
    viewer.wait_is("conn", "Live", T).await?;
    // The token survived the restart and bids.
    viewer
        .type_into("max", &format!("2.00{}", char::from(Key::Enter)))
        .await?;
    viewer
        .wait_is("message", "Accepted: you are leading at $1.70.", T)
        .await?;
    viewer.wait_feed(&[8, 7, 6, 5, 4, 3, 2, 1]).await?;
    viewer.wait_is("leader", "Frank", T).await?;
    own.stop()?;
    Ok(())
}

/// The OpenID provider of the identity tests (`bid-api/tests/oidc`, installed by `make
/// test-deps`), with the bidder page's public client, stopped on drop.
struct Provider {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Provider {
    /// `redirect`: the page's redirect URI; `ttl`: its access tokens' lifetime.
    async fn start(redirect: &str, ttl: Duration) -> Result<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bid-api/tests/oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .status()
                .context("npm (Node.js) is needed for the sign-in scenario")?;
            if !status.success() {
                bail!("npm ci in {} failed", dir.display());
            }
        }
        let work = temp_dir("browser-oidc");
        let keys = work.join("keys.json");
        let status = Command::new("node")
            .arg(dir.join("keys.mjs"))
            .arg(&keys)
            .arg("page:ES256")
            .status()
            .context("node")?;
        if !status.success() {
            bail!("keys.mjs failed");
        }
        let port = free_port();
        let log = work.join("provider.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg(port.to_string())
            .arg(&keys)
            .env("GAVEL_TEST_PAGE_REDIRECT", redirect)
            .env("GAVEL_TEST_PAGE_TOKEN_TTL", ttl.as_secs().to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start oidc-provider")?;
        run_after_exit(&format!("kill {} 2>/dev/null", child.id()));
        let provider = Self { child, port, log };
        let deadline = Instant::now() + LONG;
        loop {
            let url = format!("{}/.well-known/openid-configuration", provider.issuer());
            if let Ok(r) = gavel_e2e::http::get(&url).await
                && r.status == 200
            {
                return Ok(provider);
            }
            if Instant::now() > deadline {
                bail!(
                    "oidc-provider did not answer: {}",
                    std::fs::read_to_string(&provider.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page signs a bidder in through a real OpenID provider (authorization code with
/// PKCE), bids under the provider's `sub`, and refreshes its access token over the open
/// socket: after the first token expired (no leeway), its bids are still accepted.
async fn signs_in_with_the_identity_provider(p: &Platform, page: &Browser) -> Result<()> {
    let Some(local) = p.local_platform() else {
        eprintln!("browser: sign-in scenario needs the local platform (skipped on GAVEL_E2E_*)");
        return Ok(());
    };
    let mut own = OwnBidApi::new(&local.redis_url, &local.database_url, &local.jwt_secret);
    // Short-lived access tokens, so that the page must refresh one within the test.
    let provider = Provider::start(
        &format!("{}/auth/callback", own.url()),
        Duration::from_secs(8),
    )
    .await?;
    for (k, v) in [
        ("GAVEL_OIDC_ISSUER", provider.issuer()),
        ("GAVEL_OIDC_PAGE_CLIENT_ID", "gavel-page".into()),
        ("GAVEL_OIDC_PAGE_SCOPE", "openid bid".into()),
        ("GAVEL_OIDC_PAGE_RESOURCE", "urn:gavel:page".into()),
        ("GAVEL_JWT_AUDIENCE", "gavel".into()),
        ("GAVEL_JWT_BID_SCOPE", "bid".into()),
        ("GAVEL_JWT_LEEWAY", "0s".into()),
    ] {
        own.env.push((k.to_owned(), v));
    }
    own.start().await?;
    let name = unique_name("page-oidc");
    let spec = AuctionSpec::new("Sign-in lot", 100, 10, Duration::from_secs(300));
    let id = p.create_open_auction(&name, &spec).await?;
    let mut rival = p.bidder(0, "rival").await?;

    page.goto(&format!("{}/auctions/{id}", own.url())).await?;
    page.wait_is("conn", "Live", T).await?;
    page.wait_js(
        "return !document.getElementById('oidc-sign-in').hidden",
        "the provider's sign-in button",
        T,
        |v| v == &json!(true),
    )
    .await?;
    page.click("oidc-sign-in").await?;
    // The provider's own login page, then its consent page.
    let issuer = provider.issuer();
    page.wait_js(
        "return location.origin",
        "the provider's login page",
        T,
        |v| v.as_str() == Some(issuer.as_str()),
    )
    .await?;
    let field = |name: &str| format!("input[name=\"{name}\"]");
    let submit = || async {
        page.client
            .find(Locator::Css("button[type=submit]"))
            .await?
            .click()
            .await
    };
    for (input, text) in [("login", "zoe"), ("password", "any")] {
        page.client
            .find(Locator::Css(&field(input)))
            .await
            .with_context(|| format!("no {input} field on the provider's page"))?
            .send_keys(text)
            .await?;
    }
    submit().await?;
    page.wait_js(
        "return document.querySelector('button[type=submit]')?.textContent ?? location.pathname",
        "the consent page",
        T,
        |v| v.as_str() == Some("Continue"),
    )
    .await?;
    submit().await?;
    // Back on the auction, signed in as the provider's bidder.
    page.wait_js("return location.href", "the auction page again", T, |v| {
        v.as_str() == Some(&format!("{}/auctions/{id}", own.url()))
    })
    .await?;
    page.wait_is("who", "Bidding as Zoe.", T).await?;
    page.wait_is("conn", "Live", T).await?;
    let first = page
        .js("return sessionStorage.getItem('gavel.token')", vec![])
        .await?
        .as_str()
        .map(str::to_owned)
        .context("no token after sign-in")?;
    // Its `exp`, read as the page reads its claims.
    let first_exp = page
        .js(
            "const p = arguments[0].split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
             return JSON.parse(atob(p)).exp;",
            vec![json!(first)],
        )
        .await?
        .as_i64()
        .context("the token has no exp")?;
    page.bid_with_keyboard("1.00").await?;
    page.wait_is("message", "Accepted: you are leading at $1.00.", T)
        .await?;
    page.wait_is("leader", "Zoe", T).await?;

    // The first token expires; the page has refreshed it over the socket by then.
    page.wait_js(
        "return window.gavelPage.refreshed",
        "a refreshed token taken over the socket",
        LONG,
        |v| v.as_i64().is_some_and(|n| n >= 1),
    )
    .await?;
    page.wait_js(
        &format!("return Date.now() > {} * 1000 + 1000", first_exp),
        "the first token's expiry",
        LONG,
        |v| v == &json!(true),
    )
    .await?;
    let now = page
        .js("return sessionStorage.getItem('gavel.token')", vec![])
        .await?;
    if now.as_str() == Some(first.as_str()) {
        bail!("the page kept its expired token");
    }
    ws_bid(&mut rival, &id, 110).await?;
    page.wait_is("leader", "rival", T).await?;
    page.bid_with_keyboard("1.20").await?;
    page.wait_is("message", "Accepted: you are leading at $1.20.", T)
        .await?;
    page.wait_is("leader", "Zoe", T).await?;
    page.wait_is("conn", "Live", T).await?;
    // Bids were recorded under the provider's subject.
    wait_recorded(p, &id, 3).await?;
    let bids = p.rest_bids(0, &id, 0, 100).await?.json()["bids"].clone();
    let names: Vec<&str> = bids
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["bidder"].as_str()).collect())
        .unwrap_or_default();
    if names != ["Zoe", "rival", "Zoe"] {
        bail!("recorded bidders {names:?}");
    }
    own.stop()?;
    drop(provider);
    Ok(())
}

/// An HS256 bidder token valid for ten minutes.
fn token(secret: &str, sub: &str, name: &str) -> String {
    let exp = now_ms() / 1000 + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "name": name, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Waits until PostgreSQL has the auction's first `n` bids.
async fn wait_recorded(p: &Platform, id: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + LONG;
    loop {
        let r = p.rest_bids(0, id, 0, 100).await?;
        let count = r.json()["bids"].as_array().map_or(0, Vec::len);
        if count >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id}: {count} of {n} bids recorded in PostgreSQL");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes every Redis key of the auction (with `redis-cli`, as an operator might).
fn lose_live_state(redis_url: &str, id: &str) -> Result<()> {
    let out = Command::new("redis-cli")
        .args([
            "-u",
            redis_url,
            "--scan",
            "--pattern",
            &format!("gavel:{{*}}:{id}:*"),
        ])
        .output()
        .context("redis-cli")?;
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("no Redis keys for {id}");
    }
    let status = Command::new("redis-cli")
        .args(["-u", redis_url, "DEL"])
        .args(&keys)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("redis-cli DEL failed: {status}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidder_page_in_two_browsers() {
    let p = Platform::shared();
    let driver = Driver::start().await.expect("chromedriver starts");
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice", (900, 1000)),
        Browser::open(&driver, "bob", (412, 915)),
    );
    let outcome = match (alice, bob) {
        (Ok(alice), Ok(bob)) => {
            let outcome = async {
                two_bidders(p, &alice, &bob)
                    .await
                    .context("two bidders, soft close, close")?;
                reconnects_without_gap(p, &bob)
                    .await
                    .context("reconnect after a bid-api restart")?;
                signs_in_with_the_identity_provider(p, &alice)
                    .await
                    .context("sign-in with the identity provider")
            }
            .await;
            alice.close().await;
            bob.close().await;
            outcome
        }
        (a, b) => {
            let mut errors = Vec::new();
            for r in [a, b] {
                match r {
                    Ok(browser) => browser.close().await,
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            Err(anyhow!(errors.join("; ")))
        }
    };
    drop(driver);
    if let Err(e) = outcome {
        panic!("{e:#}");
    }
}
