//! A borrowed reading of a server frame: its `type` and the fields several messages share,
//! read in one pass over the text, with no DOM and no allocation (strings are borrowed
//! unless they contain escapes). For clients that handle many frames, such as the load
//! generator; a test checks it agrees with [`crate::ServerMessage`] on every message.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::{Amount, ErrorCode, MessageType, Outcome, Ref};

/// The common fields of any server frame; each is `None` where the message has none.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServerFrame<'a> {
    /// The message's `type`.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// `auction`.
    #[serde(default, borrow)]
    pub auction: Option<Text<'a>>,
    /// `seq`.
    #[serde(default)]
    pub seq: Option<u64>,
    /// `ref`.
    #[serde(rename = "ref", default, borrow)]
    pub r#ref: Option<RefView<'a>>,
    /// `min_next`.
    #[serde(default)]
    pub min_next: Option<Amount>,
    /// `code` of `bid_rejected` and `error`.
    #[serde(default)]
    pub code: Option<ErrorCode>,
    /// `outcome` of `bid_result`.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

impl<'a> ServerFrame<'a> {
    /// Reads one text frame.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A string field, borrowed from the frame unless it contains escapes (serde's own
/// `Cow<str>` is always copied when it is inside an `Option`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match RefView::deserialize(deserializer)? {
            RefView::Text(text) => Ok(Text(text)),
            RefView::Number(_) => Err(de::Error::custom("expected a string")),
        }
    }
}

/// A borrowed [`Ref`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefView<'a> {
    /// A string.
    Text(Cow<'a, str>),
    /// A non-negative integer.
    Number(u64),
}

impl RefView<'_> {
    /// The owned [`Ref`].
    pub fn to_owned_ref(&self) -> Ref {
        match self {
            RefView::Text(text) => Ref::Text(text.to_string()),
            RefView::Number(n) => Ref::Number(*n),
        }
    }

    /// The number a client wrote, whether as an integer or as decimal text.
    pub fn as_number(&self) -> Option<u64> {
        match self {
            RefView::Text(text) => text.parse().ok(),
            RefView::Number(n) => Some(*n),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RefView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;
        impl<'de> Visitor<'de> for RefVisitor {
            type Value = RefView<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a non-negative integer")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RefView::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RefView::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RefView::Number(v))
            }
        }
        deserializer.deserialize_any(RefVisitor)
    }
}
