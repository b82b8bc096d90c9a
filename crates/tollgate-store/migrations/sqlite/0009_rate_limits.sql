-- Rate limits (issue 14): the operator's override of a tenant's plan limits, per minute; NULL follows the plan.
-- A cached principal carries them, so a change to either is in the change log, as a plan change is.
ALTER TABLE tenants ADD COLUMN requests_per_minute INTEGER CHECK (requests_per_minute > 0);
ALTER TABLE tenants ADD COLUMN tokens_per_minute INTEGER CHECK (tokens_per_minute > 0);

CREATE TRIGGER tenants_invalidate_limits AFTER UPDATE OF requests_per_minute, tokens_per_minute ON tenants
FOR EACH ROW WHEN OLD.requests_per_minute IS NOT NEW.requests_per_minute
    OR OLD.tokens_per_minute IS NOT NEW.tokens_per_minute
BEGIN
    INSERT INTO invalidations (tenant_id) VALUES (NEW.id);
END;
