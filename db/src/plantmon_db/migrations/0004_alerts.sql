-- The alert lifecycle (raised, acknowledged, cleared), written by the alert worker.
CREATE TABLE alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule text NOT NULL,
    tag_path text NOT NULL,
    severity smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
    state text NOT NULL CHECK (state IN ('active', 'acknowledged', 'cleared')),
    message text NOT NULL,
    value_at_raise double precision,
    peak_value double precision,
    raised_at timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    ack_comment text,
    cleared_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- At most one open alert per (rule, tag): raising twice is a conflict, not a duplicate.
CREATE UNIQUE INDEX alerts_one_open_per_condition ON alerts (rule, tag_path) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised_at ON alerts (raised_at DESC);
