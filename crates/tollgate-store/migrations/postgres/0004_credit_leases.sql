-- Each node's reservation of part of a tenant's balance, as migrations/sqlite/0004 (CreditStore::lease). A node
-- holds requests against its lease in memory; settlements take their charge off it; a node that stops renewing (a
-- crash) reserves nothing once expires_at has passed.
CREATE TABLE credit_leases (
    tenant_id      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    node_id        TEXT COLLATE "C" NOT NULL,
    amount_micros  BIGINT NOT NULL CHECK (amount_micros >= 0),
    expires_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, node_id)
);
CREATE INDEX credit_leases_by_node ON credit_leases (node_id);
