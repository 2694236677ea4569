-- The durable record becomes complete enough to rebuild an auction's live state in Redis.

-- Every event exactly as the Lua script emitted it (bids with their private ceilings, the
-- close), keyed like the stream. Private: it holds ceilings. It is what a restore reads,
-- what `since` replays once Redis has trimmed or dropped the stream, and what a replayed
-- event is compared with: the same (auction, seq) with other content is a conflict.
CREATE TABLE events (
    auction_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL CHECK (seq > 0),
    epoch       BIGINT NOT NULL,
    event       JSONB NOT NULL,
    PRIMARY KEY (auction_id, seq)
);

-- The incarnation of the auction's live state: 1 when first provisioned, one more at each
-- restore from PostgreSQL. Events carry it, so clients tell a restored history apart.
ALTER TABLE auctions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 1;

-- Auctions whose live state was removed from Redis after their retention (see `results`).
ALTER TABLE results ADD COLUMN retired_at TIMESTAMPTZ;
