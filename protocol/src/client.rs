//! What a client sends, and the server's strict reading of it.
//!
//! Serialising these types gives frames the server accepts. The server reads frames with
//! [`parse_client_message`], not with their `Deserialize`, because it answers each refusal
//! with a code of its own: amounts that are not JSON integers in `1..=10^15` (string,
//! fraction, exponent, negative, zero, too large) answer `bid_rejected` `INVALID_AMOUNT`
//! with the `ref`; other structural problems answer `error` `INVALID_MESSAGE` (carrying
//! the `ref` when one could be read); a `ref` over [`MAX_REF_BYTES`] answers `TOO_LARGE`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::server::{BidRejected, ErrorMessage, ServerMessage};
use crate::{Amount, ErrorCode, MAX_AMOUNT, MAX_REF_BYTES, Ref, names};

/// `subscribe`: start receiving an auction's events, replaying those after `since` first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Last seq the client has seen: every event after it is replayed before the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Epoch of the history `since` belongs to (from the last `snapshot` or `reset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `unsubscribe`: stop receiving an auction's events (no reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// `<namespace>/<name>`.
    pub auction: String,
}

/// `bid`: an `amount`, a `max` (the proxy ceiling) or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// The amount bid now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// The bidder's ceiling for proxy bidding, never shown to others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Amount>,
    /// Echoed in the reply, so the client can match it.
    #[serde(rename = "ref")]
    pub r#ref: Ref,
}

/// `refresh`: a new token for the same bidder, replacing one that is expiring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    /// The new JWT.
    pub token: String,
}

/// Every message a client sends, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// See [`Unsubscribe`].
    Unsubscribe(Unsubscribe),
    /// See [`Bid`].
    Bid(Bid),
    /// Liveness probe, answered by `pong`.
    Ping,
    /// See [`Refresh`].
    Refresh(Refresh),
}

/// A borrowed [`ClientMessage`], so that one message can be framed without being moved or
/// cloned (the load generator frames a bid per send).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessageRef<'a> {
    Subscribe(&'a Subscribe),
    Bid(&'a Bid),
}

fn to_json<T: Serialize>(message: &T) -> String {
    // These plain types (string keys, no maps) always serialise.
    serde_json::to_string(message).unwrap_or_default()
}

impl ClientMessage {
    /// The frame's JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl Bid {
    /// The frame's JSON text, `{"type":"bid",…}`.
    pub fn to_json(&self) -> String {
        to_json(&ClientMessageRef::Bid(self))
    }
}

impl Subscribe {
    /// The frame's JSON text, `{"type":"subscribe",…}`.
    pub fn to_json(&self) -> String {
        to_json(&ClientMessageRef::Subscribe(self))
    }
}

/// Why a client frame was refused; the server answers it with [`Self::to_server_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// `INVALID_MESSAGE`, `INVALID_AMOUNT` or `TOO_LARGE`.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// The bid's `ref`, when it could be read.
    pub r#ref: Option<Ref>,
    /// The auction named, when it could be read (cut at 300 characters).
    pub auction: Option<String>,
    /// The frame was a `bid` with a readable `ref`: the answer is `bid_rejected`.
    pub is_bid: bool,
}

impl ParseError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidMessage,
            message: message.into(),
            r#ref: None,
            auction: None,
            is_bid: false,
        }
    }

    /// The answer: `bid_rejected` for a bid whose `ref` was read, `error` otherwise.
    pub fn to_server_message(&self) -> ServerMessage {
        match (&self.r#ref, self.is_bid) {
            (Some(r), true) => ServerMessage::BidRejected(BidRejected {
                r#ref: r.clone(),
                auction: self.auction.clone(),
                code: self.code,
                message: self.message.clone(),
                min_next: None,
                retry_after_ms: None,
            }),
            _ => ServerMessage::Error(ErrorMessage {
                code: self.code,
                message: self.message.clone(),
                r#ref: self.r#ref.clone(),
                auction: self.auction.clone(),
            }),
        }
    }
}

type Object = serde_json::Map<String, Value>;

fn field_str<'a>(obj: &'a Object, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("missing field `{name}`")),
    }
}

