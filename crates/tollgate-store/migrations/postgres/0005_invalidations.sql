-- The change log, as migrations/sqlite/0005: one row for each change that makes a node's cached keys wrong
-- (ChangeLog), written by triggers in the same transaction as the change, so every writer is covered (the API on any
-- node, the CLI, whatever is added later). A row names a key (`digest`), every key of a tenant (`tenant_id`), or,
-- with both NULL, every key; `created_ms` is the database's clock in Unix milliseconds.
--
-- Ids come from a sequence, which hands them out when a row is inserted, not when its transaction commits: a row
-- with a lower id can become visible after one with a higher id. Readers therefore re-read a trailing window by
-- `created_ms` instead of reading past the last id they saw. `clock_timestamp()`, not `now()` (the start of the
-- transaction), so that only the time between the change and its commit counts against that window.
CREATE TABLE invalidations (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest      BYTEA CHECK (length(digest) = 32),
    tenant_id   TEXT COLLATE "C",
    created_ms  BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);
CREATE INDEX invalidations_by_time ON invalidations (created_ms);

-- Logs the changed key (`OLD.digest`: the row may be gone) and wakes listening nodes. Notifications are sent at
-- commit, only if it commits, and identical ones of a transaction are folded into one.
CREATE FUNCTION invalidate_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO invalidations (digest) VALUES (OLD.digest);
    PERFORM pg_notify('tollgate_changes', '');
    RETURN NULL;
END
$$;

-- Logs the tenant whose keys' principals changed; `TG_ARGV[0]` says whether the row is the tenant itself.
CREATE FUNCTION invalidate_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[0] = 'self' THEN
        INSERT INTO invalidations (tenant_id) VALUES (NEW.id);
    ELSE
        INSERT INTO invalidations (tenant_id) VALUES (NEW.tenant_id);
    END IF;
    PERFORM pg_notify('tollgate_changes', '');
    RETURN NULL;
END
$$;

-- `UPDATE OF` fires only for statements that SET a listed column, so the settlement's `last_used_at` writes (every
-- batch) never fire it; WHEN skips rows the statement did not change (a second revocation keeps the first time).
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at, expires_at, allowed_ips, models ON api_keys
FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
    OR OLD.allowed_ips IS DISTINCT FROM NEW.allowed_ips OR OLD.models IS DISTINCT FROM NEW.models)
EXECUTE FUNCTION invalidate_key();

CREATE TRIGGER api_keys_invalidate_deleted AFTER DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION invalidate_key();

CREATE TRIGGER members_invalidate AFTER UPDATE OF role, removed_at ON members
FOR EACH ROW WHEN (OLD.role IS DISTINCT FROM NEW.role OR OLD.removed_at IS DISTINCT FROM NEW.removed_at)
EXECUTE FUNCTION invalidate_tenant('member');

CREATE TRIGGER projects_invalidate AFTER UPDATE OF status ON projects
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION invalidate_tenant('project');

CREATE TRIGGER tenants_invalidate AFTER UPDATE OF plan, status ON tenants
FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan OR OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION invalidate_tenant('self');
