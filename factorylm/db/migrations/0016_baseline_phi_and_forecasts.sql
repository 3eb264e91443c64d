-- Issue 17. The noise's lag-1 autocorrelation per baseline: the detectors prewhiten with it
-- (docs/drift.md). Rows from before it read 0, independent samples: exactly the old behaviour.
ALTER TABLE baselines ADD COLUMN phi double precision NOT NULL DEFAULT 0;

-- The latest time-to-threshold forecast per PLC·metric, written by the ingest once a minute
-- (ingest/forecast.py); GET /forecasts reads it.
CREATE TABLE forecasts (
    plc_id     text        NOT NULL,
    metric     text        NOT NULL,
    forecast   jsonb,  -- NULL: this metric no longer trends toward a threshold
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plc_id, metric)
);
