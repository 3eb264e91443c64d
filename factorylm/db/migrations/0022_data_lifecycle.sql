-- Data lifecycle (docs/operations.md, "Retention and rollups"): raw samples are kept for a
-- configurable time and dropped by whole chunks; 1-minute rollups are kept for years and feed
-- long-window queries. The rollup is the product's own job, so it runs on the Apache-2
-- TimescaleDB of the embedded default as well as on the Timescale-licensed image in compose
-- (continuous aggregates and compression are not in the Apache edition).
--
-- Rollups keep, per PLC·metric·minute, the count, mean and m2 (the sum of squared deviations
-- from the minute's mean): two minutes combine exactly into the mean and standard deviation of
-- both (Chan's parallel formula), so a 48-hour baseline read from rollups equals the one read
-- from raw samples, not an average of averages.
CREATE TABLE samples_1m (
    bucket  timestamptz      NOT NULL,
    plc_id  text             NOT NULL,
    metric  text             NOT NULL,
    samples integer          NOT NULL CHECK (samples > 0),
    mean    double precision NOT NULL,
    m2      double precision NOT NULL CHECK (m2 >= 0),
    min     double precision NOT NULL,
    max     double precision NOT NULL,
    last    double precision NOT NULL,
    PRIMARY KEY (plc_id, metric, bucket)
);
SELECT create_hypertable('samples_1m', by_range('bucket', INTERVAL '30 days'));

-- One row: how far the rollups reach, and what the last runs did (doctor, /collectors).
CREATE TABLE data_lifecycle (
    singleton      boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_up_to   timestamptz,          -- every minute before this is in samples_1m
    dropped_before timestamptz,          -- raw samples before this were dropped
    chunks_dropped bigint      NOT NULL DEFAULT 0,
    last_rollup_at timestamptz,
    last_drop_at   timestamptz
);
INSERT INTO data_lifecycle DEFAULT VALUES;

-- The rollup and the drop run as the database owner (SECURITY DEFINER) because dropping chunks
-- needs the table's owner; the agents worker may only call them, with the bounds below built in,
-- so a compromised worker can neither drop recent data nor data not yet rolled up.

-- Rolls up the minutes from the watermark (less `lookback`, for samples that arrived late) to
-- `until`, at most `max_span` at a time; returns the new watermark. Called until it reaches
-- `until`, so a first run over weeks of history is done in bounded transactions.
CREATE FUNCTION factorylm_roll_up_samples(until timestamptz, lookback interval, max_span interval)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    watermark timestamptz;
    dropped   timestamptz;
    from_t    timestamptz;
    to_t      timestamptz;
BEGIN
    IF lookback < INTERVAL '0' OR max_span <= INTERVAL '0' THEN
        RAISE EXCEPTION 'lookback must be >= 0 and max_span > 0 (got %, %)', lookback, max_span;
    END IF;
    SELECT rolled_up_to, dropped_before INTO watermark, dropped FROM data_lifecycle FOR UPDATE;
    -- A minute still being written is never final: stop a minute short of now.
    to_t := date_trunc('minute', least(until, now() - INTERVAL '1 minute'));
    IF watermark IS NULL THEN
        SELECT date_trunc('minute', min(time)) INTO from_t FROM samples;
        IF from_t IS NULL THEN
            RETURN NULL;  -- nothing sampled yet
        END IF;
    ELSE
        from_t := watermark - lookback;
    END IF;
    -- Never re-roll minutes whose raw samples are gone: that would overwrite a full minute
    -- with what is left of it.
    IF dropped IS NOT NULL THEN
        from_t := greatest(from_t, dropped);
    END IF;
    to_t := least(to_t, greatest(from_t, coalesce(watermark, from_t)) + max_span);
    IF to_t <= from_t THEN
        RETURN watermark;
    END IF;
    INSERT INTO samples_1m (bucket, plc_id, metric, samples, mean, m2, min, max, last)
    SELECT time_bucket(INTERVAL '1 minute', time), plc_id, metric, count(*), avg(value),
           coalesce(var_pop(value), 0) * count(*), min(value), max(value), last(value, time)
    FROM samples
    WHERE time >= from_t AND time < to_t
    GROUP BY 1, 2, 3
    ON CONFLICT (plc_id, metric, bucket) DO UPDATE
        SET samples = EXCLUDED.samples, mean = EXCLUDED.mean, m2 = EXCLUDED.m2,
            min = EXCLUDED.min, max = EXCLUDED.max, last = EXCLUDED.last;
    UPDATE data_lifecycle
        SET rolled_up_to = greatest(coalesce(rolled_up_to, to_t), to_t), last_rollup_at = now();
    RETURN greatest(coalesce(watermark, to_t), to_t);
END
$$;

-- Drops the raw chunks older than `retention` (at least one day, whatever is asked) and never
-- past the rollups' watermark less `lookback`; returns how many chunks went.
CREATE FUNCTION factorylm_drop_raw_samples(retention interval, lookback interval)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    watermark timestamptz;
    cutoff    timestamptz;
    n         integer;
BEGIN
    SELECT rolled_up_to INTO watermark FROM data_lifecycle FOR UPDATE;
    IF watermark IS NULL THEN
        RETURN 0;  -- nothing rolled up yet: nothing may go
    END IF;
    cutoff := least(now() - greatest(retention, INTERVAL '1 day'), watermark - lookback);
    SELECT count(*) INTO n FROM drop_chunks('samples', older_than => cutoff);
    -- drop_chunks removes whole chunks only; what is left starts at the oldest remaining sample.
    UPDATE data_lifecycle
        -- The minute of the oldest sample left (chunks are whole days, so that minute is
        -- complete): the rollup never re-rolls before it.
        SET dropped_before = greatest(
                coalesce(dropped_before, '-infinity'),
                date_trunc('minute', coalesce((SELECT min(time) FROM samples), cutoff))),
            chunks_dropped = chunks_dropped + n,
            last_drop_at = now()
        WHERE n > 0;
    UPDATE data_lifecycle SET last_drop_at = now() WHERE n = 0;
    RETURN n;
END
$$;

-- Functions are executable by PUBLIC by default; these are the agents worker's alone.
REVOKE ALL ON FUNCTION factorylm_roll_up_samples(timestamptz, interval, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION factorylm_drop_raw_samples(interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION factorylm_roll_up_samples(timestamptz, interval, interval)
    TO factorylm_agents;
GRANT EXECUTE ON FUNCTION factorylm_drop_raw_samples(interval, interval) TO factorylm_agents;

-- On the Timescale-licensed edition (the timescaledb-ha image in compose) raw chunks older than
-- a day are also compressed, per PLC·metric: the rollup and late inserts still work on them. The
-- Apache-2 edition of the embedded default has no compression; `factorylm doctor` says which
-- edition is in use. The test suite runs on the Apache-2 edition only; this block was run by
-- hand on a TSL build (docs/operations.md, "Retention and rollups").
DO $$
BEGIN
    IF current_setting('timescaledb.license', true) = 'timescale' THEN
        ALTER TABLE samples SET (timescaledb.compress,
                                 timescaledb.compress_segmentby = 'plc_id, metric',
                                 timescaledb.compress_orderby = 'time DESC');
        PERFORM add_compression_policy('samples', INTERVAL '1 day', if_not_exists => true);
    END IF;
END
$$;
