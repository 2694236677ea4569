//! The `gavel`, `gavel-local` and `gavel-demo` binaries against a real local platform.

mod common;

use std::time::Duration;

use common::{open, platform, run_bin, run_bin_env, token};
use gavel_cli::AuctionSpec;

/// The `gavel` CLI bids (exit 0 when accepted, 2 when refused) and watches until the
/// close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_bids_and_watches() {
    let gavel = env!("CARGO_BIN_EXE_gavel");
    let id = open(
        "cli",
        AuctionSpec::new("cli", 1000, 50, Duration::from_secs(6)),
    )
    .await;
    let url = platform().target.ws_url(1).to_owned();
    let watch = {
        let (id, url) = (id.clone(), url.clone());
        tokio::spawn(async move { run_bin(gavel, &["watch", &id, "--url", &url]).await })
    };
    let (code, out) = run_bin(
        gavel,
        &[
            "bid", &id, "--amount", "1000", "--bidder", "zed", "--url", &url,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("accepted: leading"), "{out}");
    let (code, out) = run_bin(
        gavel,
        &[
            "bid", &id, "--amount", "1010", "--bidder", "yan", "--url", &url,
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("BID_TOO_LOW") && out.contains("USD 10.50"),
        "{out}"
    );
    let (code, out) = run_bin(gavel, &["bid", &id, "--amount", "1000", "--url", &url]).await;
    assert_eq!(code, Some(4), "bidding without an identity: {out}");
    // An unknown auction ends the command at once with the server's code (not a timeout),
    // for a bid and for a watch; an unreachable server and a bad command line have their
    // own statuses too.
    let missing = format!("{}/no-such-auction", id.split('/').next().unwrap_or("e2e"));
    for args in [
        vec![
            "bid", &missing, "--amount", "100", "--bidder", "x", "--url", &url,
        ],
        vec!["watch", &missing, "--url", &url],
    ] {
        let (code, out) = run_bin(gavel, &args).await;
        assert_eq!(code, Some(3), "{args:?}: {out}");
        assert!(out.contains("UNKNOWN_AUCTION"), "{args:?}: {out}");
    }
    let closed_port = format!(
        "ws://127.0.0.1:{}/v1/ws",
        gavel_cli::servers::free_port().expect("a port")
    );
    let (code, out) = run_bin(gavel, &["watch", &id, "--url", &closed_port]).await;
    assert_eq!(code, Some(5), "unreachable server: {out}");
    let (code, out) = run_bin(gavel, &["bid", &id, "--amount", "ten", "--url", &url]).await;
    assert_eq!(code, Some(64), "bad command line: {out}");
    {
        let secret = platform().local.jwt_secret.clone();
        // A token from a file, then from GAVEL_TOKEN: both are too low, which proves the
        // bid was taken as the token's bidder (no identity exits 1 before bidding).
        let file = std::env::temp_dir().join(format!("gavel-cli-token-{}", std::process::id()));
        std::fs::write(&file, format!("{}\n", token(&secret, "tok-1", "Tok"))).unwrap();
        let path = file.to_string_lossy().into_owned();
        let (code, out) = run_bin(
            gavel,
            &[
                "bid",
                &id,
                "--amount",
                "1000",
                "--token-file",
                &path,
                "--url",
                &url,
            ],
        )
        .await;
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains("tok-1") && out.contains("BID_TOO_LOW"),
            "{out}"
        );
        let env_token = token(&secret, "tok-2", "Tok2");
        let (code, out) = run_bin_env(
            gavel,
            &["bid", &id, "--amount", "1000", "--url", &url],
            &[("GAVEL_TOKEN", &env_token)],
        )
        .await;
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("tok-2"), "{out}");
        let _ = std::fs::remove_file(&file);
    }
    let (code, out) = watch.await.expect("watch task");
    assert_eq!(code, Some(0), "{out}");
    // The price event, or the snapshot if the watcher subscribed after the bid.
    assert!(
        out.contains("USD 10.00 - leader zed") || out.contains("USD 10.00, leader zed"),
        "{out}"
    );
    assert!(out.contains("CLOSED: winner zed at USD 10.00"), "{out}");
}

