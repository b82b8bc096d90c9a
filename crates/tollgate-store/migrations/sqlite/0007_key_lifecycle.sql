-- Key lifecycle (issue 13): a key's own rate limits and spend cap, which updates change and rolls copy, and the
-- record that its expiry was audited. `rolled_from` (the key a roll replaced) has been there since 0001.
--
-- Rate limits tighten the plan's for this key; NULL leaves the plan's. The cap is micro-cents, as every amount, and
-- exists with its period or not at all.
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER CHECK (requests_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN tokens_per_minute INTEGER CHECK (tokens_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN spend_limit_micros INTEGER CHECK (spend_limit_micros >= 0);
ALTER TABLE api_keys ADD COLUMN spend_limit_period TEXT
    CHECK ((spend_limit_period IS NULL) = (spend_limit_micros IS NULL)
        AND (spend_limit_period IS NULL OR spend_limit_period IN ('month', 'total')));
-- Set, by a conditional UPDATE in the same transaction as the `api_key.expired` event, by the key's first request
-- refused as expired: the event is written once, whichever nodes refuse it.
ALTER TABLE api_keys ADD COLUMN expired_event_at INTEGER;

-- The change log now also covers the new limits, so a change to them reaches every node's key cache. (SQLite has no
-- ALTER TRIGGER: the trigger of 0005 is replaced.) `expired_event_at` stays out: it changes nothing a request sees.
DROP TRIGGER api_keys_invalidate;
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at, expires_at, allowed_ips, models,
    requests_per_minute, tokens_per_minute, spend_limit_micros, spend_limit_period ON api_keys
FOR EACH ROW WHEN OLD.revoked_at IS NOT NEW.revoked_at OR OLD.expires_at IS NOT NEW.expires_at
    OR OLD.allowed_ips IS NOT NEW.allowed_ips OR OLD.models IS NOT NEW.models
    OR OLD.requests_per_minute IS NOT NEW.requests_per_minute OR OLD.tokens_per_minute IS NOT NEW.tokens_per_minute
    OR OLD.spend_limit_micros IS NOT NEW.spend_limit_micros OR OLD.spend_limit_period IS NOT NEW.spend_limit_period
BEGIN
    INSERT INTO invalidations (digest) VALUES (NEW.digest);
END;
