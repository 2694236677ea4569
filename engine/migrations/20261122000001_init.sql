-- Gavel's durable record. Redis decides while an auction is open; this is what stays.

-- One row per provisioned auction, upserted by the operator.
CREATE TABLE auctions (
    auction_id      TEXT PRIMARY KEY,              -- <namespace>/<name>
    title           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    starting_price  BIGINT NOT NULL CHECK (starting_price > 0),
    reserve_price   BIGINT CHECK (reserve_price >= starting_price),
    increments      JSONB NOT NULL,
    starts_at       TIMESTAMPTZ,
    ends_at         TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every accepted bid, exactly once per (auction, seq). Public: no ceilings here.
CREATE TABLE bids (
    auction_id   TEXT NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq > 0),
    bidder_id    TEXT NOT NULL,
    bidder_name  TEXT NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    outcome      TEXT NOT NULL CHECK (outcome IN ('leading', 'outbid', 'ceiling_raised')),
    price_after  BIGINT NOT NULL,
    leader_after TEXT NOT NULL,
    placed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (auction_id, seq)
);

-- Proxy ceilings, kept apart so that no public query can reach them by accident.
CREATE TABLE bid_ceilings (
    auction_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    max_amount  BIGINT NOT NULL CHECK (max_amount > 0),
    PRIMARY KEY (auction_id, seq),
    FOREIGN KEY (auction_id, seq) REFERENCES bids (auction_id, seq) ON DELETE CASCADE
);

-- The result of each closed auction, written once.
CREATE TABLE results (
    auction_id   TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL,
    winner_id    TEXT,
    winner_name  TEXT,
    final_price  BIGINT,
    reserve_met  BOOLEAN NOT NULL,
    bid_count    BIGINT NOT NULL,
    cancelled    BOOLEAN NOT NULL,
    closed_at    TIMESTAMPTZ NOT NULL
);
