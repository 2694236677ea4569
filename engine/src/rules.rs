//! The proxy-bid rules of README § Bidding rules as a pure reference model.
//!
//! [`AuctionModel`] holds one auction's state as plain data and applies bids to it; it
//! does no I/O and reads no clock (the caller passes `now`). The Redis script
//! `place_bid.lua` implements the same rules; property tests replay random bid
//! sequences through both and require identical answers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::settings::{Amount, AuctionSettings, MAX_AMOUNT, Millis};

/// What a bidder asks for: an `amount`, a `max` (proxy ceiling), or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRequest {
    /// The bid itself; absent means "the minimum next bid".
    pub amount: Option<Amount>,
    /// The hidden ceiling up to which Gavel bids on the bidder's behalf.
    pub max: Option<Amount>,
}

impl BidRequest {
    /// Checks the request on its own, before any auction state is looked at: at least one
    /// of the two amounts, each in `1..=MAX_AMOUNT`, and `max >= amount` when both are set.
    pub fn validate(&self) -> Result<(), Rejection> {
        let in_range = |v: Option<Amount>| v.is_none_or(|v| (1..=MAX_AMOUNT).contains(&v));
        let ordered = match (self.amount, self.max) {
            (Some(amount), Some(max)) => max >= amount,
            (None, None) => false,
            _ => true,
        };
        if in_range(self.amount) && in_range(self.max) && ordered {
            Ok(())
        } else {
            Err(Rejection::new(RejectCode::InvalidAmount))
        }
    }
}

/// How an accepted bid left its bidder: the protocol's type, so that the engine's record
/// and the wire cannot spell it differently.
pub use gavel_protocol::Outcome;

/// Why a bid was refused. The codes are those of the WebSocket protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectCode {
    /// Below the minimum next bid (which the rejection carries).
    BidTooLow,
    /// The leader's bid does not raise its own ceiling: it would change nothing.
    AlreadyLeading,
    /// Before the auction's start.
    AuctionNotOpen,
    /// After the effective end, or closed by the operator.
    AuctionClosed,
    /// No such auction is provisioned.
    UnknownAuction,
    /// The bidder's token bucket is empty (the rejection says when to retry).
    RateLimited,
    /// Zero, negative, too large, missing, or `max < amount`.
    InvalidAmount,
    /// The auction cannot take bids right now (its live state is being restored from
    /// PostgreSQL); nothing was decided, retry after the rejection's delay.
    Unavailable,
}

impl From<RejectCode> for gavel_protocol::ErrorCode {
    fn from(code: RejectCode) -> Self {
        use gavel_protocol::ErrorCode;
        match code {
            RejectCode::BidTooLow => ErrorCode::BidTooLow,
            RejectCode::AlreadyLeading => ErrorCode::AlreadyLeading,
            RejectCode::AuctionNotOpen => ErrorCode::AuctionNotOpen,
            RejectCode::AuctionClosed => ErrorCode::AuctionClosed,
            RejectCode::UnknownAuction => ErrorCode::UnknownAuction,
            RejectCode::RateLimited => ErrorCode::RateLimited,
            RejectCode::InvalidAmount => ErrorCode::InvalidAmount,
            RejectCode::Unavailable => ErrorCode::Unavailable,
        }
    }
}

impl RejectCode {
    /// The protocol's name of the code (its [`gavel_protocol::ErrorCode`]).
    pub fn as_str(self) -> &'static str {
        gavel_protocol::ErrorCode::from(self).as_str()
    }

    /// Every code, for parsing and for tests that walk them all.
    pub const ALL: [RejectCode; 8] = [
        RejectCode::BidTooLow,
        RejectCode::AlreadyLeading,
        RejectCode::AuctionNotOpen,
        RejectCode::AuctionClosed,
        RejectCode::UnknownAuction,
        RejectCode::RateLimited,
        RejectCode::InvalidAmount,
        RejectCode::Unavailable,
    ];

    /// Parses the protocol's name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == s)
    }
}

