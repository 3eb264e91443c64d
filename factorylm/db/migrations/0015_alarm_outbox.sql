-- Durable alarm hand-off (docs/ingest.md, "Alarms: the outbox"). The ingest records every drift
-- alarm here before it calls Temporal; its dispatcher starts or signals the drift workflow and
-- then stamps delivered_at. A row without delivered_at is an alarm that has no workflow yet: it
-- survives a Temporal outage and a restart of the ingest, and is never deleted undelivered.
CREATE TABLE alarm_outbox (
    id              bigserial PRIMARY KEY,
    workflow_id     text        NOT NULL,
    detected_at     timestamptz NOT NULL,
    alert           jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    run_id          text,
    -- One row per alarm: an insert retried after an ambiguous failure (the commit reached the
    -- server, its answer did not) cannot record the same alarm twice.
    UNIQUE (workflow_id, detected_at)
);

-- The dispatcher's scan: only the undelivered rows, oldest first.
CREATE INDEX alarm_outbox_pending ON alarm_outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

-- The outbox's counters beside the batch writer's, on the ingest's status row (GET /collectors).
ALTER TABLE ingest_writer_status
    ADD COLUMN alarms_pending   bigint NOT NULL DEFAULT 0,
    ADD COLUMN alarms_delivered bigint NOT NULL DEFAULT 0,
    ADD COLUMN alarms_failed    bigint NOT NULL DEFAULT 0;
