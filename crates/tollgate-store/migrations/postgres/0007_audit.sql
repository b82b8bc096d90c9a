-- The audit log and its hash chains: the same tables as migrations/sqlite/0006_audit.sql, which explains them.
CREATE TABLE audit_events (
    id                 TEXT COLLATE "C" NOT NULL UNIQUE,
    tenant_id          TEXT COLLATE "C" NOT NULL,
    seq                BIGINT NOT NULL,
    type               TEXT NOT NULL,
    effective_at       BIGINT NOT NULL,
    actor_type         TEXT NOT NULL,
    actor_id           TEXT,
    target_id          TEXT,
    project_id         TEXT,
    key_id             TEXT,
    key_last4          TEXT,
    model              TEXT,
    status             BIGINT,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    cost_micros        BIGINT,
    latency_ms         BIGINT,
    request_id         TEXT,
    source_ip          TEXT,
    user_agent         TEXT,
    details            TEXT,
    hash               TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE audit_chains (
    tenant_id    TEXT COLLATE "C" PRIMARY KEY REFERENCES tenants (id),
    seq          BIGINT NOT NULL,
    hash         TEXT NOT NULL,
    anchor_seq   BIGINT NOT NULL DEFAULT 0,
    anchor_hash  TEXT NOT NULL DEFAULT ''
);
INSERT INTO audit_chains (tenant_id, seq, hash) SELECT id, 0, '' FROM tenants;
