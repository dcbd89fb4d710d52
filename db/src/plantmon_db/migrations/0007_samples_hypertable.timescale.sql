-- TimescaleDB path: samples becomes a hypertable partitioned by time (existing rows move
-- into chunks). 6-hour chunks: at the plant's ~50 tags x 2 Hz (100 rows/s, ~8.6 M rows a day)
-- one chunk with its two indexes is ~260 MB, so the chunk being written and its indexes stay
-- in a Pi's shared buffers and page cache (TimescaleDB's rule of thumb: recent chunks within
-- 25 % of memory); see docs/operations.md, "Storage".
SELECT create_hypertable(
    'samples',
    by_range('time', interval '6 hours'),
    migrate_data => true
);
