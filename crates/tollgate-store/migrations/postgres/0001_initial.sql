-- Tenants, projects, members and API keys: the same tables as migrations/sqlite/0001, in PostgreSQL's types. Times
-- are Unix seconds (BIGINT); ids are prefixed, time-ordered strings, so ordering by id is ordering by creation
-- (cursor pagination relies on it): every id column uses the "C" collation, which orders by bytes as SQLite does,
-- whatever the database's locale. Statuses stay TEXT with CHECKs, as on SQLite, so one decoder reads both.

CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE projects (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at  BIGINT NOT NULL
);
CREATE INDEX projects_by_tenant ON projects (tenant_id, id);

CREATE TABLE members (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant_id      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    email          TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    password_hash  TEXT,
    created_at     BIGINT NOT NULL,
    removed_at     BIGINT              -- removed members stay, so their keys and history keep their owner
);
-- An email is unique among a tenant's current members; a removed member's email may be added again.
CREATE UNIQUE INDEX members_email ON members (tenant_id, email) WHERE removed_at IS NULL;
CREATE INDEX members_by_tenant ON members (tenant_id, id);

-- One table for both kinds: a project key has project_id, an admin key has member_id, never both.
-- `digest` is SHA-256 of the whole key; the key itself is never stored.
CREATE TABLE api_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    kind          TEXT NOT NULL CHECK (kind IN ('project', 'admin')),
    project_id    TEXT COLLATE "C" REFERENCES projects (id),
    member_id     TEXT COLLATE "C" REFERENCES members (id),
    name          TEXT NOT NULL,
    description   TEXT,
    digest        BYTEA NOT NULL UNIQUE CHECK (length(digest) = 32),
    prefix        TEXT NOT NULL,
    last4         TEXT NOT NULL,
    created_by    TEXT COLLATE "C",
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    rolled_from   TEXT COLLATE "C",
    -- JSON text, as on SQLite (the store reads and writes it whole, never queries inside it); the casts check it.
    allowed_ips   TEXT NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(allowed_ips::jsonb) = 'array'),  -- CIDR strings; empty: any source
    models        TEXT CHECK (jsonb_typeof(models::jsonb) = 'array'),                             -- public model ids; NULL: all
    CHECK ((kind = 'project' AND project_id IS NOT NULL AND member_id IS NULL)
        OR (kind = 'admin' AND member_id IS NOT NULL AND project_id IS NULL))
);
CREATE INDEX api_keys_by_project ON api_keys (project_id, id) WHERE project_id IS NOT NULL;
CREATE INDEX api_keys_by_member ON api_keys (member_id, id) WHERE member_id IS NOT NULL;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
