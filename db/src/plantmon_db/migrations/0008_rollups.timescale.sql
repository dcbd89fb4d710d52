-- TimescaleDB path: continuous aggregates at 5 s, 1 min and 1 h with real-time aggregation
-- (materialized_only = false: buckets not yet materialized are computed from the layer below
-- at query time). They are stacked (1 min on 5 s, 1 h on 1 min), so every layer carries
-- count, sum and sum of squares and the upper layers derive avg and the sample standard
-- deviation exactly from them instead of averaging averages. The plain-PostgreSQL path
-- offers tables with the same names, columns and types (0009_rollups.plain.sql).
-- count counts non-NULL values (a Bad sample has none); last is the value of the newest sample.
CREATE MATERIALIZED VIEW samples_5s
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(interval '5 seconds', time) AS bucket,
    tag_id,
    avg(value) AS avg,
    min(value) AS min,
    max(value) AS max,
    stddev_samp(value) AS stddev,
    count(value) AS count,
    last(value, time) AS last,
    sum(value) AS sum,
    sum(value * value) AS sumsq
FROM samples
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW samples_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(interval '1 minute', bucket) AS bucket,
    tag_id,
    sum(sum) / nullif(sum(count), 0) AS avg,
    min(min) AS min,
    max(max) AS max,
    CASE WHEN sum(count) > 1 THEN
        sqrt(greatest((sum(sumsq) - sum(sum) * sum(sum) / sum(count)) / (sum(count) - 1), 0))
    END AS stddev,
    sum(count)::bigint AS count,
    last(last, bucket) AS last,
    sum(sum) AS sum,
    sum(sumsq) AS sumsq
FROM samples_5s
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW samples_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(interval '1 hour', bucket) AS bucket,
    tag_id,
    sum(sum) / nullif(sum(count), 0) AS avg,
    min(min) AS min,
    max(max) AS max,
    CASE WHEN sum(count) > 1 THEN
        sqrt(greatest((sum(sumsq) - sum(sum) * sum(sum) / sum(count)) / (sum(count) - 1), 0))
    END AS stddev,
    sum(count)::bigint AS count,
    last(last, bucket) AS last,
    sum(sum) AS sum,
    sum(sumsq) AS sumsq
FROM samples_1m
GROUP BY 1, 2
WITH NO DATA;

GRANT SELECT ON samples_5s, samples_1m, samples_1h TO plantmon_reader, plantmon_alerts;

-- A database upgraded with samples already in it: materialize the history once (a refresh
-- cannot run inside the migration's transaction; the runner executes this part after commit).
-- plantmon:outside-transaction
CALL refresh_continuous_aggregate('samples_5s', NULL, NULL);
CALL refresh_continuous_aggregate('samples_1m', NULL, NULL);
CALL refresh_continuous_aggregate('samples_1h', NULL, NULL);
