-- Tenants, projects, members and API keys. Times are Unix seconds; ids are prefixed, time-ordered strings, so
-- ordering by id is ordering by creation (cursor pagination relies on it).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at  INTEGER NOT NULL
);
CREATE INDEX projects_by_tenant ON projects (tenant_id, id);

CREATE TABLE members (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    email          TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    password_hash  TEXT,
    created_at     INTEGER NOT NULL,
    removed_at     INTEGER              -- removed members stay, so their keys and history keep their owner
);
-- An email is unique among a tenant's current members; a removed member's email may be added again.
CREATE UNIQUE INDEX members_email ON members (tenant_id, email) WHERE removed_at IS NULL;
CREATE INDEX members_by_tenant ON members (tenant_id, id);

-- One table for both kinds: a project key has project_id, an admin key has member_id, never both.
-- `digest` is SHA-256 of the whole key; the key itself is never stored.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    kind          TEXT NOT NULL CHECK (kind IN ('project', 'admin')),
    project_id    TEXT REFERENCES projects (id),
    member_id     TEXT REFERENCES members (id),
    name          TEXT NOT NULL,
    description   TEXT,
    digest        BLOB NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    last4         TEXT NOT NULL,
    created_by    TEXT,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    rolled_from   TEXT,
    allowed_ips   TEXT NOT NULL DEFAULT '[]',  -- JSON array of CIDR strings; empty means any source
    models        TEXT,                        -- JSON array of public model ids; NULL means all
    CHECK ((kind = 'project' AND project_id IS NOT NULL AND member_id IS NULL)
        OR (kind = 'admin' AND member_id IS NOT NULL AND project_id IS NULL))
);
CREATE INDEX api_keys_by_project ON api_keys (project_id, id) WHERE project_id IS NOT NULL;
CREATE INDEX api_keys_by_member ON api_keys (member_id, id) WHERE member_id IS NOT NULL;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
