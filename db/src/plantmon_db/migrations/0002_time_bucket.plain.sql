-- Plain-PostgreSQL path only: time_bucket() with TimescaleDB's semantics for fixed-width
-- buckets, so dashboards and queries run unchanged on either path.
--
-- TimescaleDB buckets a timestamptz relative to the origin 2000-01-03 00:00:00+00 (a Monday)
-- and floors towards minus infinity; days count as 24 hours (buckets are in UTC). Month and
-- year widths are not fixed and are refused. The arithmetic is exact, in whole microseconds.
CREATE OR REPLACE FUNCTION time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    width_us numeric;
    offset_us numeric;
BEGIN
    IF extract(month FROM bucket_width) <> 0 OR extract(year FROM bucket_width) <> 0 THEN
        RAISE EXCEPTION 'time_bucket: month and year widths are not supported without TimescaleDB'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    width_us := extract(epoch FROM bucket_width) * 1000000;
    IF width_us <= 0 THEN
        RAISE EXCEPTION 'time_bucket: bucket width must be greater than 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT isfinite(ts) THEN
        RETURN ts;
    END IF;
    -- 946857600 s after the epoch is 2000-01-03 00:00:00+00, TimescaleDB's default origin.
    offset_us := extract(epoch FROM ts) * 1000000 - 946857600000000;
    RETURN timestamptz '2000-01-03 00:00:00+00'
        + (floor(offset_us / width_us) * width_us)::double precision * interval '1 microsecond';
END;
$$;

COMMENT ON FUNCTION time_bucket(interval, timestamptz) IS
    'TimescaleDB-compatible time_bucket for fixed widths (plain PostgreSQL path)';
