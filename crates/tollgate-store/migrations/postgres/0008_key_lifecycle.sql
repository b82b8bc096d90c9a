-- Key lifecycle (issue 13), as migrations/sqlite/0007: a key's own rate limits and spend cap, which updates change
-- and rolls copy, and the record that its expiry was audited. `rolled_from` has been there since 0001.
ALTER TABLE api_keys
    ADD COLUMN requests_per_minute BIGINT CHECK (requests_per_minute > 0),
    ADD COLUMN tokens_per_minute BIGINT CHECK (tokens_per_minute > 0),
    ADD COLUMN spend_limit_micros BIGINT CHECK (spend_limit_micros >= 0),
    ADD COLUMN spend_limit_period TEXT CHECK (spend_limit_period IN ('month', 'total')),
    -- Set by the key's first request refused as expired, in the transaction of its `api_key.expired` event.
    ADD COLUMN expired_event_at BIGINT,
    ADD CONSTRAINT api_keys_spend_limit_with_period
        CHECK ((spend_limit_micros IS NULL) = (spend_limit_period IS NULL));

-- The change log now also covers the new limits; `expired_event_at` stays out (it changes nothing a request sees).
DROP TRIGGER api_keys_invalidate ON api_keys;
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at, expires_at, allowed_ips, models,
    requests_per_minute, tokens_per_minute, spend_limit_micros, spend_limit_period ON api_keys
FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
    OR OLD.allowed_ips IS DISTINCT FROM NEW.allowed_ips OR OLD.models IS DISTINCT FROM NEW.models
    OR OLD.requests_per_minute IS DISTINCT FROM NEW.requests_per_minute
    OR OLD.tokens_per_minute IS DISTINCT FROM NEW.tokens_per_minute
    OR OLD.spend_limit_micros IS DISTINCT FROM NEW.spend_limit_micros
    OR OLD.spend_limit_period IS DISTINCT FROM NEW.spend_limit_period)
EXECUTE FUNCTION invalidate_key();
