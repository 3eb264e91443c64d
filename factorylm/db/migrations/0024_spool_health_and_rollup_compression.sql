-- The health monitor's view of each ingest's spool (activities/health.py): what it saw at its
-- last run, so "samples dropped from the spool" means dropped since then and "backfill not
-- progressing" means the oldest unsent sample has stayed the same for a while. The ingest's
-- counters in ingest_writer_status are per process and say nothing about time on their own.
CREATE TABLE health_spool_seen (
    host             text        PRIMARY KEY,
    spool_dropped    bigint      NOT NULL,
    -- When the monitor last saw spool_dropped grow (the loss alert stays open for a while after).
    dropped_grew_at  timestamptz,
    spool_oldest     timestamptz,
    -- Since when spool_oldest has had its current value.
    oldest_seen_at   timestamptz NOT NULL,
    observed_at      timestamptz NOT NULL
);

-- Not run by the test suite: the machines that build and test FactoryLM have only the Apache-2
-- edition (Debian's +dfsg source has no TSL code). Run by hand on a TSL build instead
-- (docs/operations.md, "Retention and rollups"). It is kept to one documented call each. On
-- the Timescale-licensed edition (the timescaledb-ha image in compose) the 1-minute rollups,
-- kept for years, are compressed per PLC·metric once their 30-day chunk is a week past its
-- end. The normal rollup rewrites only the last `rollup_lookback_minutes` (2 h by default),
-- inside the uncompressed chunk; a re-roll of late samples or a fold-in (migration 0025) may
-- upsert into a compressed chunk, which TimescaleDB decompresses for it (checked by hand
-- too). Readers see the same table either way. `factorylm doctor` names what is in use.
DO $$
BEGIN
    IF current_setting('timescaledb.license', true) = 'timescale' THEN
        ALTER TABLE samples_1m SET (timescaledb.compress,
                                    timescaledb.compress_segmentby = 'plc_id, metric',
                                    timescaledb.compress_orderby = 'bucket DESC');
        PERFORM add_compression_policy('samples_1m', INTERVAL '7 days', if_not_exists => true);
    END IF;
END
$$;