/// The pid of the child of the `gavel-local run` of `dir` whose command line contains
/// `program`.
fn child_process(dir: &std::path::Path, program: &str) -> Option<u32> {
    let parent: u32 = std::fs::read_to_string(dir.join("local.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == parent && String::from_utf8_lossy(&cmdline).contains(program)).then_some(pid)
    })
}

/// `make up`, `make demo` and `make down` in one: `gavel-local up` starts a second local
/// platform in a temporary folder, `gavel-demo` runs against it, `gavel-local down`
/// stops it. Local platforms only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_demo_down() {
    let local = env!("CARGO_BIN_EXE_gavel-local");
    let demo = env!("CARGO_BIN_EXE_gavel-demo");
    let dir = gavel_cli::servers::temp_dir("local-up").expect("a folder");
    let dir_s = dir.display().to_string();
    let (code, out) = run_bin(local, &["--dir", &dir_s, "new", "shop/early"]).await;
    assert_eq!(code, Some(1), "new before up: {out}");
    assert!(out.contains("Gavel is not running"), "{out}");
    let (code, out) = run_bin(local, &["--dir", &dir_s, "up"]).await;
    assert_eq!(code, Some(0), "gavel-local up: {out}");
    // `new` refuses what the operator would refuse, before writing anything.
    for (args, why) in [
        (vec!["new", "Shop/Lot"], "Shop/Lot"),
        (vec!["new", "lot"], "<namespace>/<name>"),
        (vec!["new", "shop/lot", "--currency", "ZZZ"], "ISO 4217"),
        (
            vec!["new", "shop/lot", "--currency", "JPY"],
            "more decimals than JPY has (0)",
        ),
    ] {
        let mut full = vec!["--dir", dir_s.as_str()];
        full.extend(args.iter().copied());
        let (code, out) = run_bin(local, &full).await;
        assert_eq!(code, Some(1), "{args:?}: {out}");
        assert!(out.contains(why), "{args:?}: {out}");
    }
    let manifests = std::fs::read_dir(dir.join("manifests"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(manifests, 0, "a refused `new` wrote a file");
    let env = gavel_cli::envfile::read(&dir.join("env"));
    for key in [
        "GAVEL_WS_URLS",
        "GAVEL_HTTP_URLS",
        "GAVEL_DATABASE_URL",
        "GAVEL_REDIS_URL",
        "GAVEL_MANIFESTS",
    ] {
        assert!(
            env.contains_key(key),
            "{key} missing from .gavel/env: {env:?}"
        );
    }
    assert_eq!(env["GAVEL_WS_URLS"].split(',').count(), 2);
    let (code, status) = run_bin(local, &["--dir", &dir_s, "status"]).await;
    assert_eq!(code, Some(0), "{status}");
    // A reader that has gone (`| head -1`) ends it quietly, without a panic.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let piped = std::process::Command::new(local)
        .args(["--dir", &dir_s, "status"])
        .stdout(writer)
        .output()
        .expect("run gavel-local status");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "closed pipe: {stderr}");

    for process in ["redis", "postgres", "bid-api-1", "bid-api-2", "operator"] {
        assert!(
            status
                .lines()
                .any(|l| l.trim_start().starts_with(process) && l.contains(" up ")),
            "{process} not reported up:\n{status}"
        );
    }

    let env_file = dir.join("env").display().to_string();
    let (demo_code, demo_out) = run_bin(demo, &["--env-file", &env_file, "--pace-ms", "100"]).await;
    // #18: `status` checks each process: with the operator dead it says which one is down
    // (it said "Gavel is up" before).
    let operator = child_process(&dir, "gavel-operator")
        .unwrap_or_else(|| panic!("no operator process under gavel-local"));
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &operator.to_string()])
        .status();
    let (partly_code, partly) = run_bin(local, &["--dir", &dir_s, "status"]).await;
    // The demo prints each auction's bidder page, served by the platform.
    let page = demo_out
        .split_once("watch it in a browser: ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(str::to_owned);
    let served = match &page {
        Some(url) => gavel_cli::http::get(url).await.ok(),
        None => None,
    };
    let (down_code, down_out) = run_bin(local, &["--dir", &dir_s, "down"]).await;
    let page = page.unwrap_or_else(|| panic!("the demo printed no page address:\n{demo_out}"));
    assert!(page.contains("/auctions/demo/strat-1962-"), "{page}");
    let served = served.unwrap_or_else(|| panic!("{page} did not answer"));
    assert_eq!(served.status, 200, "{page}");
    assert!(served.body.contains("id=\"auction-view\""), "{page}");
    assert_eq!(demo_code, Some(0), "gavel-demo: {demo_out}");
    for expected in [
        "carol leads at USD 1.92",
        "CLOSED: winner carol at USD 1.92",
        "SOFT CLOSE: end extended",
        "table results",
        "phase Closed, winner carol, finalPrice 192",
    ] {
        assert!(
            demo_out.contains(expected),
            "demo output lacks {expected:?}:\n{demo_out}"
        );
    }
    assert_eq!(
        partly_code,
        Some(1),
        "status with the operator killed: {partly}"
    );
    assert!(
        partly
            .lines()
            .any(|l| l.trim_start().starts_with("operator") && l.contains("DOWN")),
        "{partly}"
    );
    assert!(partly.contains("down: operator;"), "{partly}");
    assert!(
        partly
            .lines()
            .any(|l| l.trim_start().starts_with("bid-api-1") && l.contains(" up ")),
        "{partly}"
    );
    assert_eq!(down_code, Some(0), "gavel-local down: {down_out}");
    assert!(!dir.join("env").exists(), "down leaves no env file");
    // Log files are plain text (no colour codes) and hold no secret.
    let secret = &env["GAVEL_JWT_SECRET"];
    let logs = std::fs::read_dir(dir.join("logs"))
        .expect("gavel-local keeps its processes' logs")
        .filter_map(|e| Some(e.ok()?.path()))
        .chain([dir.join("local.log")]);
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains('\x1b'), "colour codes in {}", log.display());
        assert!(
            !text.contains(secret.as_str()),
            "the secret in {}",
            log.display()
        );
    }
    assert!(
        !out.contains(secret.as_str()),
        "`gavel-local up` printed the secret:\n{out}"
    );
    let (code, _) = run_bin(local, &["--dir", &dir_s, "status"]).await;
    assert_eq!(code, Some(1), "status after down");
    let url = env["GAVEL_HTTP_URLS"]
        .split(',')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        gavel_cli::http::get(&format!("{url}/healthz"))
            .await
            .is_err(),
        "bid-api still answers after down"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gavel show NS/NAME` until its output contains `needle` (the bid history is read from
/// PostgreSQL, which the flusher fills a moment after the bid); the last output.
async fn show_until(gavel: &str, id: &str, http: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = run_bin(gavel, &["show", id, "--http-url", http]).await;
        assert_eq!(code, Some(0), "{out}");
        if out.contains(needle) || std::time::Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Cancels an auction of the platform's manifests folder (`spec.cancel: true`).
async fn cancel(id: &str) {
    let (ns, name) = id.split_once('/').expect("ns/name");
    let dir = &platform().target.manifests;
    let file = gavel_cli::manifest::manifest_path(dir, ns, name);
    let mut auction =
        gavel_crds::manifest::from_yaml(&std::fs::read_to_string(&file).expect("the manifest"))
            .expect("a valid manifest");
    auction.spec.cancel = Some(true);
    let yaml = serde_yaml::to_string(&auction).expect("yaml");
    gavel_cli::manifest::write_manifest(dir, ns, name, &yaml)
        .await
        .expect("rewrite the manifest");
}

/// #18 part 3: `gavel list`, `gavel show`, the `watch` fixes (dates, time left, winner or
/// "reserve not met" after the close, CANCELLED, "no reserve"), `--json` and `--quiet`,
/// amounts typed as read and printed with the currency's ISO 4217 decimals, completions
/// and the man page — the real binary against a real platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_watch_json_quiet_and_amounts() {
    let gavel = env!("CARGO_BIN_EXE_gavel");
    let p = platform();
    let url = p.target.ws_url(0).to_owned();
    let http = p.target.http_url(1).to_owned();
    let mut dinar = AuctionSpec::new("Dinar lot", 1000, 5, Duration::from_secs(300));
    dinar.currency = "BHD".into();
    let b = open("bhd", dinar).await;
    let c = open(
        "cancel",
        AuctionSpec::new("Cancelled lot", 100, 10, Duration::from_secs(300)),
    )
    .await;
    // Soft close over its whole life: any bid moves its end to 400 s after the bid.
    let d = open(
        "extend",
        AuctionSpec::new("Extended lot", 100, 10, Duration::from_secs(300))
            .soft_close(Duration::from_secs(300), Duration::from_secs(400)),
    )
    .await;
    // Created last, as it closes first. Out of Redis as soon as its result is recorded:
    // `show` after the close reads PostgreSQL's record (reserve included).
    let mut spec = AuctionSpec::new("Show me", 1000, 50, Duration::from_secs(15)).reserve(5000);
    spec.retention = Some("0s".into());
    let a = open("show", spec).await;
    let watch = |args: Vec<String>| {
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::run_split(gavel, &args, &[]).await
        })
    };
    let text_watch = watch(vec!["watch".into(), a.clone(), "--url".into(), url.clone()]);
    let json_watch = watch(vec![
        "--json".into(),
        "watch".into(),
        a.clone(),
        "--url".into(),
        url.clone(),
    ]);
    let quiet_watch = watch(vec![
        "watch".into(),
        a.clone(),
        "--quiet".into(),
        "--url".into(),
        url.clone(),
    ]);
    let cancel_watch = watch(vec!["watch".into(), c.clone(), "--url".into(), url.clone()]);

    // Amounts typed as read, converted with the auction's currency.
    let (code, out) = run_bin(
        gavel,
        &[
            "bid", &a, "--amount", "10.00", "--bidder", "ann", "--url", &url,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("accepted: leading; price USD 10.00"), "{out}");
    let (code, out) = run_bin(
        gavel,
        &[
            "bid", &a, "--amount", "10.505", "--bidder", "ann", "--url", &url,
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("more decimals than USD has (2)"), "{out}");
    let (code, out) = run_bin(
        gavel,
        &[
            "bid", &b, "--amount", "1.234", "--bidder", "ann", "--url", &url,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("price BHD 1.234"),
        "ISO 4217: 3 decimals: {out}"
    );
    // --quiet: a refused bid says why on stderr, an accepted one prints nothing.
    let (code, stdout, stderr) = common::run_split(
        gavel,
        &[
            "bid", &b, "--amount", "1", "--bidder", "bo", "--quiet", "--url", &url,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("BID_TOO_LOW"), "{stderr}");

    // list: text (the REST address derived from --url), JSON lines, ids.
    let (code, out) = run_bin(gavel, &["list", "--url", &url]).await;
    assert_eq!(code, Some(0), "{out}");
    for id in [&a, &b, &c] {
        assert!(out.contains(id.as_str()), "{id} not listed:\n{out}");
    }
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line(&a).contains("USD 10.00") && line(&a).contains("(in "),
        "{out}"
    );
    assert!(line(&b).contains("BHD 1.234"), "{out}");
    assert!(line(&c).contains("from USD 1.00"), "{out}");
    let (code, stdout, _) =
        common::run_split(gavel, &["--json", "list", "--http-url", &http], &[]).await;
    assert_eq!(code, Some(0));
    let listed: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let of_a = listed
        .iter()
        .find(|v| v["auction"] == a.as_str())
        .unwrap_or_else(|| panic!("{a} not in --json list:\n{stdout}"));
    assert_eq!(of_a["price"], 1000);
    assert_eq!(of_a["currency"], "USD");
    let (_, stdout, _) =
        common::run_split(gavel, &["list", "--quiet", "--http-url", &http], &[]).await;
    assert!(stdout.lines().any(|l| l == b), "{stdout}");
    assert!(stdout.lines().all(|l| !l.contains(' ')), "{stdout}");

    // show while open.
    let out = show_until(gavel, &a, &http, "ann").await;
    for expected in [
        "phase     open",
        "price     USD 10.00 (leader ann), 1 bid(s); minimum next bid USD 10.50",
        "reserve   reserve not met",
        "starts    when provisioned",
        "extended  no",
        " UTC (in ",
    ] {
        assert!(out.contains(expected), "show lacks {expected:?}:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("#1") && l.contains("ann") && l.contains("USD 10.00")),
        "bid history:\n{out}"
    );
    let out = show_until(gavel, &b, &http, "ann").await;
    assert!(out.contains("reserve   no reserve"), "{out}");
    let (code, out) = run_bin(
        gavel,
        &[
            "bid", &d, "--amount", "1.00", "--bidder", "ann", "--url", &url,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let out = show_until(gavel, &d, &http, "extended  by").await;
    assert!(
        out.contains("extended  by ") && out.contains("(soft close; scheduled end 20"),
        "{out}"
    );
    let (code, out) = run_bin(gavel, &["show", "e2e/no-such-lot", "--http-url", &http]).await;
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("UNKNOWN_AUCTION"), "{out}");
    let (code, stdout, _) =
        common::run_split(gavel, &["show", &b, "--json", "--http-url", &http], &[]).await;
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(shown["snapshot"]["phase"], "open");
    assert_eq!(shown["snapshot"]["has_reserve"], false);
    assert_eq!(shown["bids"][0]["amount"], 1234);

    // A cancelled auction says so, in watch and show.
    cancel(&c).await;
    let (code, stdout, stderr) = cancel_watch.await.expect("watch task");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("CANCELLED: no winner, no sale"), "{stdout}");
    let out = show_until(gavel, &c, &http, "cancelled").await;
    assert!(out.contains("phase     cancelled"), "{out}");
    assert!(
        out.contains("result    cancelled: no winner, no sale"),
        "{out}"
    );

    // After the close: "reserve not met", never "leader"; dates with the time left.
    let (code, stdout, stderr) = text_watch.await.expect("watch task");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("CLOSED: reserve not met, no winner (final price USD 10.00)"),
        "{stdout}"
    );
    let year = gavel_cli::feed::date_time(gavel_cli::manifest::now_ms())[..4].to_owned();
    assert!(stdout.contains(&format!("ends {year}-")), "{stdout}");
    assert!(stdout.contains(" UTC (in "), "{stdout}");
    let (code, stdout, _) = json_watch.await.expect("watch task");
    assert_eq!(code, Some(0), "{stdout}");
    let types: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
            v["type"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(
        types.first().map(String::as_str),
        Some("welcome"),
        "{stdout}"
    );
    assert_eq!(types.last().map(String::as_str), Some("closed"), "{stdout}");
    let (code, stdout, _) = quiet_watch.await.expect("watch task");
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "--quiet: the closing line only: {stdout}"
    );
    let out = show_until(gavel, &a, &http, "result").await;
    assert!(out.contains("phase     closed"), "{out}");
    assert!(
        out.contains("result    reserve not met: no winner (final price USD 10.00)"),
        "{out}"
    );
    assert!(
        out.contains("last bid by ann") && !out.contains("leader"),
        "{out}"
    );
    assert!(out.contains("ended     "), "{out}");

    // Completions and the man page come from the same definitions.
    let (code, out) = run_bin(gavel, &["completions", "bash"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("_gavel()") && out.contains("watch") && out.contains("--json"));
    let (code, out) = run_bin(gavel, &["man"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains(".TH gavel 1") && out.contains("Exit status"),
        "{out}"
    );
}
