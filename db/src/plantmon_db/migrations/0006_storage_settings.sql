-- Storage settings on both paths: how long each layer is kept and when raw chunks are
-- compressed. plantmon-migrate updates the rows from DB_RETENTION_* / DB_COMPRESS_AFTER and
-- then applies them (TimescaleDB: the policies; plain PostgreSQL: the scraper's maintenance
-- task reads them at every run). Edit the rows only through plantmon-migrate.
CREATE TABLE storage_settings (
    name text PRIMARY KEY CHECK (name IN ('raw_retention', 'rollup_5s_retention', 'rollup_1m_retention',
                                          'rollup_1h_retention', 'compress_after')),
    value interval NOT NULL CHECK (value > interval '0'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO storage_settings (name, value) VALUES
    ('raw_retention', interval '30 days'),
    ('rollup_5s_retention', interval '90 days'),
    ('rollup_1m_retention', interval '2 years'),
    ('rollup_1h_retention', interval '10 years'),
    -- Longer than the longest spool replay (see docs/operations.md): late rows must not land
    -- in compressed chunks.
    ('compress_after', interval '7 days');

COMMENT ON TABLE storage_settings IS 'Retention per layer and compression age; set by plantmon-migrate';

GRANT SELECT ON storage_settings TO plantmon_writer, plantmon_alerts, plantmon_reader;
