//! Bidders signed in by a real OpenID provider (issue #23): the npm package
//! `oidc-provider` (OpenID-certified) runs under Node.js on a free loopback port and
//! issues RFC 9068 JWT access tokens with the client_credentials grant; a real
//! `gavel-bid-api` finds its keys through discovery. One provider serves every test of
//! this binary; the rotation test restarts a provider of its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::*;
use gavel_engine::testing::{free_port, run_after_exit, temp_dir};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `npm ci` once if `make test` has not installed the provider yet.
fn ensure_node_modules() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap();
    if *done || oidc_dir().join("node_modules/oidc-provider").exists() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(oidc_dir())
        .status()
        .expect("npm (Node.js) is needed for the identity tests");
    assert!(status.success(), "npm ci in {}", oidc_dir().display());
    *done = true;
}

/// A generated key set: the provider's private JWKs and each key's PKCS#8 PEM.
struct Keys {
    file: PathBuf,
    pem: Value,
}

impl Keys {
    /// `specs`: `kid:ALG` (ES256, RS256, PS256, EdDSA); the first key of an algorithm
    /// signs the provider's tokens.
    fn generate(dir: &Path, name: &str, specs: &[&str]) -> Self {
        ensure_node_modules();
        let file = dir.join(format!("{name}.json"));
        let status = Command::new("node")
            .arg(oidc_dir().join("keys.mjs"))
            .arg(&file)
            .args(specs)
            .status()
            .expect("node");
        assert!(status.success());
        let all: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        Self {
            file,
            pem: all["pem"].clone(),
        }
    }