/// A refused bid: the code, and the hints that apply to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The rule that refused it; the protocol's code of the same name.
    pub code: RejectCode,
    /// The lowest amount that would be accepted now (`BID_TOO_LOW`).
    pub min_next: Option<Amount>,
    /// How long until the bidder's rate limit allows another bid (`RATE_LIMITED`).
    pub retry_after_ms: Option<Millis>,
}

impl Rejection {
    /// A rejection without hints.
    pub fn new(code: RejectCode) -> Self {
        Self {
            code,
            min_next: None,
            retry_after_ms: None,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code.as_str())?;
        if let Some(min_next) = self.min_next {
            write!(f, " (minimum next bid {min_next})")?;
        }
        if let Some(retry) = self.retry_after_ms {
            write!(f, " (retry after {retry} ms)")?;
        }
        Ok(())
    }
}

/// The answer to an accepted bid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidAccepted {
    /// How the bid left its bidder.
    pub outcome: Outcome,
    /// The auction's event sequence number assigned to this bid.
    pub seq: u64,
    /// The bid's effective amount `a` (the minimum next bid when only `max` was sent).
    pub amount: Amount,
    /// The bid's effective ceiling `m`.
    pub max: Amount,
    /// Current price after the bid.
    pub price: Amount,
    /// Minimum next bid after the bid.
    pub min_next: Amount,
    /// Bidder id of the leader after the bid.
    pub leader: String,
    /// Display name of the leader after the bid.
    pub leader_name: String,
    /// Accepted bids so far, this one included.
    pub bid_count: u64,
    /// Effective end after the bid.
    pub ends_at: Millis,
    /// Whether this bid moved the effective end (soft close).
    pub extended: bool,
    /// The bidder who lost the lead to this bid, if any.
    pub displaced: Option<String>,
    /// Whether the current price has reached the reserve (true without a reserve).
    pub reserve_met: bool,
    /// Epoch of the live state that accepted it (always 1 in this model, which has no
    /// restores; see `crate::restore`).
    pub epoch: u64,
}

/// The current leader and its hidden ceiling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Bidder id (the token's `sub`).
    pub bidder: String,
    /// Display name (the token's `name`).
    pub name: String,
    /// The leader's ceiling `C`; never shown to anyone else.
    pub ceiling: Amount,
    /// When the leader took the lead.
    pub since: Millis,
}

/// The final result of a closed auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionResult {
    /// Sequence number of the `closed` event.
    pub seq: u64,
    /// The winner's bidder id and display name: the leader at the end, if the reserve was met
    /// and the auction was not cancelled.
    pub winner: Option<String>,
    /// Display name of the winner.
    pub winner_name: Option<String>,
    /// The price at the end, if anyone bid (also when the reserve was not met).
    pub final_price: Option<Amount>,
    /// Whether the price reached the reserve (true without a reserve).
    pub reserve_met: bool,
    /// Accepted bids.
    pub bid_count: u64,
    /// When the auction was closed.
    pub closed_at: Millis,
    /// Closed early by cancellation rather than by reaching its end.
    pub cancelled: bool,
}

/// How a close request ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The auction is closed now or was before; the same result every time.
    Closed(AuctionResult),
    /// The effective end has not been reached (a soft-close extension may have moved it).
    NotEnded {
        /// The effective end to wait for.
        ends_at: Millis,
    },
}

/// Token bucket state of one bidder, in thousandths of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    millitokens: i64,
    at: Millis,
}

/// The live state of one auction; plain data, the same fields the Redis hash holds.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AuctionState {
    /// Current price `P` (0 before the first bid).
    pub price: Amount,
    /// The leader, if anyone bid.
    pub leader: Option<Leader>,
    /// Accepted bids.
    pub bid_count: u64,
    /// Last event sequence number.
    pub seq: u64,
    /// End set by soft-close extensions, if any.
    pub extended_until: Option<Millis>,
    /// Whether the price reached the reserve.
    pub reserve_met: bool,
    /// The result, once closed.
    pub result: Option<AuctionResult>,
}

/// One auction under the reference rules.
#[derive(Clone, Debug)]
pub struct AuctionModel {
    settings: AuctionSettings,
    state: AuctionState,
    buckets: HashMap<String, Bucket>,
}

