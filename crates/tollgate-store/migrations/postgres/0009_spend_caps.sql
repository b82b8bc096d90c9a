-- Spend caps (issue 13), as migrations/sqlite/0008: the key's spending in its cap's period, counted on its row in
-- the settlement's transaction (not in the change log's trigger), and each node's lease on what it may still spend.
ALTER TABLE api_keys
    ADD COLUMN spent_micros BIGINT NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    ADD COLUMN spent_period_start BIGINT NOT NULL DEFAULT 0;

CREATE TABLE key_leases (
    key_id         TEXT COLLATE "C" NOT NULL,
    node_id        TEXT COLLATE "C" NOT NULL,
    amount_micros  BIGINT NOT NULL CHECK (amount_micros >= 0),
    expires_at     BIGINT NOT NULL,
    PRIMARY KEY (key_id, node_id)
);
CREATE INDEX key_leases_by_node ON key_leases (node_id);
