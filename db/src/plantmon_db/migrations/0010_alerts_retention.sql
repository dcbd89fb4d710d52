-- Alert retention: alerts cleared longer ago than ALERTS_RETENTION_DAYS (default 7 years) are
-- deleted by the alert worker's maintenance step. The worker's role still cannot DELETE from the
-- alerts table: it may only call this function, which deletes nothing but cleared alerts older
-- than the number of days given (at least 1), and never an open one.
CREATE INDEX IF NOT EXISTS alerts_cleared_at ON alerts (cleared_at) WHERE cleared_at IS NOT NULL;

CREATE OR REPLACE FUNCTION purge_cleared_alerts(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    deleted bigint;
BEGIN
    IF retention_days IS NULL OR retention_days < 1 THEN
        RAISE EXCEPTION 'retention_days must be at least 1, not %', retention_days;
    END IF;
    DELETE FROM alerts WHERE cleared_at IS NOT NULL AND cleared_at < now() - make_interval(days => retention_days);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION purge_cleared_alerts(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION purge_cleared_alerts(integer) TO plantmon_alerts;