impl AuctionModel {
    /// A freshly provisioned auction (settings assumed valid).
    pub fn new(settings: AuctionSettings) -> Self {
        let reserve_met = settings.reserve_price.is_none();
        Self {
            settings,
            state: AuctionState {
                reserve_met,
                ..AuctionState::default()
            },
            buckets: HashMap::new(),
        }
    }

    /// The settings the model was opened with.
    pub fn settings(&self) -> &AuctionSettings {
        &self.settings
    }

    /// Price, leader, ceilings and seq after the bids applied so far.
    pub fn state(&self) -> &AuctionState {
        &self.state
    }

    /// The scheduled end moved by any soft-close extension.
    pub fn effective_end(&self) -> Millis {
        effective_end(self.settings.ends_at, self.state.extended_until)
    }

    /// The lowest amount a new leader must bid now.
    pub fn min_next(&self) -> Amount {
        min_next(&self.settings, &self.state)
    }

    /// Applies README § Bidding rules to one bid at time `now`. Checks run in this order:
    /// the request alone (`INVALID_AMOUNT`), open by time (`AUCTION_CLOSED`,
    /// `AUCTION_NOT_OPEN`), the rate limit (`RATE_LIMITED`); then the leader's bid against
    /// its own ceiling (`ALREADY_LEADING`), anyone else's against the minimum next bid
    /// (`BID_TOO_LOW`).
    pub fn place_bid(
        &mut self,
        bidder: &str,
        name: &str,
        request: BidRequest,
        now: Millis,
    ) -> Result<BidAccepted, Rejection> {
        request.validate()?;
        self.check_open(now)?;
        self.take_token(bidder, now)?;
        let s = &self.settings;
        let st = &mut self.state;
        let min = min_next(s, st);
        let new_leader = |ceiling| Leader {
            bidder: bidder.to_owned(),
            name: name.to_owned(),
            ceiling,
            since: now,
        };
        let (leader, outcome, displaced, amount, max) = match st.leader.take() {
            // The leader's bid can only raise its own ceiling, and must: one that does not
            // would change nothing. Its `amount` counts only as a ceiling when `max` is absent.
            Some(mut leader) if leader.bidder == bidder => {
                let m = request.max.or(request.amount).unwrap_or(0);
                if m <= leader.ceiling {
                    st.leader = Some(leader);
                    return Err(Rejection::new(RejectCode::AlreadyLeading));
                }
                leader.ceiling = m;
                match s.reserve_price.filter(|&r| m >= r && r > st.price) {
                    // The raise reaches the reserve: the price moves to it, a public bid.
                    Some(reserve) => (leader, Outcome::Leading, None, reserve, m),
                    // Nothing public changes: no event, no seq, no extension.
                    None => {
                        let accepted = BidAccepted {
                            outcome: Outcome::CeilingRaised,
                            seq: st.seq,
                            amount: st.price,
                            max: m,
                            price: st.price,
                            min_next: min,
                            leader: leader.bidder.clone(),
                            leader_name: leader.name.clone(),
                            bid_count: st.bid_count,
                            ends_at: effective_end(s.ends_at, st.extended_until),
                            extended: false,
                            displaced: None,
                            reserve_met: st.reserve_met,
                            epoch: 1,
                        };
                        st.leader = Some(leader);
                        return Ok(accepted);
                    }
                }
            }
            current => {
                let a = request.amount.unwrap_or(min);
                let m = request.max.unwrap_or(a);
                if a < min || m < a {
                    st.leader = current;
                    return Err(Rejection {
                        min_next: Some(min),
                        ..Rejection::new(RejectCode::BidTooLow)
                    });
                }
                match current {
                    None => {
                        st.price = a;
                        (new_leader(m), Outcome::Leading, None, a, m)
                    }
                    Some(leader) if m > leader.ceiling => {
                        let c = leader.ceiling;
                        st.price = a.max(m.min(c + s.increments.step_at(c)));
                        (new_leader(m), Outcome::Leading, Some(leader.bidder), a, m)
                    }
                    Some(leader) => {
                        let c = leader.ceiling;
                        st.price = st.price.max(c.min(m + s.increments.step_at(m)));
                        (leader, Outcome::Outbid, None, a, m)
                    }
                }
            }
        };
        if let Some(reserve) = s.reserve_price
            && leader.ceiling >= reserve
            && reserve > st.price
        {
            st.price = reserve;
        }
        st.reserve_met = s.reserve_price.is_none_or(|reserve| st.price >= reserve);
        st.leader = Some(leader.clone());
        st.seq += 1;
        st.bid_count += 1;
        let before = effective_end(s.ends_at, st.extended_until);
        if let Some(soft) = s.soft_close
            && now >= before - soft.window_ms
        {
            st.extended_until = Some(before.max(now + soft.extension_ms));
        }
        let ends_at = effective_end(s.ends_at, st.extended_until);
        Ok(BidAccepted {
            outcome,
            seq: st.seq,
            amount,
            max,
            price: st.price,
            min_next: min_next(s, st),
            leader: leader.bidder,
            leader_name: leader.name,
            bid_count: st.bid_count,
            ends_at,
            extended: ends_at > before,
            displaced,
            reserve_met: st.reserve_met,
            epoch: 1,
        })
    }

