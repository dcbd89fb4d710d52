-- TimescaleDB path only: the extension itself. Hypertables, continuous aggregates,
-- compression and retention follow in later timescale-only migrations.
CREATE EXTENSION IF NOT EXISTS timescaledb;
