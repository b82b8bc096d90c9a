-- Dashboard sessions (SessionStore): one row per sign-in, holding the SHA-256 digest of the cookie's token (never
-- the token), the member it acts as, and its absolute expiry; `last_seen_at` moves forward with use, and idle
-- expiry counts from it. A lookup joins the member and its tenant, so the role it acts with is always the member's
-- current one, and a removed member's sessions end with it.
--
-- * Every request of a signed-in member finds its session by digest: UNIQUE gives it its index, and makes two
--   sessions with one token impossible.
-- * Members are never deleted (0001: removal sets `removed_at`), so the foreign keys hold for a session's life.
-- * Pruning deletes ended sessions: past `expires_at`, or signed out (`revoked_at`, indexed only where set).
CREATE TABLE dashboard_sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    digest        BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    member_id     TEXT NOT NULL REFERENCES members (id),
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
CREATE INDEX dashboard_sessions_by_revocation ON dashboard_sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Signing in looks an email up across tenants; members_email (0001) leads with tenant_id and cannot serve it.
CREATE INDEX members_by_email ON members (email) WHERE removed_at IS NULL;
