-- Ingest cost: samples.tag_id no longer references tags(id).
--
-- The foreign key made PostgreSQL look up tags for every stored row (a row-level RI trigger);
-- measured on the migrated schema it halved binary COPY into samples (52-69k rows/s with it,
-- 137k without; docs/benchmarks.md, "Scraper and storage"). TimescaleDB's own guidance for
-- high-rate hypertables is the same. What the key guarded is kept another way:
--   * the scraper registers (upserts) a tag and learns its id before it writes any of its rows;
--   * no service role may DELETE from tags, and from now on the writer may update only a tag's
--     descriptive columns, never its id or path, so no stored row can lose its tag;
--   * the migrations (superuser) are the only thing that may change tag ids.
-- On TimescaleDB the constraint is dropped on the hypertable and so on every chunk.
ALTER TABLE samples DROP CONSTRAINT IF EXISTS samples_tag_id_fkey;

REVOKE UPDATE ON tags FROM plantmon_writer;
GRANT UPDATE (unit, eu_low, eu_high, description, last_seen) ON tags TO plantmon_writer;
