-- The change log: one row for each change that makes a node's cached keys wrong (ChangeLog), written by triggers
-- in the same transaction as the change, so every writer is covered: the API on any node, the CLI, and whatever
-- is added later. Nodes read the last few seconds of it several times a second and forget what a row names.
--
-- A row names a key (`digest`, its SHA-256), or every key of a tenant (`tenant_id`), or, with both NULL, every key.
-- `created_ms` is the database's own clock (Unix milliseconds), so readers on machines whose clocks differ agree on
-- which rows are recent. Old rows are pruned by the nodes.
CREATE TABLE invalidations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even once pruning has emptied the table
    digest      BLOB,
    tenant_id   TEXT,
    created_ms  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
);
CREATE INDEX invalidations_by_time ON invalidations (created_ms);

-- A key's state as authentication sees it. `UPDATE OF` fires only for statements that SET a listed column, so the
-- settlement's `last_used_at` writes (every batch) never fire it; WHEN skips statements that changed nothing (a
-- second revocation keeps the first time).
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at, expires_at, allowed_ips, models ON api_keys
FOR EACH ROW WHEN OLD.revoked_at IS NOT NEW.revoked_at OR OLD.expires_at IS NOT NEW.expires_at
    OR OLD.allowed_ips IS NOT NEW.allowed_ips OR OLD.models IS NOT NEW.models
BEGIN
    INSERT INTO invalidations (digest) VALUES (NEW.digest);
END;

CREATE TRIGGER api_keys_invalidate_deleted AFTER DELETE ON api_keys
BEGIN
    INSERT INTO invalidations (digest) VALUES (OLD.digest);
END;

-- What a principal carries from its member, project and tenant: a change to any of them concerns every cached key
-- of the tenant (and only those).
CREATE TRIGGER members_invalidate AFTER UPDATE OF role, removed_at ON members
FOR EACH ROW WHEN OLD.role IS NOT NEW.role OR OLD.removed_at IS NOT NEW.removed_at
BEGIN
    INSERT INTO invalidations (tenant_id) VALUES (NEW.tenant_id);
END;

CREATE TRIGGER projects_invalidate AFTER UPDATE OF status ON projects
FOR EACH ROW WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO invalidations (tenant_id) VALUES (NEW.tenant_id);
END;

CREATE TRIGGER tenants_invalidate AFTER UPDATE OF plan, status ON tenants
FOR EACH ROW WHEN OLD.plan IS NOT NEW.plan OR OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO invalidations (tenant_id) VALUES (NEW.id);
END;
