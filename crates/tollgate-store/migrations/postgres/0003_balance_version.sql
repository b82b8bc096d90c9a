-- Every change to a balance bumps its version, so a node that caches balances can tell a fresh reading from a stale
-- one whichever process (another node, the CLI) made the change. As migrations/sqlite/0003.
ALTER TABLE credit_balances ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