    /// Closes the auction at `now`: at or after its effective end, or at any time when
    /// `cancel` is set. Closing twice returns the first result.
    pub fn close(&mut self, now: Millis, cancel: bool) -> CloseOutcome {
        if let Some(result) = &self.state.result {
            return CloseOutcome::Closed(result.clone());
        }
        let ends_at = self.effective_end();
        if !cancel && now < ends_at {
            return CloseOutcome::NotEnded { ends_at };
        }
        let st = &mut self.state;
        st.seq += 1;
        let sold = st.leader.as_ref().filter(|_| st.reserve_met && !cancel);
        let result = AuctionResult {
            seq: st.seq,
            winner: sold.map(|l| l.bidder.clone()),
            winner_name: sold.map(|l| l.name.clone()),
            final_price: st.leader.as_ref().map(|_| st.price),
            reserve_met: st.reserve_met,
            bid_count: st.bid_count,
            closed_at: now,
            cancelled: cancel,
        };
        st.result = Some(result.clone());
        CloseOutcome::Closed(result)
    }

    /// Rule 1: open by time, and not closed.
    fn check_open(&self, now: Millis) -> Result<(), Rejection> {
        if self.state.result.is_some() || now >= self.effective_end() {
            return Err(Rejection::new(RejectCode::AuctionClosed));
        }
        if self.settings.starts_at.is_some_and(|start| now < start) {
            return Err(Rejection::new(RejectCode::AuctionNotOpen));
        }
        Ok(())
    }

    /// The per-bidder token bucket; every bid on an open auction costs one token.
    fn take_token(&mut self, bidder: &str, now: Millis) -> Result<(), Rejection> {
        let Some(limit) = self.settings.bid_limit else {
            return Ok(());
        };
        let rate = i64::from(limit.per_second);
        let capacity = i64::from(limit.burst) * 1000;
        let bucket = self.buckets.get(bidder).copied().unwrap_or(Bucket {
            millitokens: capacity,
            at: now,
        });
        let elapsed = (now - bucket.at).max(0);
        let millitokens = capacity.min(bucket.millitokens + elapsed * rate);
        if millitokens < 1000 {
            return Err(Rejection {
                retry_after_ms: Some((1000 - millitokens + rate - 1) / rate),
                ..Rejection::new(RejectCode::RateLimited)
            });
        }
        self.buckets.insert(
            bidder.to_owned(),
            Bucket {
                millitokens: millitokens - 1000,
                at: now.max(bucket.at),
            },
        );
        Ok(())
    }
}

/// The scheduled end moved by any soft-close extension.
pub fn effective_end(ends_at: Millis, extended_until: Option<Millis>) -> Millis {
    extended_until.map_or(ends_at, |ext| ext.max(ends_at))
}

