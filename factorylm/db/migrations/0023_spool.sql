-- Store-and-forward (ingest/spool.py): how far each ingest's disk spool is backfilled, written
-- in the same transaction as the backfilled samples, so a backfill resumes exactly where it
-- was; and the spool's state beside the writer's counters (GET /collectors, the health check).
CREATE TABLE ingest_spool_progress (
    spool_id   text        NOT NULL,  -- the spool directory's own id (its spool.id file)
    segment    bigint      NOT NULL,
    upto       bigint      NOT NULL,  -- bytes of the segment already in `samples`
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (spool_id, segment)
);

ALTER TABLE ingest_writer_status
    ADD COLUMN spool_bytes      bigint           NOT NULL DEFAULT 0,
    ADD COLUMN spool_samples    bigint           NOT NULL DEFAULT 0,
    ADD COLUMN spool_oldest     timestamptz,
    ADD COLUMN spool_dropped    bigint           NOT NULL DEFAULT 0,
    ADD COLUMN backfilled       bigint           NOT NULL DEFAULT 0,
    ADD COLUMN backfill_rate    double precision NOT NULL DEFAULT 0;
