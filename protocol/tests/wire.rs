//! The protocol's wire text against itself (every message round-trips), against the
//! server's strict parser, against the borrowed view, and against the README's WebSocket
//! protocol section, so that a field added, renamed or dropped on one side fails here.

use std::collections::{BTreeMap, BTreeSet};

use gavel_protocol::*;
use serde_json::{Value, json};

/// One of every client message, every optional field set.
fn client_messages() -> Vec<ClientMessage> {
    vec![
        ClientMessage::Subscribe(Subscribe {
            auction: "shop/strat-1962".into(),
            since: Some(7),
            epoch: Some(2),
        }),
        ClientMessage::Unsubscribe(Unsubscribe {
            auction: "shop/strat-1962".into(),
        }),
        ClientMessage::Bid(Bid {
            auction: "shop/strat-1962".into(),
            amount: Some(100),
            max: Some(500),
            r#ref: Ref::Text("r1".into()),
        }),
        ClientMessage::Ping,
        ClientMessage::Refresh(Refresh {
            token: "eyJ.x.y".into(),
        }),
    ]
}

/// One of every server message, every optional field set.
fn server_messages() -> Vec<ServerMessage> {
    let auction = || "shop/strat-1962".to_owned();
    vec![
        ServerMessage::Welcome(Welcome {
            bidder: Some("u1".into()),
            server_time: 5,
            protocol: PROTOCOL.into(),
        }),
        ServerMessage::Refreshed(Refreshed {
            bidder: "u1".into(),
            expires_at: Some(9),
        }),
        ServerMessage::Snapshot(Snapshot {
            auction: auction(),
            seq: 2,
            phase: Phase::Open,
            title: "T".into(),
            currency: "USD".into(),
            price: Some(120),
            leader: Some("Bo".into()),
            bid_count: 1,
            min_next: 122,
            ends_at: 9,
            reserve_met: false,
            has_reserve: Some(true),
            starts_at: Some(3),
            scheduled_ends_at: Some(8),
            your_max: Some(300),
            epoch: 1,
        }),
        ServerMessage::Reset(Reset {
            auction: auction(),
            epoch: 2,
            seq: 7,
            reason: ResetReason::Restored,
        }),
        ServerMessage::BidResult(BidResult {
            r#ref: Ref::Number(1),
            auction: auction(),
            outcome: Outcome::CeilingRaised,
            price: 10,
            min_next: 12,
            seq: 4,
            epoch: 1,
        }),
        ServerMessage::BidRejected(BidRejected {
            r#ref: Ref::Text("a".into()),
            auction: Some(auction()),
            code: ErrorCode::BidTooLow,
            message: "m".into(),
            min_next: Some(12),
            retry_after_ms: Some(200),
        }),
        ServerMessage::Price(Price {
            auction: auction(),
            seq: 3,
            price: 120,
            leader: "Bo".into(),
            bid_count: 3,
            min_next: 122,
            ends_at: 50,
        }),
        ServerMessage::Outbid(Outbid {
            auction: auction(),
            seq: 3,
            price: 120,
            min_next: 122,
        }),
        ServerMessage::Extended(Extended {
            auction: auction(),
            seq: 3,
            ends_at: 50,
        }),
        ServerMessage::Closed(Closed {
            auction: auction(),
            seq: 9,
            winner: Some("Bo".into()),
            final_price: Some(120),
            reserve_met: true,
            cancelled: false,
        }),
        ServerMessage::Error(ErrorMessage {
            code: ErrorCode::InvalidMessage,
            message: "m".into(),
            r#ref: Some(Ref::Number(3)),
            auction: Some(auction()),
        }),
        ServerMessage::Pong,
    ]
}

fn keys(text: &str) -> (String, BTreeSet<String>) {
    let Value::Object(obj) = serde_json::from_str::<Value>(text).unwrap() else {
        panic!("{text}")
    };
    let kind = obj["type"].as_str().unwrap().to_owned();
    (kind, obj.keys().filter(|k| *k != "type").cloned().collect())
}

#[test]
fn every_message_round_trips() {
    for message in client_messages() {
        let text = message.to_json();
        assert_eq!(
            serde_json::from_str::<ClientMessage>(&text).unwrap(),
            message
        );
        // What a client serialises, the server's strict parser accepts as the same.
        assert_eq!(parse_client_message(&text), Ok(message.clone()), "{text}");
        match &message {
            ClientMessage::Bid(bid) => assert_eq!(bid.to_json(), text),
            ClientMessage::Subscribe(sub) => assert_eq!(sub.to_json(), text),
            _ => {}
        }
    }
    for message in server_messages() {
        let text = message.to_json();
        assert_eq!(ServerMessage::parse(&text).unwrap(), message, "{text}");
        assert_eq!(keys(&text).0, serde_json::to_value(message.kind()).unwrap());
    }
}

