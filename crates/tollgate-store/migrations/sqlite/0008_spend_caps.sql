-- Spend caps (issue 13): what a capped key has spent in its period, and each node's lease on what it may still
-- spend, as credit_leases (0004) are on a tenant's balance.
--
-- The counter lives on the key's row: charges add to it in the settlement's transaction, for the period starting at
-- `spent_period_start` (the UTC month's first second, or 0 for a `total` cap); a charge in a later period starts
-- it afresh. Neither column is in the change log's trigger: spending changes nothing a cached principal carries.
ALTER TABLE api_keys ADD COLUMN spent_micros INTEGER NOT NULL DEFAULT 0 CHECK (spent_micros >= 0);
ALTER TABLE api_keys ADD COLUMN spent_period_start INTEGER NOT NULL DEFAULT 0;

-- A node's reservation of a capped key's remaining cap; only that node writes its row. The store grants at most
-- the cap less the period's spending less every other live lease.
CREATE TABLE key_leases (
    key_id         TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    amount_micros  INTEGER NOT NULL CHECK (amount_micros >= 0),
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (key_id, node_id)
) WITHOUT ROWID;
CREATE INDEX key_leases_by_node ON key_leases (node_id);
