-- The tag registry and the samples, on both paths. On the TimescaleDB path a later
-- migration turns samples into a hypertable; the relation names and columns stay.
CREATE TABLE tags (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path text UNIQUE NOT NULL,
    sensor text NOT NULL,
    tag text NOT NULL,
    unit text NOT NULL DEFAULT '',
    eu_low double precision,
    eu_high double precision,
    description text NOT NULL DEFAULT '',
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tags_sensor_tag ON tags (sensor, tag);

COMMENT ON TABLE tags IS 'One row per OPC UA variable below Objects/Plant; path is its identity';

-- status is the OPC UA StatusCode as an unsigned 32-bit integer (0 = Good); value is NULL
-- when the source had none. A change of status arrives with a new source timestamp.
CREATE TABLE samples (
    time timestamptz NOT NULL,
    tag_id integer NOT NULL REFERENCES tags (id),
    value double precision,
    status bigint NOT NULL CHECK (status BETWEEN 0 AND 4294967295),
    PRIMARY KEY (tag_id, time)
);
CREATE INDEX samples_time ON samples (time DESC);

COMMENT ON TABLE samples IS 'Every notification the scraper received: value, source timestamp, status code';

-- The seed's names: Grafana queries and the OPC UA history read through this view.
CREATE VIEW sensor_data AS
SELECT s.time AS "timestamp", t.sensor AS sensorname, t.tag AS tagname, s.value
FROM samples s
JOIN tags t ON t.id = s.tag_id;
