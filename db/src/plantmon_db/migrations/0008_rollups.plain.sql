-- Plain-PostgreSQL path: samples_5s, samples_1m and samples_1h as tables with the same names,
-- columns and types as TimescaleDB's continuous aggregates (0008_rollups.timescale.sql), kept
-- current by plantmon_maintain(), which the scraper calls every few seconds. Tables, not
-- views: each layer keeps its own retention (1 h rows for 10 years while raw rows go after
-- 30 days), which a view over samples cannot. Stacked like TimescaleDB's: 1 min is computed
-- from 5 s and 1 h from 1 min, with count, sum and sum of squares carried so avg and stddev
-- stay exact.
--
-- What changed is tracked per INSERT statement (one row per batch with its time range), so
-- late rows (a spool replay of yesterday) are aggregated too, without rescanning everything.
CREATE TABLE samples_5s (
    bucket timestamptz NOT NULL,
    tag_id integer NOT NULL,
    avg double precision,
    min double precision,
    max double precision,
    stddev double precision,
    count bigint NOT NULL,
    last double precision,
    sum double precision,
    sumsq double precision,
    PRIMARY KEY (tag_id, bucket)
);
CREATE TABLE samples_1m (LIKE samples_5s INCLUDING ALL);
CREATE TABLE samples_1h (LIKE samples_5s INCLUDING ALL);
CREATE INDEX samples_5s_bucket ON samples_5s (bucket DESC);
CREATE INDEX samples_1m_bucket ON samples_1m (bucket DESC);
CREATE INDEX samples_1h_bucket ON samples_1h (bucket DESC);

CREATE TABLE rollup_dirty (
    lo timestamptz NOT NULL,
    hi timestamptz NOT NULL
);

CREATE FUNCTION plantmon_note_dirty() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO rollup_dirty (lo, hi) SELECT min(time), max(time) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER samples_note_dirty AFTER INSERT ON samples
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION plantmon_note_dirty();

-- Recompute every bucket of the three layers that overlaps [lo, hi]. date_bin with
-- TimescaleDB's origin (2000-01-03) gives the same buckets as time_bucket, in C.
CREATE FUNCTION plantmon_refresh_rollups(lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    origin constant timestamptz := '2000-01-03 00:00:00+00';
    lo5 timestamptz := date_bin('5 seconds', lo, origin);
    hi5 timestamptz := date_bin('5 seconds', hi, origin) + interval '5 seconds';
    lo1m timestamptz := date_bin('1 minute', lo, origin);
    hi1m timestamptz := date_bin('1 minute', hi, origin) + interval '1 minute';
    lo1h timestamptz := date_bin('1 hour', lo, origin);
    hi1h timestamptz := date_bin('1 hour', hi, origin) + interval '1 hour';
BEGIN
    DELETE FROM samples_5s WHERE bucket >= lo5 AND bucket < hi5;
    INSERT INTO samples_5s
    SELECT date_bin('5 seconds', time, origin), tag_id, avg(value), min(value), max(value),
           stddev_samp(value), count(value), (array_agg(value ORDER BY time DESC))[1],
           sum(value), sum(value * value)
    FROM samples WHERE time >= lo5 AND time < hi5
    GROUP BY 1, 2;

    DELETE FROM samples_1m WHERE bucket >= lo1m AND bucket < hi1m;
    INSERT INTO samples_1m
    SELECT date_bin('1 minute', bucket, origin), tag_id, sum(sum) / nullif(sum(count), 0), min(min), max(max),
           CASE WHEN sum(count) > 1 THEN
               sqrt(greatest((sum(sumsq) - sum(sum) * sum(sum) / sum(count)) / (sum(count) - 1), 0))
           END,
           sum(count)::bigint, (array_agg(last ORDER BY bucket DESC))[1], sum(sum), sum(sumsq)
    FROM samples_5s WHERE bucket >= lo1m AND bucket < hi1m
    GROUP BY 1, 2;

    DELETE FROM samples_1h WHERE bucket >= lo1h AND bucket < hi1h;
    INSERT INTO samples_1h
    SELECT date_bin('1 hour', bucket, origin), tag_id, sum(sum) / nullif(sum(count), 0), min(min), max(max),
           CASE WHEN sum(count) > 1 THEN
               sqrt(greatest((sum(sumsq) - sum(sum) * sum(sum) / sum(count)) / (sum(count) - 1), 0))
           END,
           sum(count)::bigint, (array_agg(last ORDER BY bucket DESC))[1], sum(sum), sum(sumsq)
    FROM samples_1m WHERE bucket >= lo1h AND bucket < hi1h
    GROUP BY 1, 2;
END;
$$;

-- The maintenance task: aggregate what changed (ranges less than an hour apart merged), then
-- apply the retention of storage_settings to every layer. Returns the ranges refreshed and
-- the rows deleted. Serialised by an advisory lock (two scrapers would otherwise race).
CREATE FUNCTION plantmon_maintain(OUT ranges_refreshed integer, OUT rows_expired bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    r record;
    n bigint;
BEGIN
    ranges_refreshed := 0;
    rows_expired := 0;
    IF NOT pg_try_advisory_xact_lock(8101202505) THEN
        RETURN;
    END IF;
    FOR r IN
        WITH taken AS (DELETE FROM rollup_dirty RETURNING lo, hi),
        marked AS (
            SELECT lo, hi, CASE WHEN lo <= max(hi) OVER (ORDER BY lo ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                                          + interval '1 hour' THEN 0 ELSE 1 END AS starts
            FROM taken
        ),
        grouped AS (SELECT lo, hi, sum(starts) OVER (ORDER BY lo) AS grp FROM marked)
        SELECT min(lo) AS lo, max(hi) AS hi FROM grouped GROUP BY grp ORDER BY 1
    LOOP
        PERFORM plantmon_refresh_rollups(r.lo, r.hi);
        ranges_refreshed := ranges_refreshed + 1;
    END LOOP;

    DELETE FROM samples WHERE time < now() - (SELECT value FROM storage_settings WHERE name = 'raw_retention');
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_expired := rows_expired + n;
    DELETE FROM samples_5s WHERE bucket < now() - (SELECT value FROM storage_settings WHERE name = 'rollup_5s_retention');
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_expired := rows_expired + n;
    DELETE FROM samples_1m WHERE bucket < now() - (SELECT value FROM storage_settings WHERE name = 'rollup_1m_retention');
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_expired := rows_expired + n;
    DELETE FROM samples_1h WHERE bucket < now() - (SELECT value FROM storage_settings WHERE name = 'rollup_1h_retention');
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_expired := rows_expired + n;
END;
$$;

REVOKE ALL ON FUNCTION plantmon_note_dirty(), plantmon_refresh_rollups(timestamptz, timestamptz),
    plantmon_maintain() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION plantmon_maintain() TO plantmon_writer;
GRANT SELECT ON samples_5s, samples_1m, samples_1h TO plantmon_reader, plantmon_alerts;

-- Rollups of a database upgraded with samples already in it.
INSERT INTO rollup_dirty (lo, hi) SELECT min(time), max(time) FROM samples HAVING count(*) > 0;
