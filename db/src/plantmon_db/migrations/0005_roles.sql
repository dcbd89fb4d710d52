-- Service roles. Roles are cluster-wide while grants are per database, so creation is
-- idempotent (and tolerates another database's migration creating them at the same time).
-- They start NOLOGIN; plantmon-migrate sets LOGIN and a password from the environment.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['plantmon_writer', 'plantmon_alerts', 'plantmon_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by a migration of another database
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO plantmon_writer, plantmon_alerts, plantmon_reader',
                   current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO plantmon_writer', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO plantmon_writer, plantmon_alerts, plantmon_reader;

-- The scraper: registers tags and appends samples (staging through a TEMP table).
GRANT SELECT, INSERT, UPDATE ON tags TO plantmon_writer;
GRANT SELECT, INSERT ON samples TO plantmon_writer;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO plantmon_writer', pg_get_serial_sequence('tags', 'id'));
END
$$;

-- The alert worker: owns the alert lifecycle and reads the data.
GRANT SELECT, INSERT, UPDATE ON alerts TO plantmon_alerts;
GRANT SELECT ON tags, samples, sensor_data TO plantmon_alerts;

-- Grafana and the OPC UA history: read-only, with a statement timeout.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO plantmon_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO plantmon_reader;
ALTER ROLE plantmon_reader SET default_transaction_read_only = on;
ALTER ROLE plantmon_reader SET statement_timeout = '30s';
