-- Credits and usage, as migrations/sqlite/0002. Money is integer micro-cents (10^-6 cent) in BIGINT. The ledger is
-- append-only and is the truth; the balance row is kept in step with it in the same transaction, and can never go
-- below zero.

CREATE TABLE credit_balances (
    tenant_id       TEXT COLLATE "C" PRIMARY KEY REFERENCES tenants (id),
    balance_micros  BIGINT NOT NULL CHECK (balance_micros >= 0),
    granted_micros  BIGINT NOT NULL  -- grants and adjustments alone, so a node can tell what changed elsewhere
);

CREATE TABLE ledger_entries (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    tenant_id             TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    kind                  TEXT NOT NULL CHECK (kind IN ('grant', 'charge', 'adjustment')),
    amount_micros         BIGINT NOT NULL,
    balance_after_micros  BIGINT NOT NULL,
    reason                TEXT,
    created_at            BIGINT NOT NULL
);
CREATE INDEX ledger_by_tenant ON ledger_entries (tenant_id, id);

-- One row per model call the provider answered.
CREATE TABLE usage_records (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    request_id         TEXT NOT NULL,
    tenant_id          TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    project_id         TEXT COLLATE "C" NOT NULL,
    key_id             TEXT COLLATE "C" NOT NULL,
    model              TEXT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost_micros        BIGINT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX usage_by_tenant_time ON usage_records (tenant_id, created_at);
