-- Rate limits (issue 14), as migrations/sqlite/0009: the operator's override of a tenant's plan limits, per
-- minute (NULL follows the plan), in the change log as a plan change is.
ALTER TABLE tenants
    ADD COLUMN requests_per_minute BIGINT CHECK (requests_per_minute > 0),
    ADD COLUMN tokens_per_minute BIGINT CHECK (tokens_per_minute > 0);

CREATE TRIGGER tenants_invalidate_limits AFTER UPDATE OF requests_per_minute, tokens_per_minute ON tenants
FOR EACH ROW WHEN (OLD.requests_per_minute IS DISTINCT FROM NEW.requests_per_minute
    OR OLD.tokens_per_minute IS DISTINCT FROM NEW.tokens_per_minute)
EXECUTE FUNCTION invalidate_tenant('self');