fn parse_auction(obj: &Object) -> Result<String, ParseError> {
    let text = field_str(obj, "auction").map_err(ParseError::invalid)?;
    match names::split(text) {
        Some(_) => Ok(text.to_owned()),
        None => Err(ParseError {
            auction: Some(text.chars().take(300).collect()),
            ..ParseError::invalid("`auction` must be <namespace>/<name> (Kubernetes names)")
        }),
    }
}

fn parse_ref(obj: &Object) -> Result<Ref, ParseError> {
    match obj.get("ref") {
        Some(Value::String(s)) if s.len() <= MAX_REF_BYTES => Ok(Ref::Text(s.clone())),
        Some(Value::String(_)) => Err(ParseError {
            code: ErrorCode::TooLarge,
            ..ParseError::invalid(format!("`ref` is longer than {MAX_REF_BYTES} bytes"))
        }),
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            Ok(Ref::Number(n.as_u64().unwrap_or_default()))
        }
        Some(_) => Err(ParseError::invalid(
            "`ref` must be a string or a non-negative integer",
        )),
        None => Err(ParseError::invalid("missing field `ref`")),
    }
}

/// Reads an amount: absent or null is `None`; anything but an integer in range is refused.
fn parse_amount(obj: &Object, name: &str) -> Result<Option<Amount>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (1..=MAX_AMOUNT).contains(&v) => Ok(Some(v)),
            Some(_) => Err(format!(
                "`{name}` must be between 1 and {MAX_AMOUNT} minor units"
            )),
            None if n.is_u64() => Err(format!(
                "`{name}` must be between 1 and {MAX_AMOUNT} minor units"
            )),
            None => Err(format!("`{name}` must be an integer count of minor units")),
        },
        Some(_) => Err(format!(
            "`{name}` must be a JSON integer count of minor units, not a string or other type"
        )),
    }
}

/// A well-formed `bid` frame read without a DOM: every string borrowed from the frame.
/// Anything this does not read (escapes in a string, a duplicate key, a number that is
/// not a small integer, another type) goes to the full reading, which decides.
#[derive(Deserialize)]
struct BidFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    auction: &'a str,
    #[serde(default)]
    amount: Option<Amount>,
    #[serde(default)]
    max: Option<Amount>,
    #[serde(rename = "ref", borrow)]
    r#ref: RefFrame<'a>,
}

/// A `ref` as written: an unescaped string or a non-negative integer.
enum RefFrame<'a> {
    Text(&'a str),
    Number(u64),
}

impl<'de: 'a, 'a> Deserialize<'de> for RefFrame<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RefFrame<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a non-negative integer")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(RefFrame::Text(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RefFrame::Number(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The common case, a valid `bid`, without building a JSON DOM; `None` for anything
/// else (including every refusal), which [`parse_client_message`] reads in full.
fn parse_valid_bid(text: &str) -> Option<ClientMessage> {
    let frame: BidFrame<'_> = serde_json::from_str(text).ok()?;
    let in_range = |v: Option<Amount>| v.is_none_or(|v| (1..=MAX_AMOUNT).contains(&v));
    let valid = frame.kind == "bid"
        && names::split(frame.auction).is_some()
        && in_range(frame.amount)
        && in_range(frame.max)
        && match (frame.amount, frame.max) {
            (None, None) => false,
            (Some(a), Some(m)) => m >= a,
            _ => true,
        };
    let r#ref = match frame.r#ref {
        RefFrame::Text(t) if t.len() <= MAX_REF_BYTES => Ref::Text(t.to_owned()),
        RefFrame::Text(_) => return None,
        RefFrame::Number(n) => Ref::Number(n),
    };
    valid.then(|| {
        ClientMessage::Bid(Bid {
            auction: frame.auction.to_owned(),
            amount: frame.amount,
            max: frame.max,
            r#ref,
        })
    })
}

/// Reads one text frame as the server does (see the module's documentation).
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    // Bids are most of the traffic: a valid one is read without a DOM.
    if let Some(bid) = parse_valid_bid(text) {
        return Ok(bid);
    }
    parse_in_full(text)
}

