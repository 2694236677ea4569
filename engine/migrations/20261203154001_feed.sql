-- The outbound event feed (README § Event feed, docs/design.md § The event feed): public
-- CloudEvents derived from the record, delivered at least once, in order per auction, to
-- HTTP sinks by the operator's dispatcher.

-- An Auction's own sink (spec.sink.uri), written by the operator with the settings.
ALTER TABLE auctions ADD COLUMN sink_uri TEXT;

-- Events waiting to be fanned out to the sinks: filled in the flusher's transaction (bids,
-- closes) and by the operator (opened, restored). Public: the JSON holds no ceiling. Rows
-- leave as soon as the dispatcher copied them to `feed_deliveries`.
-- `(seq, rank, epoch)` orders an auction's events: `seq` is the record's (0 for the
-- opening), `rank` orders the events one seq gives (bid, outbid, extended; restored last).
CREATE TABLE feed_outbox (
    id          BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL,
    auction_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL CHECK (seq >= 0),
    rank        SMALLINT NOT NULL,
    epoch       BIGINT NOT NULL,
    event       JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per event and sink still to deliver; removed once delivered or dead-lettered.
CREATE TABLE feed_deliveries (
    sink        TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    auction_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    rank        SMALLINT NOT NULL,
    epoch       BIGINT NOT NULL,
    event       JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    attempts    INT NOT NULL DEFAULT 0,
    next_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error  TEXT,
    PRIMARY KEY (sink, event_id)
);
CREATE INDEX feed_deliveries_order ON feed_deliveries (sink, auction_id, seq, rank, epoch);

-- How far each sink got in each auction: the last delivered seq and epoch (-1: nothing yet,
-- the opening first).
CREATE TABLE feed_cursors (
    sink        TEXT NOT NULL,
    auction_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    PRIMARY KEY (sink, auction_id)
);

-- Events a sink refused for good (or too many times), with the last error: listed and
-- replayed with `gavel feed`.
CREATE TABLE feed_dead_letters (
    sink        TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    auction_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    rank        SMALLINT NOT NULL,
    epoch       BIGINT NOT NULL,
    event       JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    attempts    INT NOT NULL,
    last_error  TEXT NOT NULL,
    uri         TEXT,
    dead_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, event_id)
);
