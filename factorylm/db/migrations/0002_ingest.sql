-- Ingest health: one row per PLC collector, kept by the collector manager, and the batch
-- writer's counters (samples written, buffered and dropped) per ingest process.
CREATE TABLE collector_status (
    plc_id             text PRIMARY KEY,
    vendor             text        NOT NULL,
    protocol           text        NOT NULL,
    state              text        NOT NULL CHECK (state IN ('starting', 'ok', 'stale', 'failing')),
    poll_interval_ms   integer     NOT NULL,
    last_good_at       timestamptz,
    consecutive_errors integer     NOT NULL DEFAULT 0,
    last_error         text,
    cycles             bigint      NOT NULL DEFAULT 0,
    missed_cycles      bigint      NOT NULL DEFAULT 0,
    restarts           integer     NOT NULL DEFAULT 0,
    failing_since      timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingest_writer_status (
    host            text PRIMARY KEY,
    samples_written bigint      NOT NULL DEFAULT 0,
    samples_pending bigint      NOT NULL DEFAULT 0,
    samples_dropped bigint      NOT NULL DEFAULT 0,
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