#[test]
fn the_borrowed_view_agrees_with_the_messages() {
    for message in server_messages() {
        let text = message.to_json();
        let frame = ServerFrame::parse(&text).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(frame.kind, message.kind(), "{text}");
        assert_eq!(frame.auction.as_deref(), message.auction(), "{text}");
        let escaped = text.replace("shop/", "shop\\/");
        if escaped != text {
            // Escapes cost a copy, never a refusal.
            let frame = ServerFrame::parse(&escaped).unwrap();
            assert_eq!(frame.auction.as_deref(), message.auction(), "{escaped}");
        }
        assert_eq!(frame.seq, value["seq"].as_u64(), "{text}");
        assert_eq!(frame.min_next, value["min_next"].as_i64(), "{text}");
        let r#ref = frame.r#ref.as_ref().map(RefView::to_owned_ref);
        let want = match &message {
            ServerMessage::BidResult(m) => Some(m.r#ref.clone()),
            ServerMessage::BidRejected(m) => Some(m.r#ref.clone()),
            ServerMessage::Error(m) => m.r#ref.clone(),
            _ => None,
        };
        assert_eq!(r#ref, want, "{text}");
        let code = match &message {
            ServerMessage::BidRejected(m) => Some(m.code),
            ServerMessage::Error(m) => Some(m.code),
            _ => None,
        };
        assert_eq!(frame.code, code, "{text}");
        let outcome = match &message {
            ServerMessage::BidResult(m) => Some(m.outcome),
            _ => None,
        };
        assert_eq!(frame.outcome, outcome, "{text}");
    }
    // Names without escapes are borrowed from the frame, not copied.
    let text = r#"{"type":"bid_result","ref":"17","auction":"a/b","outcome":"leading","price":1,"min_next":2,"seq":3,"epoch":1}"#;
    let frame = ServerFrame::parse(text).unwrap();
    assert!(matches!(
        frame.auction,
        Some(Text(std::borrow::Cow::Borrowed("a/b")))
    ));
    assert_eq!(frame.r#ref.and_then(|r| r.as_number()), Some(17));
}

#[test]
fn clients_refuse_what_the_protocol_does_not_say() {
    for bad in [
        r#"{"type":"error","code":"NEW_CODE","message":"m"}"#,
        r#"{"type":"something_new"}"#,
        r#"{"type":"snapshot","auction":"a/b","seq":1,"phase":"Open","title":"T","currency":"USD","price":null,"leader":null,"bid_count":0,"min_next":1,"ends_at":1,"reserve_met":false,"epoch":1}"#,
        r#"{"type":"extended","auction":"a/b","seq":1,"ends_at":"2026-11-22T10:00:00Z"}"#,
        r#"{"type":"closed","auction":"a/b","seq":7,"winner":null,"final_price":null,"reserve_met":false}"#,
        r#"{"type":"price","auction":"a"}"#,
        "not json",
    ] {
        assert!(ServerMessage::parse(bad).is_err(), "{bad}");
    }
    // Unknown fields are ignored (newer servers).
    let m = ServerMessage::parse(r#"{"type":"pong","extra":1}"#).unwrap();
    assert_eq!(m, ServerMessage::Pong);
}

#[test]
fn exact_wire_text() {
    let m = ServerMessage::Snapshot(Snapshot {
        auction: "shop/x".into(),
        seq: 2,
        phase: Phase::Open,
        title: "T".into(),
        currency: "USD".into(),
        price: None,
        leader: None,
        bid_count: 0,
        min_next: 100,
        ends_at: 9,
        reserve_met: false,
        has_reserve: None,
        starts_at: None,
        scheduled_ends_at: None,
        your_max: None,
        epoch: 1,
    });
    assert_eq!(
        serde_json::from_str::<Value>(&m.to_json()).unwrap(),
        json!({"type":"snapshot","auction":"shop/x","seq":2,"phase":"open","title":"T",
               "currency":"USD","price":null,"leader":null,"bid_count":0,"min_next":100,
               "ends_at":9,"reserve_met":false,"epoch":1})
    );
    let bid = Bid {
        auction: "shop/a".into(),
        amount: None,
        max: Some(200),
        r#ref: Ref::Text("r1".into()),
    };
    assert_eq!(
        bid.to_json(),
        r#"{"type":"bid","auction":"shop/a","max":200,"ref":"r1"}"#
    );
    let sub = Subscribe {
        auction: "shop/a".into(),
        since: None,
        epoch: None,
    };
    assert_eq!(sub.to_json(), r#"{"type":"subscribe","auction":"shop/a"}"#);
    assert_eq!(ClientMessage::Ping.to_json(), r#"{"type":"ping"}"#);
}

/// The README's WebSocket protocol section.
fn readme_section() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("## WebSocket protocol")
        .expect("README § WebSocket protocol");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

/// The backticked words of `text` outside parentheses, up to the first top-level colon
/// (prose follows it).
fn top_level_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut depth = 0;
    let mut in_tick = false;
    let mut word = String::new();
    for c in text.chars() {
        match c {
            '`' if depth == 0 => {
                if in_tick {
                    names.insert(std::mem::take(&mut word));
                }
                in_tick = !in_tick;
            }
            '(' if !in_tick => depth += 1,
            ')' if !in_tick => depth -= 1,
            ':' if !in_tick && depth == 0 => break,
            c if in_tick && depth == 0 => word.push(c),
            _ => {}
        }
    }
    names
}

/// The rows of the table whose header's first cell is `header`: type → documented fields.
fn table(section: &str, header: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    let mut inside = false;
    for line in section.lines() {
        if line.starts_with(&format!("| {header} ")) {
            inside = true;
            continue;
        }
        if !inside || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').splitn(2, '|').collect();
        let kind = cells[0].trim().trim_matches('`').to_owned();
        rows.insert(kind, cells[1].trim().to_owned());
    }
    rows
}

/// The backticked words inside the parentheses that follow `` `field` `` in `text`, up to
/// a colon.
fn values_after(text: &str, field: &str) -> BTreeSet<String> {
    let at = text.find(&format!("`{field}` (")).expect(field) + field.len() + 4;
    let inner = &text[at..at + text[at..].find(')').unwrap()];
    let inner = inner.split(':').next().unwrap();
    inner
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_documents_the_wire_text() {
    let section = readme_section();
    let documented = table(&section, "client → server");
    let mut seen = BTreeMap::new();
    for message in client_messages() {
        let (kind, fields) = keys(&message.to_json());
        seen.insert(kind, fields);
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>(),
        "client message types"
    );
    for (kind, fields) in &seen {
        assert_eq!(
            &top_level_names(&documented[kind]),
            fields,
            "README row `{kind}`"
        );
    }

    let documented = table(&section, "server → client");
    let mut seen = BTreeMap::new();
    for message in server_messages() {
        let (kind, fields) = keys(&message.to_json());
        seen.insert(kind, fields);
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>(),
        "server message types"
    );
    for (kind, fields) in &seen {
        assert_eq!(
            &top_level_names(&documented[kind]),
            fields,
            "README row `{kind}`"
        );
    }

    let values = |all: Vec<Value>| -> BTreeSet<String> {
        all.into_iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let phases = Phase::ALL.map(|p| serde_json::to_value(p).unwrap());
    assert_eq!(
        values_after(&documented["snapshot"], "phase"),
        values(phases.to_vec())
    );
    let outcomes = [Outcome::Leading, Outcome::Outbid, Outcome::CeilingRaised]
        .map(|o| serde_json::to_value(o).unwrap());
    assert_eq!(
        values_after(&documented["bid_result"], "outcome"),
        values(outcomes.to_vec())
    );
    let reasons = [ResetReason::Restored, ResetReason::SinceUnknown]
        .map(|r| serde_json::to_value(r).unwrap());
    assert_eq!(
        values_after(&documented["reset"], "reason"),
        values(reasons.to_vec())
    );

    // "Codes: `BID_TOO_LOW`, …" lists every code, in the enum's order.
    let codes_at = section
        .find("\nCodes: ")
        .expect("the README's list of codes");
    let paragraph = &section[codes_at..];
    let paragraph = &paragraph[..paragraph[1..]
        .find("\n\n")
        .map_or(paragraph.len(), |i| i + 1)];
    let mut listed: Vec<String> = Vec::new();
    for word in paragraph.split('`').skip(1).step_by(2) {
        let code = !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        if code && !listed.iter().any(|w| w == word) {
            listed.push(word.to_owned());
        }
    }
    assert_eq!(
        listed,
        ErrorCode::ALL.map(|c| c.as_str().to_owned()).to_vec()
    );
}