/// The lowest amount that can take the lead now: the starting price before the first
/// bid, then `P + inc(P)`.
pub fn min_next(settings: &AuctionSettings, state: &AuctionState) -> Amount {
    if state.leader.is_none() {
        settings.starting_price
    } else {
        state.price + settings.increments.step_at(state.price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{BidLimit, Increments, SoftClose, Tier};

    fn flat(step: Amount) -> AuctionSettings {
        AuctionSettings {
            title: "t".into(),
            currency: "USD".into(),
            starting_price: 1,
            reserve_price: None,
            increments: Increments::flat(step).unwrap(),
            starts_at: Some(1_000),
            ends_at: 100_000,
            soft_close: None,
            bid_limit: None,
        }
    }

    fn amount(a: Amount) -> BidRequest {
        BidRequest {
            amount: Some(a),
            max: None,
        }
    }

    fn max(m: Amount) -> BidRequest {
        BidRequest {
            amount: None,
            max: Some(m),
        }
    }

    fn bid(m: &mut AuctionModel, who: &str, req: BidRequest) -> Result<BidAccepted, Rejection> {
        m.place_bid(who, &who.to_uppercase(), req, 5_000)
    }

    #[test]
    fn seed_example_ends_at_192() {
        let mut m = AuctionModel::new(flat(2));
        let steps = [
            ("a", amount(100), Outcome::Leading, "a", 100),
            ("b", amount(105), Outcome::Leading, "b", 105),
            ("c", max(200), Outcome::Leading, "c", 107),
            ("d", amount(120), Outcome::Outbid, "c", 122),
            ("e", max(190), Outcome::Outbid, "c", 192),
        ];
        for (i, (who, req, outcome, leader, price)) in steps.into_iter().enumerate() {
            let r = bid(&mut m, who, req).unwrap();
            assert_eq!(
                (r.outcome, r.leader.as_str(), r.price, r.seq),
                (outcome, leader, price, i as u64 + 1),
                "step {who}"
            );
        }
        assert_eq!(m.state().leader.as_ref().unwrap().ceiling, 200);
        assert_eq!(m.min_next(), 194);
    }

    #[test]
    fn first_bid_must_reach_the_starting_price() {
        let mut s = flat(10);
        s.starting_price = 500;
        let mut m = AuctionModel::new(s);
        let r = bid(&mut m, "a", amount(499)).unwrap_err();
        assert_eq!((r.code, r.min_next), (RejectCode::BidTooLow, Some(500)));
        let r = bid(&mut m, "a", max(499)).unwrap_err();
        assert_eq!(r.code, RejectCode::BidTooLow);
        assert_eq!(m.state().seq, 0);
        let r = bid(&mut m, "a", max(900)).unwrap();
        assert_eq!((r.price, r.max), (500, 900));
    }

    #[test]
    fn equal_ceiling_loses_to_the_earlier_one() {
        let mut m = AuctionModel::new(flat(5));
        bid(&mut m, "a", max(300)).unwrap();
        let r = bid(&mut m, "b", max(300)).unwrap();
        assert_eq!(
            (r.outcome, r.leader.as_str(), r.price),
            (Outcome::Outbid, "a", 300)
        );
        let r = bid(&mut m, "b", amount(300)).unwrap_err();
        assert_eq!((r.code, r.min_next), (RejectCode::BidTooLow, Some(305)));
    }

    #[test]
    fn new_leader_pays_one_step_over_the_old_ceiling() {
        let mut m = AuctionModel::new(flat(5));
        bid(&mut m, "a", max(300)).unwrap();
        let r = bid(&mut m, "b", max(1_000)).unwrap();
        assert_eq!(r.displaced.as_deref(), Some("a"));
        assert_eq!((r.outcome, r.price), (Outcome::Leading, 305));
        let r = bid(
            &mut m,
            "c",
            BidRequest {
                amount: Some(800),
                max: Some(2_000),
            },
        )
        .unwrap();
        assert_eq!((r.price, r.displaced.as_deref()), (1_005, Some("b")));
        // Outbidding by less than a step over the ceiling caps the price at the new ceiling.
        let r = bid(&mut m, "d", max(2_001)).unwrap();
        assert_eq!(r.price, 2_001);
    }

    #[test]
    fn leader_raises_its_own_ceiling_without_moving_the_price() {
        let mut m = AuctionModel::new(flat(5));
        bid(&mut m, "a", amount(100)).unwrap();
        let r = bid(&mut m, "a", max(500)).unwrap();
        assert_eq!(
            (r.outcome, r.price, r.leader.as_str(), r.max),
            (Outcome::CeilingRaised, 100, "a", 500)
        );
        assert_eq!(m.state().leader.as_ref().unwrap().ceiling, 500);
        let r = bid(&mut m, "b", amount(400)).unwrap();
        assert_eq!((r.leader.as_str(), r.price), ("a", 405));
    }

    /// A leader's bid that does not raise its own ceiling changes nothing: refused, and
    /// nothing moves (the token bucket excepted).
    #[test]
    fn leader_bid_that_does_not_raise_its_ceiling_is_refused() {
        let mut m = AuctionModel::new(flat(5));
        bid(&mut m, "a", max(500)).unwrap();
        let before = m.state().clone();
        for req in [
            max(100),
            max(500),
            amount(300),
            amount(500),
            BidRequest {
                amount: Some(200),
                max: Some(400),
            },
        ] {
            let e = bid(&mut m, "a", req).unwrap_err();
            assert_eq!(
                (e.code, e.min_next, e.retry_after_ms),
                (RejectCode::AlreadyLeading, None, None),
                "{req:?}"
            );
            assert_eq!(m.state(), &before, "{req:?}");
        }
        // An `amount` above the ceiling is taken as the new ceiling.
        let r = bid(&mut m, "a", amount(600)).unwrap();
        assert_eq!(
            (r.outcome, r.max, r.price),
            (Outcome::CeilingRaised, 600, 1)
        );
        assert_eq!(m.state().leader.as_ref().unwrap().ceiling, 600);
    }

    /// The attack of issue #10: a leader re-bidding in the soft-close window kept the
    /// auction open for ever. A raise is not a public bid: no seq, no count, no extension.
    #[test]
    fn leader_raise_is_private_and_never_extends_the_soft_close() {
        let mut s = flat(1);
        s.soft_close = Some(SoftClose {
            window_ms: 10_000,
            extension_ms: 30_000,
        });
        let mut m = AuctionModel::new(s);
        m.place_bid("a", "A", max(500), 95_000).unwrap();
        assert_eq!(m.effective_end(), 125_000);
        let public = (m.state().seq, m.state().bid_count, m.state().price);
        let mut now = 115_000;
        for _ in 0..5 {
            let e = m.place_bid("a", "A", max(100), now).unwrap_err();
            assert_eq!(e.code, RejectCode::AlreadyLeading);
            now += 2_000;
        }
        let r = m.place_bid("a", "A", max(900), 124_000).unwrap();
        assert_eq!(
            (r.outcome, r.seq, r.bid_count, r.extended, r.ends_at),
            (Outcome::CeilingRaised, 1, 1, false, 125_000)
        );
        assert_eq!(
            (m.state().seq, m.state().bid_count, m.state().price),
            public
        );
        assert_eq!(m.effective_end(), 125_000);
        let e = m.place_bid("a", "A", max(1_000), 125_000).unwrap_err();
        assert_eq!(e.code, RejectCode::AuctionClosed);
        // The raised ceiling still decides against others.
        let CloseOutcome::Closed(res) = m.close(125_000, false) else {
            panic!()
        };
        assert_eq!((res.winner.as_deref(), res.seq), (Some("a"), 2));
    }

    /// A raise that lifts the price to the reserve changes a public fact: it is a bid like
    /// any other (`leading`, its own seq, counted, and it extends the soft close).
    #[test]
    fn leader_raise_reaching_the_reserve_is_a_public_bid() {
        let mut s = flat(10);
        s.reserve_price = Some(1_000);
        s.soft_close = Some(SoftClose {
            window_ms: 10_000,
            extension_ms: 30_000,
        });
        let mut m = AuctionModel::new(s);
        m.place_bid("a", "A", max(500), 50_000).unwrap();
        let r = m.place_bid("a", "A", max(800), 95_000).unwrap();
        assert_eq!(
            (r.outcome, r.seq, r.extended),
            (Outcome::CeilingRaised, 1, false)
        );
        let r = m.place_bid("a", "A", max(1_500), 95_000).unwrap();
        assert_eq!(
            (
                r.outcome,
                r.seq,
                r.bid_count,
                r.amount,
                r.price,
                r.reserve_met,
                r.extended,
                r.ends_at
            ),
            (Outcome::Leading, 2, 2, 1_000, 1_000, true, true, 125_000)
        );
        assert_eq!(r.displaced, None);
        // Above the reserve, raises are private again.
        let r = m.place_bid("a", "A", max(2_000), 96_000).unwrap();
        assert_eq!(
            (r.outcome, r.seq, r.price),
            (Outcome::CeilingRaised, 2, 1_000)
        );
    }

    #[test]
    fn tiers_change_the_step_with_the_price() {
        let mut s = flat(1);
        s.increments = Increments::new(vec![
            Tier { from: 0, step: 100 },
            Tier {
                from: 10_000,
                step: 500,
            },
        ])
        .unwrap();
        let mut m = AuctionModel::new(s);
        bid(&mut m, "a", amount(9_950)).unwrap();
        assert_eq!(m.min_next(), 10_050);
        bid(&mut m, "b", amount(10_050)).unwrap();
        assert_eq!(m.min_next(), 10_550);
        // Runner-up's ceiling plus the step of *its* tier.
        bid(&mut m, "c", max(20_000)).unwrap();
        let r = bid(&mut m, "d", max(12_000)).unwrap();
        assert_eq!((r.leader.as_str(), r.price), ("c", 12_500));
    }

    #[test]
    fn reserve_pulls_the_price_up_when_the_ceiling_allows() {
        let mut s = flat(10);
        s.reserve_price = Some(1_000);
        let mut m = AuctionModel::new(s);
        let r = bid(&mut m, "a", max(500)).unwrap();
        assert_eq!((r.price, r.reserve_met), (1, false));
        let r = bid(&mut m, "b", max(2_000)).unwrap();
        assert_eq!((r.price, r.reserve_met), (1_000, true));
        let mut m2 = AuctionModel::new(m.settings().clone());
        bid(&mut m2, "a", amount(100)).unwrap();
        let r = bid(&mut m2, "a", max(1_000)).unwrap();
        assert_eq!((r.price, r.reserve_met), (1_000, true));
        let CloseOutcome::Closed(res) = m2.close(200_000, false) else {
            panic!()
        };
        assert_eq!(
            (res.winner.as_deref(), res.final_price),
            (Some("a"), Some(1_000))
        );
    }

    #[test]
    fn unmet_reserve_means_no_winner() {
        let mut s = flat(10);
        s.reserve_price = Some(1_000);
        let mut m = AuctionModel::new(s);
        bid(&mut m, "a", amount(900)).unwrap();
        let CloseOutcome::Closed(res) = m.close(100_000, false) else {
            panic!()
        };
        assert_eq!(
            (res.winner, res.final_price, res.reserve_met),
            (None, Some(900), false)
        );
    }

    #[test]
    fn open_only_between_start_and_effective_end() {
        let mut m = AuctionModel::new(flat(1));
        let e = m.place_bid("a", "A", amount(5), 999).unwrap_err();
        assert_eq!(e.code, RejectCode::AuctionNotOpen);
        let e = m.place_bid("a", "A", amount(5), 100_000).unwrap_err();
        assert_eq!(e.code, RejectCode::AuctionClosed);
        m.place_bid("a", "A", amount(5), 1_000).unwrap();
        m.place_bid("b", "B", amount(6), 99_999).unwrap();
        assert_eq!(
            m.close(99_999, false),
            CloseOutcome::NotEnded { ends_at: 100_000 }
        );
        let CloseOutcome::Closed(first) = m.close(100_000, false) else {
            panic!()
        };
        assert_eq!(first.seq, 3);
        assert_eq!(m.close(500_000, false), CloseOutcome::Closed(first));
        let e = m.place_bid("c", "C", amount(50), 99_999).unwrap_err();
        assert_eq!(e.code, RejectCode::AuctionClosed);
    }

    #[test]
    fn cancel_closes_early_without_a_winner() {
        let mut m = AuctionModel::new(flat(1));
        bid(&mut m, "a", amount(5)).unwrap();
        let CloseOutcome::Closed(r) = m.close(2_000, true) else {
            panic!()
        };
        assert_eq!(
            (r.winner, r.final_price, r.cancelled),
            (None, Some(5), true)
        );
    }

    #[test]
    fn soft_close_extends_from_the_bid_time() {
        let mut s = flat(1);
        s.soft_close = Some(SoftClose {
            window_ms: 10_000,
            extension_ms: 30_000,
        });
        let mut m = AuctionModel::new(s);
        let r = m.place_bid("a", "A", amount(5), 89_999).unwrap();
        assert_eq!((r.extended, r.ends_at), (false, 100_000));
        let r = m.place_bid("b", "B", amount(6), 90_000).unwrap();
        assert_eq!((r.extended, r.ends_at), (true, 120_000));
        let r = m.place_bid("a", "A", amount(7), 119_000).unwrap();
        assert_eq!((r.extended, r.ends_at), (true, 149_000));
        let e = m.place_bid("b", "B", amount(8), 149_000).unwrap_err();
        assert_eq!(e.code, RejectCode::AuctionClosed);
        // Extension shorter than what is left never shortens the auction.
        let mut s = flat(1);
        s.soft_close = Some(SoftClose {
            window_ms: 50_000,
            extension_ms: 1_000,
        });
        let mut m = AuctionModel::new(s);
        let r = m.place_bid("a", "A", amount(5), 60_000).unwrap();
        assert_eq!((r.extended, r.ends_at), (false, 100_000));
    }

    #[test]
    fn rate_limit_is_a_token_bucket_per_bidder() {
        let mut s = flat(1);
        s.bid_limit = Some(BidLimit {
            per_second: 2,
            burst: 3,
        });
        let mut m = AuctionModel::new(s);
        for i in 0..3 {
            m.place_bid("a", "A", amount(10 + i), 2_000).unwrap();
        }
        let e = m.place_bid("a", "A", amount(20), 2_000).unwrap_err();
        assert_eq!(
            (e.code, e.retry_after_ms),
            (RejectCode::RateLimited, Some(500))
        );
        m.place_bid("b", "B", amount(20), 2_000).unwrap();
        let e = m.place_bid("a", "A", amount(30), 2_400).unwrap_err();
        assert_eq!(e.retry_after_ms, Some(100));
        m.place_bid("a", "A", amount(30), 2_500).unwrap();
    }

    #[test]
    fn invalid_amounts_change_nothing() {
        let mut m = AuctionModel::new(flat(1));
        let before = m.state().clone();
        for req in [
            BidRequest::default(),
            amount(0),
            amount(-5),
            amount(MAX_AMOUNT + 1),
            amount(i64::MAX),
            max(0),
            BidRequest {
                amount: Some(10),
                max: Some(9),
            },
        ] {
            let e = bid(&mut m, "a", req).unwrap_err();
            assert_eq!(e.code, RejectCode::InvalidAmount, "{req:?}");
        }
        assert_eq!(m.state(), &before);
    }

    #[test]
    fn largest_amounts_do_not_overflow() {
        let mut s = flat(MAX_AMOUNT);
        s.reserve_price = Some(MAX_AMOUNT);
        let mut m = AuctionModel::new(s);
        bid(&mut m, "a", amount(MAX_AMOUNT - 1)).unwrap();
        assert_eq!(m.min_next(), 2 * MAX_AMOUNT - 1);
        let e = bid(&mut m, "b", max(MAX_AMOUNT)).unwrap_err();
        assert_eq!(e.code, RejectCode::BidTooLow);
        let r = bid(&mut m, "a", max(MAX_AMOUNT)).unwrap();
        assert_eq!(r.price, MAX_AMOUNT);
    }
}
