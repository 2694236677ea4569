-- A leader's raises of its own ceiling that changed no public fact (README § Bidding rules).
-- They are not bids: no seq of their own, never in `events` or `bids`, never shown; private
-- like `bid_ceilings`, kept for audit and so that a restore gives the leader its ceiling.
-- `after_seq` is the public event the raise followed, in `epoch`. A raise strictly raises
-- the leader's ceiling, so (auction, epoch, after_seq, max_amount) names it.
CREATE TABLE ceiling_raises (
    auction_id  TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    after_seq   BIGINT NOT NULL CHECK (after_seq > 0),
    max_amount  BIGINT NOT NULL CHECK (max_amount > 0),
    bidder_id   TEXT NOT NULL,
    raised_at   TIMESTAMPTZ NOT NULL,
    event       JSONB NOT NULL,
    PRIMARY KEY (auction_id, epoch, after_seq, max_amount)
);

CREATE INDEX ceiling_raises_bidder ON ceiling_raises (auction_id, bidder_id);
