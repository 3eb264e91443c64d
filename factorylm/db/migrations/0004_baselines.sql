-- Baselines: per PLC and metric, recomputed on a schedule; history kept, the latest used.
CREATE TABLE baselines (
    id           bigserial PRIMARY KEY,
    run_key      text             NOT NULL,
    plc_id       text             NOT NULL,
    metric       text             NOT NULL,
    mean         double precision NOT NULL,
    std          double precision NOT NULL,
    p95          double precision NOT NULL,
    p99          double precision NOT NULL,
    sample_count bigint           NOT NULL,
    window_start timestamptz      NOT NULL,
    window_end   timestamptz      NOT NULL,
    computed_at  timestamptz      NOT NULL DEFAULT now(),
    -- A retried computation of the same run finds its rows instead of adding a second set.
    UNIQUE (run_key, plc_id, metric)
);
CREATE INDEX baselines_latest ON baselines (plc_id, metric, computed_at DESC);
