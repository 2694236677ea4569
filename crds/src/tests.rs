use super::*;
use kube::core::cel::Validator;
use serde_json::{Value, json};

const EXAMPLE: &str = r#"
apiVersion: gavel.dev/v1alpha1
kind: Auction
metadata: { name: strat-1962, namespace: shop }
spec:
  title: "1962 Fender Stratocaster"
  currency: USD
  startingPrice: 10000
  reservePrice: 50000
  increments:
    - { from: 0,      step: 100 }
    - { from: 10000,  step: 500 }
    - { from: 100000, step: 1000 }
  startsAt: "2026-12-01T18:00:00Z"
  endsAt:   "2026-12-01T19:00:00Z"
  softClose: { window: 60s, extension: 60s }
  bidLimit: { perSecond: 5, burst: 10 }
"#;

fn example() -> Auction {
    serde_yaml::from_str(EXAMPLE).unwrap()
}

fn committed_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/auction.yaml");
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = crd_yaml().unwrap();
    assert!(
        committed_yaml() == generated,
        "crds/auction.yaml is stale: run `cargo run -p gavel-crds --bin crdgen > crds/auction.yaml`"
    );
}

fn schema_json() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every property of the schema, with its dotted path.
fn properties(schema: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, prop) in props {
            let p = format!("{path}.{name}");
            out.push((p.clone(), prop.clone()));
            properties(prop, &p, out);
        }
    }
    if schema["items"].is_object() {
        properties(&schema["items"], &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_has_a_description() {
    let mut props = Vec::new();
    properties(&schema_json(), "auction", &mut props);
    assert!(props.len() > 30, "{props:?}");
    for (path, prop) in props {
        let text = prop["description"].as_str().unwrap_or_default();
        assert!(text.len() > 10, "{path} has no useful description");
    }
}

#[test]
fn yaml_has_what_a_platform_team_needs() {
    let yaml: Value = serde_yaml::from_str(&committed_yaml()).unwrap();
    let spec = &yaml["spec"];
    assert_eq!(spec["group"], "gavel.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "Auction");
    assert_eq!(spec["names"]["plural"], "auctions");
    assert_eq!(spec["names"]["shortNames"], json!(["auc"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    for expected in [
        ("Phase", ".status.phase"),
        ("Price", ".status.currentPrice"),
        ("Bids", ".status.bidCount"),
        ("Ends", ".status.effectiveEndsAt"),
        ("Winner", ".status.winner"),
        ("Age", ".metadata.creationTimestamp"),
    ] {
        assert!(
            columns.contains(&expected),
            "{expected:?} not in {columns:?}"
        );
    }
    let root = &version["schema"]["openAPIV3Schema"];
    let rules: Vec<String> = root["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["message"].is_string(), "rule without a message: {r}");
            r["rule"].as_str().unwrap().to_owned()
        })
        .collect();
    let has = |needle: &str| rules.iter().any(|r| r.contains(needle));
    assert!(has("self.spec.endsAt > self.spec.startsAt"));
    assert!(has("self.spec.currency in ['AED'"));
    assert!(has("self.spec.reservePrice >= self.spec.startingPrice"));
    assert!(has("self.spec.increments[0].from == 0"));
    assert!(has("isSorted()"));
    assert!(has("t.step > 0"));
    assert!(has("oldSelf.spec.startingPrice") && has("oldSelf.spec.increments"));
    assert!(has("oldSelf.spec.reservePrice"));
    let spec_schema = &root["properties"]["spec"];
    assert_eq!(spec_schema["properties"]["endsAt"]["format"], "date-time");
    assert_eq!(spec_schema["properties"]["increments"]["maxItems"], 32);
    assert_eq!(
        spec_schema["properties"]["increments"]["items"]["properties"]["step"]["minimum"],
        1.0
    );
    assert!(
        !committed_yaml()
            .contains("nullable: true\n                type: integer\n              softClose"),
        "spec fields must not be nullable"
    );
    assert!(spec_schema["properties"]["startsAt"]["nullable"].is_null());
}

fn validate(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    Validator::new()
        .validate(&schema_json(), obj, old)
        .map_err(|e| format!("{e:?}"))
}

fn example_json() -> Value {
    serde_json::to_value(example()).unwrap()
}

#[test]
fn cel_accepts_the_design_example() {
    validate(&example_json(), None).unwrap();
    let mut minimal = example_json();
    let spec = minimal["spec"].as_object_mut().unwrap();
    for optional in ["startsAt", "reservePrice", "softClose", "bidLimit"] {
        spec.remove(optional);
    }
    validate(&minimal, None).unwrap();
}

#[test]
fn cel_refuses_cross_field_errors_with_their_message() {
    type Change = fn(&mut Value);
    let cases: [(&str, Change); 8] = [
        ("currency must be an ISO 4217 code", |s| {
            s["currency"] = json!("XYZ")
        }),
        ("currency must be an ISO 4217 code", |s| {
            s["currency"] = json!("XAU")
        }),
        ("endsAt must be after startsAt", |s| {
            s["endsAt"] = json!("2026-12-01T17:00:00Z")
        }),
        ("reservePrice must be at least startingPrice", |s| {
            s["reservePrice"] = json!(9_999)
        }),
        ("the first increment tier must start from 0", |s| {
            s["increments"] = json!([{ "from": 5, "step": 1 }])
        }),
        (
            "strictly ascending",
            |s| s["increments"] = json!([{ "from": 0, "step": 1 }, { "from": 10, "step": 2 }, { "from": 5, "step": 3 }]),
        ),
        (
            "strictly ascending",
            |s| s["increments"] = json!([{ "from": 0, "step": 1 }, { "from": 0, "step": 2 }]),
        ),
        ("softClose", |s| {
            s["softClose"] = json!({ "window": "25h", "extension": "60s" })
        }),
    ];
    for (message, change) in cases {
        let mut obj = example_json();
        change(&mut obj["spec"]);
        let err = validate(&obj, None).expect_err(message);
        assert!(err.contains(message), "expected {message:?} in {err}");
    }
}

fn with_phase(mut obj: Value, phase: &str) -> Value {
    obj["status"] = json!({ "phase": phase });
    obj
}

#[test]
fn cel_freezes_pricing_once_open() {
    let old_open = with_phase(example_json(), "Open");
    let mut new = old_open.clone();
    new["spec"]["startingPrice"] = json!(20_000);
    let err = validate(&new, Some(&old_open)).unwrap_err();
    assert!(
        err.contains("cannot change once the auction has opened"),
        "{err}"
    );

    for change in [
        json!({ "reservePrice": 60_000 }),
        json!({ "increments": [{ "from": 0, "step": 200 }] }),
    ] {
        let mut new = old_open.clone();
        for (k, v) in change.as_object().unwrap() {
            new["spec"][k] = v.clone();
        }
        assert!(validate(&new, Some(&old_open)).is_err(), "{change}");
    }
    let mut dropped_reserve = old_open.clone();
    dropped_reserve["spec"]
        .as_object_mut()
        .unwrap()
        .remove("reservePrice");
    assert!(validate(&dropped_reserve, Some(&old_open)).is_err());

    // Non-pricing fields may change while open.
    let mut later = old_open.clone();
    later["spec"]["endsAt"] = json!("2026-12-01T20:00:00Z");
    later["spec"]["title"] = json!("Strat, 1962, sunburst");
    validate(&later, Some(&old_open)).unwrap();

    // Before opening, pricing may change freely.
    for phase in ["Pending", "Scheduled"] {
        let old = with_phase(example_json(), phase);
        validate(&new, Some(&old)).unwrap();
    }
    validate(&new, Some(&example_json())).unwrap();
}

#[test]
fn cel_freezes_closed_auctions_and_cancel() {
    let closed = with_phase(example_json(), "Closed");
    let mut new = closed.clone();
    new["spec"]["title"] = json!("renamed");
    assert!(validate(&new, Some(&closed)).is_err());
    validate(&closed, Some(&closed)).unwrap();

    let mut cancelled = with_phase(example_json(), "Open");
    cancelled["spec"]["cancel"] = json!(true);
    let mut undone = cancelled.clone();
    undone["spec"]["cancel"] = json!(false);
    let err = validate(&undone, Some(&cancelled)).unwrap_err();
    assert!(err.contains("cancel cannot be undone"), "{err}");
}

#[test]
fn example_converts_to_engine_settings() {
    let settings = example().spec.to_settings().unwrap();
    assert_eq!(settings.title, "1962 Fender Stratocaster");
    assert_eq!(settings.starting_price, 10_000);
    assert_eq!(settings.reserve_price, Some(50_000));
    assert_eq!(settings.increments.encode(), "0:100,10000:500,100000:1000");
    assert_eq!(settings.starts_at, Some(1_796_148_000_000));
    assert_eq!(settings.ends_at, 1_796_151_600_000);
    assert_eq!(
        settings.soft_close,
        Some(SoftClose {
            window_ms: 60_000,
            extension_ms: 60_000
        })
    );
    assert_eq!(
        settings.bid_limit,
        Some(BidLimit {
            per_second: 5,
            burst: 10
        })
    );
    assert_eq!(format_time(1_796_148_000_000), "2026-12-01T18:00:00Z");
}

#[test]
fn conversion_errors_name_the_field() {
    type Change = fn(&mut AuctionSpec);
    let cases: [(&str, Change); 14] = [
        ("title", |s| s.title = "  ".into()),
        ("currency", |s| s.currency = "usd".into()),
        ("currency", |s| s.currency = "XYZ".into()),
        ("currency", |s| s.currency = "XAU".into()),
        ("startingPrice", |s| s.starting_price = 0),
        ("startingPrice", |s| s.starting_price = i64::MAX),
        ("reservePrice", |s| s.reserve_price = Some(1)),
        ("increments", |s| s.increments.clear()),
        ("increments", |s| s.increments[1].from = 0),
        ("startsAt", |s| s.starts_at = Some("tomorrow".into())),
        ("endsAt", |s| s.ends_at = "2026-13-01T00:00:00Z".into()),
        ("endsAt", |s| s.ends_at = "2026-12-01T17:00:00Z".into()),
        ("softClose.window", |s| {
            s.soft_close = Some(SoftCloseSpec {
                window: "1d".into(),
                extension: "60s".into(),
            })
        }),
        ("softClose.extension", |s| {
            s.soft_close = Some(SoftCloseSpec {
                window: "60s".into(),
                extension: "48h".into(),
            })
        }),
    ];
    for (field, change) in cases {
        let mut spec = example().spec;
        change(&mut spec);
        let err = spec.to_settings().expect_err(field);
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().starts_with(&format!("spec.{field}: ")));
    }
}

#[test]
fn odd_manifests_never_panic() {
    let mut spec = example().spec;
    spec.increments = vec![
        IncrementTier {
            from: i64::MIN,
            step: i64::MIN
        };
        100
    ];
    assert!(spec.to_settings().is_err());
    spec = example().spec;
    spec.ends_at = "9999999-01-01T00:00:00Z".into();
    assert!(spec.to_settings().is_err());
    spec.ends_at = "\u{0}".into();
    assert!(spec.to_settings().is_err());
    spec.ends_at = "2026-12-01T21:00:00+02:00".into();
    assert_eq!(spec.to_settings().unwrap().ends_at, 1_796_151_600_000);
}

#[test]
fn example_manifests_of_the_repository_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut checked = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("auction") && name.ends_with(".yaml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Strictly: an example with a typo would teach it.
        let auction: Auction = crate::manifest::from_yaml(&text)
            .unwrap_or_else(|e| panic!("{name} is not an Auction: {e}"));
        let json = serde_json::to_value(&auction).unwrap();
        validate(&json, None).unwrap_or_else(|e| panic!("{name} fails the CEL rules: {e}"));
        auction
            .spec
            .to_settings()
            .unwrap_or_else(|e| panic!("{name} does not convert: {e}"));
        checked += 1;
    }
    assert!(checked > 0, "no manifests/auction*.yaml found in {dir}");
}