    /// A key file publishing the keys of several sets, in order (the first signs).
    fn combine(dir: &Path, name: &str, sets: &[&Keys]) -> Self {
        let mut keys = Vec::new();
        let mut pem = serde_json::Map::new();
        for set in sets {
            let all: Value =
                serde_json::from_str(&std::fs::read_to_string(&set.file).unwrap()).unwrap();
            keys.extend(all["keys"].as_array().unwrap().iter().cloned());
            pem.extend(set.pem.as_object().unwrap().clone());
        }
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, json!({ "keys": keys }).to_string()).unwrap();
        Self {
            file,
            pem: Value::Object(pem),
        }
    }

    /// Signs `claims` with key `kid` as `alg`, as the provider would.
    fn sign(&self, kid: &str, alg: Algorithm, claims: &Value) -> String {
        self.sign_naming(kid, kid, alg, claims)
    }

    /// Signs with key `kid` a token whose header names `header_kid`.
    fn sign_naming(&self, kid: &str, header_kid: &str, alg: Algorithm, claims: &Value) -> String {
        let pem = self.pem[kid].as_str().expect("known kid").as_bytes();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .unwrap();
        let mut header = Header::new(alg);
        header.kid = Some(header_kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// A running `oidc-provider`, killed on drop (and when the test process dies).
struct Provider {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Certificate and key files when it serves HTTPS, and the CA that signed them.
    tls: Option<Tls>,
}

/// A private CA and a certificate for 127.0.0.1 signed by it (made with openssl).
#[derive(Clone)]
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn generate(dir: &Path) -> Self {
        let path = |name: &str| dir.join(name);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            path("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Gavel test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
        }
    }
}

impl Provider {
    fn start(dir: &Path, keys: &Keys) -> Self {
        Self::start_tls(dir, keys, None)
    }

    fn start_tls(dir: &Path, keys: &Keys, tls: Option<Tls>) -> Self {
        let mut p = Self {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
            tls,
        };
        p.spawn(keys);
        p
    }

    fn spawn(&mut self, keys: &Keys) {
        let log = std::fs::File::create(self.dir.join("provider.log")).unwrap();
        let child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .arg(self.port.to_string())
            .arg(&keys.file)
            .args(self.tls.iter().flat_map(|t| [&t.cert, &t.key]))
            .current_dir(oidc_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start oidc-provider");
        run_after_exit(&format!("kill {} 2>/dev/null", child.id()));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "oidc-provider did not listen: {}",
                std::fs::read_to_string(self.dir.join("provider.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts with another key set: a key rotation at the provider.
    fn restart(&mut self, keys: &Keys) {
        self.stop();
        self.spawn(keys);
    }

    fn issuer(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// An access token for `client` from the provider's token endpoint.
    async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&resource={}&scope={}",
            resource.replace(':', "%3A"),
            scope.replace(' ', "+")
        );
        let mut http = reqwest::Client::builder();
        if let Some(tls) = &self.tls {
            let pem = std::fs::read(&tls.ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let response = http
            .build()
            .unwrap()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token endpoint");
        let value: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        value["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {value}"))
            .to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The provider every test of this binary shares, with one key per algorithm.
struct Shared {
    provider: Provider,
    keys: Keys,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = temp_dir("oidc");
        let keys = Keys::generate(
            &dir,
            "keys",
            &["k-es:ES256", "k-rs:RS256", "k-ps:PS256", "k-ed:EdDSA"],
        );
        let provider = Provider::start(&dir, &keys);
        Shared { provider, keys }
    })
}

fn unix_now() -> i64 {
    now_ms() / 1000
}

/// What the upgrade answered: 101 (and the welcome) or the refusal's status and body.
async fn try_connect(server: &Server, token: &str) -> Result<Client, (u16, Value)> {
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Client::after_connect(ws).await),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// Connects, retrying while the answer is 503 (the provider's keys are being fetched):
/// what a client does with a 503 and its `Retry-After`.
/// Connects, retrying while the keys are unavailable or the token's key is not known yet
/// (a rotated key appears at the next refresh; unknown-kid fetches are rate-limited).
async fn connect_retrying(server: &Server, token: &str) -> Result<Client, (u16, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_connect(server, token).await {
            Err((503, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err((401, body))
                if body["reason"] == "unknown_key" && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn refusal(server: &Server, token: &str) -> (u16, Value) {
    match try_connect(server, token).await {
        Ok(_) => panic!("token accepted: {token}"),
        Err(r) => r,
    }
}

fn oidc_args(issuer: &str) -> Vec<String> {
    vec![
        "--oidc-issuer".into(),
        issuer.into(),
        "--jwt-audience".into(),
        "gavel".into(),
        "--jwt-bid-scope".into(),
        "bid".into(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn provider_tokens_of_every_algorithm_bid_under_their_sub() {
    let shared = shared();
    let env = Env::new().await;
    let server = env.server_without_secret(&args(&oidc_args(&shared.provider.issuer())));
    let id = env.auction(10).await;
    let mut amount = 100;
    for alg in ["ES256", "RS256", "PS256", "EdDSA"] {
        let client = if amount % 20 == 0 { "alice" } else { "bob" };
        let token = shared
            .provider
            .token(client, &format!("urn:gavel:{alg}"), "bid watch")
            .await;
        let mut c = try_connect(&server, &token)
            .await
            .unwrap_or_else(|e| panic!("{alg} token refused: {e:?}"));
        assert_eq!(c.welcome["bidder"], client, "{alg}");
        let reply = c.bid(&id, Some(amount), None, alg).await;
        assert_eq!(reply["type"], "bid_result", "{alg}: {reply}");
        let snapshot = c.subscribe(&id, None).await.pop().unwrap();
        assert_eq!(snapshot["leader"], client, "{alg}");
        amount += 10;
    }
    // A token without the `bid` scope watches but cannot bid.
    let token = shared
        .provider
        .token("watcher", "urn:gavel:ES256", "watch")
        .await;
    let mut watcher = try_connect(&server, &token).await.expect("watcher token");
    assert_eq!(watcher.welcome["bidder"], "watcher");
    assert_eq!(
        watcher.subscribe(&id, None).await.pop().unwrap()["type"],
        "snapshot"
    );
    let reply = watcher.bid(&id, Some(10_000), None, "w").await;
    assert_eq!(reply["code"], "FORBIDDEN", "{reply}");
    assert_eq!(env.seq(&id).await, 4);
}

#[tokio::test]
async fn refused_tokens_say_why_and_write_nothing() {
    let shared = shared();
    let keys = &shared.keys;
    let issuer = shared.provider.issuer();
    let env = Env::new().await;
    let server = env.server_without_secret(&args(&oidc_args(&issuer)));
    let id = env.auction(10).await;
    let now = unix_now();
    let claims = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = json!({"sub":"mallory","iss":issuer,"aud":"gavel","scope":"bid","exp":now + 600,"iat":now})
            .as_object()
            .unwrap()
            .clone();
        change(&mut c);
        Value::Object(c)
    };
    // A well-formed token signed with a published key verifies (the control).
    let good = keys.sign("k-es", Algorithm::ES256, &claims(&|_| {}));
    let control = try_connect(&server, &good).await.expect("control token");
    assert_eq!(control.welcome["bidder"], "mallory");
    drop(control);

    let ec_public_jwk = reqwest::get(format!("{issuer}/jwks"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k-es".into());
        jsonwebtoken::encode(
            &header,
            &claims(&|_| {}),
            &EncodingKey::from_secret(ec_public_jwk.as_bytes()),
        )
        .unwrap()
    };
    let payload = good.split('.').nth(1).unwrap().to_owned();
    let alg_none = format!("eyJhbGciOiJub25lIiwia2lkIjoiay1lcyJ9.{payload}.");
    let other_audience = shared
        .provider
        .token("alice", "urn:other", "bid watch")
        .await;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong iss",
            keys.sign(
                "k-es",
                Algorithm::ES256,
                &claims(&|c| {
                    c.insert("iss".into(), json!("https://evil.example"));
                }),
            ),
            "issuer",
        ),
        (
            "no iss",
            keys.sign(
                "k-es",
                Algorithm::ES256,
                &claims(&|c| {
                    c.remove("iss");
                }),
            ),
            "issuer",
        ),
        ("wrong aud (from the provider)", other_audience, "audience"),
        (
            "expired",
            keys.sign(
                "k-es",
                Algorithm::ES256,
                &claims(&|c| {
                    c.insert("exp".into(), json!(now - 5));
                }),
            ),
            "expired",
        ),
        (
            "not yet valid",
            keys.sign(
                "k-es",
                Algorithm::ES256,
                &claims(&|c| {
                    c.insert("nbf".into(), json!(now + 300));
                }),
            ),
            "not_yet_valid",
        ),
        (
            "HS256 with the public key as secret",
            hs256_with_public_key,
            "algorithm",
        ),
        ("alg none", alg_none, "malformed"),
        (
            "ES256 token naming the RSA key",
            keys.sign_naming("k-es", "k-rs", Algorithm::ES256, &claims(&|_| {})),
            "algorithm",
        ),
        (
            "PS256 token signed by the RS256 key",
            keys.sign("k-rs", Algorithm::PS256, &claims(&|_| {})),
            "algorithm",
        ),
        (
            "kid that does not exist",
            keys.sign_naming("k-es", "no-such-key", Algorithm::ES256, &claims(&|_| {})),
            "unknown_key",
        ),
        (
            "signature of another key",
            {
                let forged = keys.sign(
                    "k-es",
                    Algorithm::ES256,
                    &claims(&|c| {
                        c.insert("sub".into(), json!("admin"));
                    }),
                );
                let mut parts: Vec<&str> = forged.split('.').collect();
                let sig = good.split('.').nth(2).unwrap();
                parts[2] = sig;
                parts.join(".")
            },
            "signature",
        ),
    ];
    for (what, token, reason) in cases {
        let (status, body) = refusal(&server, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], "UNAUTHENTICATED", "{what}: {body}");
        assert_eq!(body["reason"], reason, "{what}: {body}");
    }
    // Nothing was written: the auction has no event and PostgreSQL no bid.
    assert_eq!(env.seq(&id).await, 0);
    assert_eq!(env.store.bid_count(&id).await.unwrap_or(0), 0);
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("gavel_auth_refused_total{reason=\"unknown_key\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn keys_rotate_without_restart_and_survive_the_provider_going_down() {
    let dir = temp_dir("oidc-rotation");
    let old = Keys::generate(&dir, "old", &["old:ES256"]);
    let mut provider = Provider::start(&dir, &old);
    let env = Env::new().await;
    let mut flags = oidc_args(&provider.issuer());
    flags.extend(
        [
            "--jwks-refresh-interval",
            "1s",
            "--jwks-min-refresh-interval",
            "500ms",
        ]
        .map(String::from),
    );
    let server = env.server_without_secret(&args(&flags));
    let id = env.auction(10).await;

    let token_old = provider.token("alice", "urn:gavel:ES256", "bid").await;
    let mut alice = try_connect(&server, &token_old).await.expect("old key");
    assert_eq!(
        alice.bid(&id, Some(100), None, "1").await["type"],
        "bid_result"
    );

    // Rotation: the provider publishes a new key (which now signs) beside the old one.
    let new = Keys::generate(&dir, "new", &["new:ES256"]);
    provider.restart(&Keys::combine(&dir, "both", &[&new, &old]));
    let token_new = provider.token("bob", "urn:gavel:ES256", "bid").await;
    assert_eq!(
        jsonwebtoken::decode_header(&token_new)
            .unwrap()
            .kid
            .as_deref(),
        Some("new")
    );
    let mut bob = connect_retrying(&server, &token_new)
        .await
        .expect("a token of the new key is accepted without a restart");
    assert_eq!(
        bob.bid(&id, Some(200), None, "2").await["type"],
        "bid_result"
    );
    assert!(
        connect_retrying(&server, &token_old).await.is_ok(),
        "old key still published"
    );

    // The old key is removed: refused once the cache has refreshed.
    provider.restart(&new);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect_retrying(&server, &token_old).await {
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "old key never dropped"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err((status, body)) => {
                assert_eq!(
                    (status, &body["reason"]),
                    (401, &json!("unknown_key")),
                    "{body}"
                );
                break;
            }
        }
    }
    assert!(connect_retrying(&server, &token_new).await.is_ok());

    // The provider goes down: cached keys still verify, unknown kids are refused with
    // 503 UNAVAILABLE (retry later), and the bid-api stays ready.
    provider.stop();
    let ghost = Keys::generate(&dir, "ghost", &["ghost:ES256"]);
    let ghost_token = ghost.sign(
        "ghost",
        Algorithm::ES256,
        &json!({"sub":"g","iss":provider.issuer(),"aud":"gavel","scope":"bid","exp":unix_now() + 600}),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = refusal(&server, &ghost_token).await;
        if status == 503 {
            assert_eq!(body["code"], "UNAVAILABLE", "{body}");
            assert_eq!(body["reason"], "keys_unavailable", "{body}");
            break;
        }
        assert_eq!(body["reason"], "unknown_key", "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never unavailable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut bob2 = try_connect(&server, &token_new)
        .await
        .expect("cached key verifies while the provider is down");
    assert_eq!(
        bob2.bid(&id, Some(300), None, "3").await["type"],
        "bid_result"
    );
    assert_eq!(
        bob.bid(&id, Some(400), None, "4").await["type"],
        "bid_result"
    );
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200, "provider down is not a readiness failure");
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("gavel_jwks_up 0"), "{metrics}");
    // Let a few failed refreshes happen: the failure is logged once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logs = server.logs();
    assert_eq!(
        logs.matches("cannot fetch the identity provider's signing keys")
            .count(),
        1,
        "{logs}"
    );
    drop(alice);
}

#[tokio::test]
async fn a_token_expiring_on_an_open_socket_is_refreshed_or_closed_with_4001() {
    let shared = shared();
    let issuer = shared.provider.issuer();
    let env = Env::new().await;
    let mut flags = oidc_args(&issuer);
    flags.extend(
        [
            "--heartbeat-interval",
            "300ms",
            "--token-refresh-grace",
            "3s",
        ]
        .map(String::from),
    );
    let server = env.server_without_secret(&args(&flags));
    let id = env.auction(10).await;
    // Everything slow (a provider round trip, a key generated by openssl) is made before
    // the short token expires, so that the grace period only has socket messages to cover
    // however loaded the machine is.
    let bobs = shared.provider.token("bob", "urn:gavel:ES256", "bid").await;
    let ghost = Keys::generate(&temp_dir("oidc-ghost"), "ghost", &["ghost:ES256"]);
    let fresh = shared
        .provider
        .token("alice", "urn:gavel:ES256", "bid")
        .await;
    let short = |sub: &str| {
        shared.keys.sign(
            "k-es",
            Algorithm::ES256,
            &json!({"sub":sub,"iss":issuer,"aud":"gavel","scope":"bid","exp":unix_now() + 2}),
        )
    };

    // Refreshed in time: the connection goes on bidding under the same bidder.
    let mut alice = try_connect(&server, &short("alice")).await.expect("alice");
    assert_eq!(
        alice.bid(&id, Some(100), None, "1").await["type"],
        "bid_result"
    );
    let notice = alice.next_of("error").await;
    assert_eq!(notice["code"], "UNAUTHENTICATED", "{notice}");
    assert!(
        notice["message"].as_str().unwrap().contains("refresh"),
        "{notice}"
    );
    let refused = alice.bid(&id, Some(200), None, "2").await;
    assert_eq!(refused["code"], "UNAUTHENTICATED", "{refused}");
    // Another bidder's token cannot take over the connection.
    alice.send(json!({"type":"refresh","token":bobs})).await;
    let wrong = alice.next_of("error").await;
    assert!(
        wrong["message"].as_str().unwrap().contains("bidder"),
        "{wrong}"
    );
    // A token naming a key the bid-api has not cached is not waited for on the socket.
    let ghostly = ghost.sign(
        "ghost",
        Algorithm::ES256,
        &json!({"sub":"alice","iss":issuer,"aud":"gavel","scope":"bid","exp":unix_now() + 600}),
    );
    alice.send(json!({"type":"refresh","token":ghostly})).await;
    let unavailable = alice.next_of("error").await;
    assert_eq!(unavailable["code"], "UNAVAILABLE", "{unavailable}");
    alice.send(json!({"type":"refresh","token":fresh})).await;
    let refreshed = alice.next_of("refreshed").await;
    assert_eq!(refreshed["bidder"], "alice");
    assert!(refreshed["expires_at"].as_i64().unwrap() > now_ms());
    assert_eq!(
        alice.bid(&id, Some(200), None, "3").await["type"],
        "bid_result"
    );

    // Not refreshed: closed with 4001 after the grace period.
    let mut carol = try_connect(&server, &short("carol")).await.expect("carol");
    assert_eq!(carol.close_code().await, Some(4001));
    // Alice, refreshed, is still connected.
    assert_eq!(alice.sync().await.len(), 0);
}

/// A provider on a private CA: refused (keys unavailable) until its CA is trusted with
/// `--oidc-ca-file`, then its tokens verify over rustls.
#[tokio::test]
async fn a_provider_on_a_private_ca_needs_its_ca_file() {
    let dir = temp_dir("oidc-tls");
    let keys = Keys::generate(&dir, "keys", &["tls-key:ES256"]);
    let tls = Tls::generate(&dir);
    let provider = Provider::start_tls(&dir, &keys, Some(tls.clone()));
    let issuer = provider.issuer();
    assert!(issuer.starts_with("https://"));
    let token = provider.token("alice", "urn:gavel:ES256", "bid").await;
    let env = Env::new().await;

    let untrusting = env.server_without_secret(&args(&oidc_args(&issuer)));
    let (status, body) = refusal(&untrusting, &token).await;
    assert_eq!(
        (status, &body["reason"]),
        (503, &json!("keys_unavailable")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{body}"
    );

    let mut flags = oidc_args(&issuer);
    flags.extend([
        "--oidc-ca-file".to_owned(),
        tls.ca.to_string_lossy().into_owned(),
    ]);
    let trusting = env.server_without_secret(&args(&flags));
    let mut alice = connect_retrying(&trusting, &token)
        .await
        .expect("CA trusted");
    assert_eq!(alice.welcome["bidder"], "alice");
    let id = env.auction(10).await;
    assert_eq!(
        alice.bid(&id, Some(100), None, "1").await["type"],
        "bid_result"
    );
}
