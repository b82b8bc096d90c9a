-- Every change to a balance bumps its version, so a node that caches balances can tell a fresh reading from a stale
-- one whichever process (another node, the CLI) made the change.
ALTER TABLE credit_balances ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
