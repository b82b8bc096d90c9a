-- The two tables every settled request appends to, rebuilt for the cost of that append (bench/instructions.sh):
--
-- * Each is stored in the order it is read, by tenant (`WITHOUT ROWID`, clustered on its primary key): the ledger
--   by (tenant_id, id), as its listing pages; usage by (tenant_id, created_at, id), as its queries read a window.
--   An append then writes one b-tree per table, where a rowid table with a text primary key and a tenant index
--   wrote three. Ids are UUIDv7s (unique by construction); nothing looks a row up by id alone.
-- * The ledger's `kind` check is a chain of equalities: SQLite evaluates `kind IN ('grant', 'charge',
--   'adjustment')` by building a temporary index of the three strings on every insert (a b-tree opened and a page
--   zeroed per settled request: about 20k instructions), where three comparisons cost a few dozen. Same rule.
--
-- SQLite cannot alter a table's key or constraints, so both are rebuilt with their rows; nothing references them.
CREATE TABLE ledger_entries_new (
    id                    TEXT NOT NULL,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    kind                  TEXT NOT NULL CHECK (kind = 'grant' OR kind = 'charge' OR kind = 'adjustment'),
    amount_micros         INTEGER NOT NULL,
    balance_after_micros  INTEGER NOT NULL,
    reason                TEXT,
    created_at            INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
INSERT INTO ledger_entries_new (id, tenant_id, kind, amount_micros, balance_after_micros, reason, created_at)
    SELECT id, tenant_id, kind, amount_micros, balance_after_micros, reason, created_at FROM ledger_entries;
DROP TABLE ledger_entries;
ALTER TABLE ledger_entries_new RENAME TO ledger_entries;

CREATE TABLE usage_records_new (
    id                 TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    project_id         TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    model              TEXT NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost_micros        INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, created_at, id)
) WITHOUT ROWID;
INSERT INTO usage_records_new (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens,
        completion_tokens, cost_micros, created_at)
    SELECT id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, completion_tokens, cost_micros,
        created_at FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_new RENAME TO usage_records;
