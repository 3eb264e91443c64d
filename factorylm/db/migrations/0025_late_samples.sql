-- Late samples reach the 1-minute rollups (docs/operations.md, "Retention and rollups").
--
-- The rollup re-rolls only the last `lookback` behind its watermark. Samples an edge backfills
-- from its disk spool after a longer outage land in minutes already rolled up; without this
-- migration those minutes would stay wrong in samples_1m for ever, and once their raw chunk is
-- dropped the late samples would be in no long view at all. So the ingest says, in the
-- transaction of each backfilled batch, "samples as old as X arrived": the next rollup re-rolls
-- from X, in `max_span` steps, before it advances the watermark.

ALTER TABLE data_lifecycle
    -- Minutes from here to the watermark less the lookback are rolled up again (NULL: none).
    ADD COLUMN reroll_from     timestamptz,
    -- The lookback the last rollup used: what "already rolled and not re-rolled" means to
    -- factorylm_note_late_samples.
    ADD COLUMN rollup_lookback interval,
    -- Samples older than dropped_before that arrived after their chunk was dropped, folded
    -- into their minutes (see factorylm_fold_in_late_samples).
    ADD COLUMN late_folded     bigint NOT NULL DEFAULT 0,
    -- Minutes re-rolled because of reroll_from, in total (doctor, the lifecycle's result).
    ADD COLUMN rerolled_minutes bigint NOT NULL DEFAULT 0;

-- Called by the ingest's backfill FIRST in the transaction of each batch, with the batch's
-- oldest sample time; only lowers reroll_from, never raises it.
--
-- It takes the data_lifecycle row lock even when it records nothing, and the rollup and the
-- drop take that lock first too: a backfill and a rollup step are then serialised, so a rollup
-- either sees the batch's samples or runs after the batch's note (and takes the watermark the
-- note compared against). Taken before the COPY, the lock is always taken before any chunk
-- lock, in the backfill as in the drop, so the two cannot deadlock.
--
-- What is recorded: the minute of `oldest` if it is before the watermark less the lookback the
-- rollup last used (minutes after that are re-rolled anyway), raised to dropped_before.
-- Minutes before dropped_before lost their raw samples to the retention: re-rolling them from
-- what is raw would overwrite a whole minute with its late part. Their late samples (raw again,
-- in a chunk the COPY re-created) are instead folded into the rollup rows they belong to and
-- deleted from `samples`, by factorylm_fold_in_late_samples, which the rollup and the drop call
-- before anything else. A raw sample older than dropped_before can only be such a late one:
-- the drop leaves none behind.
CREATE FUNCTION factorylm_note_late_samples(oldest timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    watermark timestamptz;
    dropped   timestamptz;
    lookback  interval;
    minute    timestamptz;
BEGIN
    SELECT rolled_up_to, dropped_before, rollup_lookback INTO watermark, dropped, lookback
        FROM data_lifecycle FOR UPDATE;
    IF oldest IS NULL OR watermark IS NULL OR NOT isfinite(oldest) THEN
        RETURN;  -- nothing rolled up yet: the first rollup starts at the oldest sample anyway
    END IF;
    minute := greatest(date_trunc('minute', oldest), coalesce(dropped, '-infinity'));
    IF minute < watermark - coalesce(lookback, INTERVAL '0') THEN
        UPDATE data_lifecycle SET reroll_from = least(coalesce(reroll_from, minute), minute);
    END IF;
END
$$;

-- Folds the raw samples older than dropped_before into their minutes and deletes them, in one
-- statement (so exactly the samples folded are deleted, whatever commits meanwhile); returns
-- how many. Two sets of samples combine exactly (Chan's parallel formula, as in
-- factorylm/db/rollups.py) for the count, mean, m2, min and max. `last`: samples_1m keeps no
-- time for it, so the late samples' last value wins. That is right for what a spool holds: it
-- takes only what came after the last sample that reached PostgreSQL live, and is backfilled
-- in time order, so in a minute older than the retention (the one an outage began in) the
-- spooled samples are the later ones, and each batch later than the one before.
-- Owner only: the rollup and the drop call it, no role does.
CREATE FUNCTION factorylm_fold_in_late_samples(dropped timestamptz)
RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF dropped IS NULL THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM samples WHERE time < dropped RETURNING time, plc_id, metric, value
    ), late AS (
        SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, plc_id, metric,
               count(*) AS samples, avg(value) AS mean,
               coalesce(var_pop(value), 0) * count(*) AS m2, min(value) AS min,
               max(value) AS max, last(value, time) AS last
        FROM gone GROUP BY 1, 2, 3
    ), merged AS (  -- runs although nothing reads it, as every data-modifying WITH does
        INSERT INTO samples_1m AS r (bucket, plc_id, metric, samples, mean, m2, min, max, last)
        SELECT bucket, plc_id, metric, samples, mean, m2, min, max, last FROM late
        ON CONFLICT (plc_id, metric, bucket) DO UPDATE
            SET samples = r.samples + EXCLUDED.samples,
                mean = (r.samples * r.mean + EXCLUDED.samples * EXCLUDED.mean)
                       / (r.samples + EXCLUDED.samples),
                m2 = r.m2 + EXCLUDED.m2 + (EXCLUDED.mean - r.mean) ^ 2
                     * r.samples * EXCLUDED.samples / (r.samples + EXCLUDED.samples),
                min = least(r.min, EXCLUDED.min),
                max = greatest(r.max, EXCLUDED.max),
                last = EXCLUDED.last
    )
    SELECT coalesce(sum(samples), 0) INTO n FROM late;
    IF n > 0 THEN
        UPDATE data_lifecycle SET late_folded = late_folded + n;
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION factorylm_fold_in_late_samples(timestamptz) FROM PUBLIC;

-- Same signature and meaning as 0022's: the activity calls it unchanged. Each call does ONE of:
-- re-roll the next `max_span` of [reroll_from, watermark − lookback) (clearing reroll_from once
-- there), or roll up from the watermark less the lookback as before. The activity calls it
-- until neither the watermark nor reroll_from moves.
CREATE OR REPLACE FUNCTION factorylm_roll_up_samples(
    until timestamptz, lookback interval, max_span interval)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    watermark timestamptz;
    dropped   timestamptz;
    pending   timestamptz;
    previous  interval;
    from_t    timestamptz;
    to_t      timestamptz;
BEGIN
    IF lookback < INTERVAL '0' OR max_span <= INTERVAL '0' THEN
        RAISE EXCEPTION 'lookback must be >= 0 and max_span > 0 (got %, %)', lookback, max_span;
    END IF;
    SELECT rolled_up_to, dropped_before, reroll_from, rollup_lookback
        INTO watermark, dropped, pending, previous
        FROM data_lifecycle FOR UPDATE;
    PERFORM factorylm_fold_in_late_samples(dropped);
    -- A shorter lookback than last time: a note compared against the longer one may have left
    -- minutes between the two to the normal rollup, which no longer reaches them.
    IF watermark IS NOT NULL AND previous IS NOT NULL AND lookback < previous THEN
        pending := least(coalesce(pending, watermark - previous), watermark - previous);
    END IF;
    UPDATE data_lifecycle SET rollup_lookback = lookback, reroll_from = pending;

    IF pending IS NOT NULL AND watermark IS NOT NULL THEN
        from_t := greatest(pending, coalesce(dropped, '-infinity'));
        to_t := least(from_t + max_span, watermark - lookback);
        IF to_t > from_t THEN
            INSERT INTO samples_1m (bucket, plc_id, metric, samples, mean, m2, min, max, last)
            SELECT time_bucket(INTERVAL '1 minute', time), plc_id, metric, count(*), avg(value),
                   coalesce(var_pop(value), 0) * count(*), min(value), max(value),
                   last(value, time)
            FROM samples
            WHERE time >= from_t AND time < to_t
            GROUP BY 1, 2, 3
            ON CONFLICT (plc_id, metric, bucket) DO UPDATE
                SET samples = EXCLUDED.samples, mean = EXCLUDED.mean, m2 = EXCLUDED.m2,
                    min = EXCLUDED.min, max = EXCLUDED.max, last = EXCLUDED.last;
            UPDATE data_lifecycle
                SET reroll_from = CASE WHEN to_t < watermark - lookback THEN to_t END,
                    rerolled_minutes = rerolled_minutes
                        + (extract(epoch FROM to_t - from_t) / 60)::bigint,
                    last_rollup_at = now();
            RETURN watermark;
        END IF;
        -- Nothing left before the normal rollup's reach: it covers the rest.
        UPDATE data_lifecycle SET reroll_from = NULL;
    END IF;

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

-- Same signature and meaning as 0022's, but late samples older than dropped_before are folded
-- into their minutes first, under the same lock: otherwise a chunk a backfill re-created for
-- them, being older than the retention, would be dropped with them before any rollup saw them.
CREATE OR REPLACE FUNCTION factorylm_drop_raw_samples(retention interval, lookback interval)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    watermark timestamptz;
    dropped   timestamptz;
    cutoff    timestamptz;
    n         integer;
BEGIN
    SELECT rolled_up_to, dropped_before INTO watermark, dropped FROM data_lifecycle FOR UPDATE;
    IF watermark IS NULL THEN
        RETURN 0;  -- nothing rolled up yet: nothing may go
    END IF;
    PERFORM factorylm_fold_in_late_samples(dropped);
    -- Late samples between dropped_before and the cutoff whose minutes wait to be re-rolled:
    -- they must not go first.
    cutoff := least(now() - greatest(retention, INTERVAL '1 day'), watermark - lookback,
                    coalesce((SELECT reroll_from FROM data_lifecycle), 'infinity'));
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

-- The ingest may only call the note: it cannot roll up, drop, or fold by itself.
REVOKE ALL ON FUNCTION factorylm_note_late_samples(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION factorylm_note_late_samples(timestamptz) TO factorylm_ingest;
