-- Foundation schema: samples hypertable, drift events with vector memory, PLC write audit,
-- the built-in CMMS work orders.
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE samples (
    time    timestamptz      NOT NULL,
    plc_id  text             NOT NULL,
    metric  text             NOT NULL,
    value   double precision NOT NULL
);
SELECT create_hypertable('samples', by_range('time', INTERVAL '1 day'));
CREATE INDEX samples_plc_metric_time ON samples (plc_id, metric, time DESC);

CREATE TABLE drift_events (
    id              bigserial PRIMARY KEY,
    workflow_id     text             NOT NULL,
    plc_id          text             NOT NULL,
    vendor          text             NOT NULL,
    metric          text             NOT NULL,
    magnitude_sigma double precision NOT NULL,
    window_mean     double precision NOT NULL,
    baseline_mean   double precision NOT NULL,
    baseline_std    double precision NOT NULL,
    detected_at     timestamptz      NOT NULL,
    text            text             NOT NULL,
    embedding       vector(384),
    outcome         text,
    action_taken    text,
    resolved        boolean          NOT NULL DEFAULT false,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    -- One event per workflow run and detection: a retried activity finds its own row.
    UNIQUE (workflow_id, detected_at)
);
CREATE INDEX drift_events_embedding_hnsw ON drift_events USING hnsw (embedding vector_cosine_ops);
CREATE INDEX drift_events_plc_metric ON drift_events (plc_id, metric, detected_at DESC);

-- Every PLC write, one row per catalog action id (an activity retry never writes twice).
CREATE TABLE plc_writes (
    action_id       text PRIMARY KEY,
    workflow_id     text             NOT NULL,
    action          text             NOT NULL,
    plc_id          text             NOT NULL,
    target          text             NOT NULL,
    approved_by     text,
    value_before    double precision,
    value_written   double precision NOT NULL,
    value_read_back double precision,
    status          text             NOT NULL CHECK (status IN ('pending', 'verified', 'mismatch', 'failed')),
    error           text,
    requested_at    timestamptz      NOT NULL DEFAULT now(),
    completed_at    timestamptz
);

CREATE TABLE work_orders (
    id           bigserial PRIMARY KEY,
    external_key text UNIQUE NOT NULL,
    title        text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    priority     text        NOT NULL DEFAULT 'MEDIUM' CHECK (priority IN ('NONE', 'LOW', 'MEDIUM', 'HIGH')),
    status       text        NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'IN_PROGRESS', 'ON_HOLD', 'COMPLETE')),
    asset_id     text,
    due_date     date,
    attachments  jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Every message sent to a person (approval requests, alerts, summaries), whatever the channel.
CREATE TABLE notifications (
    id           bigserial PRIMARY KEY,
    dedup_key    text UNIQUE NOT NULL,
    channel      text        NOT NULL,
    recipient    text        NOT NULL,
    body         text        NOT NULL,
    workflow_id  text,
    sent_at      timestamptz NOT NULL DEFAULT now()
);