/// The reading of every frame, with the refusal of each problem.
fn parse_in_full(text: &str) -> Result<ClientMessage, ParseError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ParseError::invalid(format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ParseError::invalid("a message must be a JSON object"));
    };
    let kind = field_str(&obj, "type").map_err(ParseError::invalid)?;
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "refresh" => Ok(ClientMessage::Refresh(Refresh {
            token: field_str(&obj, "token")
                .map_err(ParseError::invalid)?
                .to_owned(),
        })),
        "subscribe" => {
            let auction = parse_auction(&obj)?;
            let number = |name: &str| match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
                Some(_) => Err(ParseError {
                    auction: Some(auction.clone()),
                    ..ParseError::invalid(format!("`{name}` must be a non-negative integer"))
                }),
            };
            Ok(ClientMessage::Subscribe(Subscribe {
                since: number("since")?,
                epoch: number("epoch")?,
                auction,
            }))
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe(Unsubscribe {
            auction: parse_auction(&obj)?,
        })),
        "bid" => {
            let r#ref = parse_ref(&obj)?;
            let auction = parse_auction(&obj).map_err(|e| ParseError {
                r#ref: Some(r#ref.clone()),
                is_bid: true,
                ..e
            })?;
            let amount_err = |message: String| ParseError {
                code: ErrorCode::InvalidAmount,
                message,
                r#ref: Some(r#ref.clone()),
                auction: Some(auction.clone()),
                is_bid: true,
            };
            let amount = parse_amount(&obj, "amount").map_err(amount_err)?;
            let max = parse_amount(&obj, "max").map_err(amount_err)?;
            match (amount, max) {
                (None, None) => Err(amount_err("a bid needs `amount`, `max` or both".into())),
                (Some(a), Some(m)) if m < a => {
                    Err(amount_err("`max` must be at least `amount`".into()))
                }
                _ => Ok(ClientMessage::Bid(Bid {
                    auction,
                    amount,
                    max,
                    r#ref,
                })),
            }
        }
        other => Err(ParseError::invalid(format!(
            "unknown message type {:?}; expected subscribe, unsubscribe, bid, refresh or ping",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The DOM-free reading of valid bids agrees with the full reading on every frame it
    /// accepts, and leaves every other frame (escapes, duplicates, bad numbers, refusals)
    /// to it.
    #[test]
    fn the_fast_bid_reading_agrees_with_the_full_one() {
        let long_ref = "r".repeat(MAX_REF_BYTES + 1);
        let frames = [
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":"r1"}"#.to_owned(),
            r#"{"type":"bid","auction":"shop/x","max":500,"ref":3}"#.into(),
            r#"{"ref":7,"max":500,"amount":100,"auction":"shop/x","type":"bid","extra":[1,{"a":2}]}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"max":null,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"max":99,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":0,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":-5,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":1.5,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":1e3,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":"100","ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":1000000000000001,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":18446744073709551616,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":-1}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":1.0}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":null}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100}"#.into(),
            format!(r#"{{"type":"bid","auction":"shop/x","amount":100,"ref":"{long_ref}"}}"#),
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":"a"b"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"Shop/x","amount":100,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"adv/a..b","amount":100,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":5,"amount":100,"ref":"r"}"#.into(),
            r#"{"type":"ping","type":"bid","auction":"shop/x","amount":100,"ref":"r"}"#.into(),
            r#"{"type":"bid","type":"ping","auction":"shop/x","amount":100,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"amount":200,"ref":"r"}"#.into(),
            r#"{"type":"ping","auction":"shop/x","amount":100,"ref":"r"}"#.into(),
            r#"{"type":"bid","auction":"shop/x","amount":100,"ref":"r"} x"#.into(),
            r#"[{"type":"bid"}]"#.into(),
        ];
        let mut fast_ones = 0;
        for frame in &frames {
            let full = parse_in_full(frame);
            match parse_valid_bid(frame) {
                Some(fast) => {
                    fast_ones += 1;
                    assert_eq!(Ok(fast), full, "{frame}");
                }
                None => assert!(
                    !matches!(full, Ok(ClientMessage::Bid(_)))
                        || frame.contains('\\')
                        || frame.matches("\"type\"").count() > 1
                        || frame.matches("\"amount\"").count() > 1,
                    "a valid bid left to the full reading: {frame}"
                ),
            }
            assert_eq!(parse_client_message(frame), full, "{frame}");
        }
        assert!(
            fast_ones >= 4,
            "the first four frames are valid bids read without a DOM"
        );
    }

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            parse_client_message(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse_client_message(r#"{"type":"subscribe","auction":"shop/strat-1962"}"#),
            Ok(ClientMessage::Subscribe(Subscribe {
                auction: "shop/strat-1962".into(),
                since: None,
                epoch: None,
            }))
        );
        assert_eq!(
            parse_client_message(r#"{"type":"subscribe","auction":"shop/strat-1962","since":7}"#),
            Ok(ClientMessage::Subscribe(Subscribe {
                auction: "shop/strat-1962".into(),
                since: Some(7),
                epoch: None,
            }))
        );
        assert_eq!(
            parse_client_message(r#"{"type":"unsubscribe","auction":"shop/strat-1962"}"#),
            Ok(ClientMessage::Unsubscribe(Unsubscribe {
                auction: "shop/strat-1962".into()
            }))
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"bid","auction":"shop/strat-1962","amount":100,"ref":"r1","extra":1}"#
            ),
            Ok(ClientMessage::Bid(Bid {
                auction: "shop/strat-1962".into(),
                amount: Some(100),
                max: None,
                r#ref: Ref::Text("r1".into())
            }))
        );
        assert_eq!(
            parse_client_message(r#"{"type":"bid","auction":"shop/strat-1962","max":500,"ref":3}"#),
            Ok(ClientMessage::Bid(Bid {
                auction: "shop/strat-1962".into(),
                amount: None,
                max: Some(500),
                r#ref: Ref::Number(3)
            }))
        );
    }

    #[test]
    fn structural_errors_are_invalid_message() {
        for bad in [
            "",
            "nope",
            "[1]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","auction":"Shop/X"}"#,
            r#"{"type":"subscribe","auction":"shop/x","since":-1}"#,
            r#"{"type":"subscribe","auction":"shop/x","since":"3"}"#,
            r#"{"type":"bid","auction":"shop/x","amount":1}"#,
            r#"{"type":"bid","auction":"shop/x","amount":1,"ref":{}}"#,
        ] {
            let e = parse_client_message(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
            assert!(matches!(e.to_server_message(), ServerMessage::Error(_)));
        }
        let e = parse_client_message(r#"{"type":"bid","amount":1,"ref":"r"}"#).unwrap_err();
        assert_eq!(
            serde_json::from_str::<Value>(&e.to_server_message().to_json()).unwrap(),
            json!({"type":"bid_rejected","ref":"r","auction":null,"code":"INVALID_MESSAGE",
                   "message":"missing field `auction`"})
        );
        let long = format!(
            r#"{{"type":"bid","auction":"shop/x","amount":1,"ref":"{}"}}"#,
            "x".repeat(200)
        );
        assert_eq!(
            parse_client_message(&long).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn bad_amounts_are_invalid_amount_with_ref() {
        for amount in [
            r#""100""#,
            "0",
            "-5",
            "1.5",
            "100.0",
            "1e3",
            "1000000000000001",
            "99999999999999999999999",
            "18446744073709551615",
            "true",
            "[1]",
        ] {
            let text =
                format!(r#"{{"type":"bid","auction":"shop/x","amount":{amount},"ref":"r"}}"#);
            let e = parse_client_message(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAmount, "{amount}");
            let ServerMessage::BidRejected(BidRejected { r#ref, code, .. }) = e.to_server_message()
            else {
                panic!("{amount}")
            };
            assert_eq!(
                (r#ref, code),
                (Ref::Text("r".into()), ErrorCode::InvalidAmount)
            );
        }
        for body in [r#""ref":"r""#, r#""ref":"r","amount":10,"max":9"#] {
            let text = format!(r#"{{"type":"bid","auction":"shop/x",{body}}}"#);
            assert_eq!(
                parse_client_message(&text).unwrap_err().code,
                ErrorCode::InvalidAmount
            );
        }
    }
}
