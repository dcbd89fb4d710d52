-- TimescaleDB path: compression, refresh and retention policies, all derived from
-- storage_settings by one function that plantmon-migrate calls again whenever the settings
-- change (policies are replaced, never stacked).
--
-- * Raw samples: columnstore (compression) segmented by tag_id, ordered by time, for chunks
--   older than compress_after, which is longer than the longest spool replay: inserting into
--   compressed chunks is slow and has had conflict bugs, so a replay must land in row chunks.
-- * Each aggregate's refresh window starts inside the retention of the layer it reads
--   (raw for 5 s, 5 s for 1 min, 1 min for 1 h): a refresh over a range whose source rows
--   were already dropped would delete the aggregated history. It still reaches back past
--   compress_after, so late rows from a spool replay are materialized.
-- * Retention per layer: raw, 5 s, 1 min and 1 h each drop their own old chunks.
ALTER TABLE samples SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tag_id',
    timescaledb.compress_orderby = 'time DESC'
);

CREATE FUNCTION plantmon_storage_setting(setting text) RETURNS interval
LANGUAGE sql STABLE AS $$ SELECT value FROM storage_settings WHERE name = setting $$;

CREATE FUNCTION plantmon_apply_storage_policies() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    raw_keep interval := plantmon_storage_setting('raw_retention');
    keep_5s interval := plantmon_storage_setting('rollup_5s_retention');
    keep_1m interval := plantmon_storage_setting('rollup_1m_retention');
    keep_1h interval := plantmon_storage_setting('rollup_1h_retention');
    compress_age interval := plantmon_storage_setting('compress_after');
BEGIN
    IF compress_age >= raw_keep THEN
        RAISE EXCEPTION 'compress_after (%) must be shorter than raw_retention (%)', compress_age, raw_keep;
    END IF;
    IF raw_keep <= interval '2 days' OR keep_5s <= interval '2 days' OR keep_1m <= interval '2 days' THEN
        RAISE EXCEPTION 'retention of raw, 5 s and 1 min data must be longer than 2 days';
    END IF;

    PERFORM remove_compression_policy('samples', if_exists => true);
    PERFORM add_compression_policy('samples', compress_after => compress_age);

    -- Start offsets: one day inside the source layer's retention at most.
    PERFORM remove_continuous_aggregate_policy('samples_5s', if_not_exists => true);
    PERFORM add_continuous_aggregate_policy('samples_5s',
        start_offset => least(compress_age + interval '1 day', raw_keep - interval '1 day'),
        end_offset => interval '10 seconds',
        schedule_interval => interval '30 seconds');
    PERFORM remove_continuous_aggregate_policy('samples_1m', if_not_exists => true);
    PERFORM add_continuous_aggregate_policy('samples_1m',
        start_offset => least(compress_age + interval '2 days', keep_5s - interval '1 day'),
        end_offset => interval '2 minutes',
        schedule_interval => interval '1 minute');
    PERFORM remove_continuous_aggregate_policy('samples_1h', if_not_exists => true);
    PERFORM add_continuous_aggregate_policy('samples_1h',
        start_offset => least(compress_age + interval '3 days', keep_1m - interval '1 day'),
        end_offset => interval '2 hours',
        schedule_interval => interval '30 minutes');

    PERFORM remove_retention_policy('samples', if_exists => true);
    PERFORM add_retention_policy('samples', drop_after => raw_keep);
    PERFORM remove_retention_policy('samples_5s', if_exists => true);
    PERFORM add_retention_policy('samples_5s', drop_after => keep_5s);
    PERFORM remove_retention_policy('samples_1m', if_exists => true);
    PERFORM add_retention_policy('samples_1m', drop_after => keep_1m);
    PERFORM remove_retention_policy('samples_1h', if_exists => true);
    PERFORM add_retention_policy('samples_1h', drop_after => keep_1h);
END;
$$;

SELECT plantmon_apply_storage_policies();
