-- The two rows every answered request appends (its ledger entry and usage row) no longer check their tenant with a
-- foreign key. Each check is a trigger running a locking read of the tenant's row per inserted row: a sixth of the
-- server's time per request under load (BENCHMARKS.md, issue 11). Nothing it guarded can happen: both rows are
-- written only by settlement, for the tenant of an authenticated key, and by grants, which lock the tenant's row
-- first; tenants are never deleted. SQLite keeps its checks, which run in process and cost little.
ALTER TABLE ledger_entries DROP CONSTRAINT IF EXISTS ledger_entries_tenant_id_fkey;
ALTER TABLE usage_records DROP CONSTRAINT IF EXISTS usage_records_tenant_id_fkey;
