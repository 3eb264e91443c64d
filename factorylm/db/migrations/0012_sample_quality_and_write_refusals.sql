-- Non-finite samples (NaN, ±inf: a failed f32 sensor) are rejected before they reach the
-- hypertable or the drift windows; how many, per metric, is kept with the collector's status
-- so GET /collectors shows a sensor that went bad ({"level": 12}).
ALTER TABLE collector_status ADD COLUMN bad_samples jsonb NOT NULL DEFAULT '{}'::jsonb;

-- A PLC write the edge refused after the catalog check (no approval on record for the run,
-- an approval past its validity) is audited too, with the reason in `error`.
ALTER TABLE plc_writes DROP CONSTRAINT plc_writes_status_check;
ALTER TABLE plc_writes ADD CONSTRAINT plc_writes_status_check
    CHECK (status IN ('pending', 'verified', 'mismatch', 'failed', 'refused'));
