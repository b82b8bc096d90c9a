-- Dashboard sessions: the same table and indexes as migrations/sqlite/0012_sessions.sql, which explains them.
CREATE TABLE dashboard_sessions (
    id            TEXT COLLATE "C" PRIMARY KEY,
    digest        BYTEA NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    member_id     TEXT COLLATE "C" NOT NULL REFERENCES members (id),
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
CREATE INDEX dashboard_sessions_by_revocation ON dashboard_sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE INDEX members_by_email ON members (email) WHERE removed_at IS NULL;
