-- Alarm management after ISA-18.2 (docs/operations.md, "Alarm management").
--
-- Every PLC·metric that can alarm has a short code people type to shelve it ("SHELVE A7 2h"):
-- the number is the point's row, so a code never changes and is never reused.
CREATE TABLE alarm_points (
    id     serial PRIMARY KEY,
    code   text GENERATED ALWAYS AS ('A' || id) STORED UNIQUE,
    plc_id text NOT NULL,
    metric text NOT NULL,
    UNIQUE (plc_id, metric)
);

-- The journal: what happened to each alarm and what a person was shown. The KPIs (alarms per
-- 10 minutes, peak, time in flood, most frequent, standing) are SQL over it
-- (factorylm/alarms.py). A raise records how it was annunciated: sent (its workflow was
-- started), shelved (recorded, not shown), suppressed (a consequence of its PLC being
-- offline), flood (listed in a grouped message instead of its own).
CREATE TABLE alarm_journal (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    site         text        NOT NULL,
    plc_id       text        NOT NULL,
    metric       text        NOT NULL,
    code         text        NOT NULL,
    event        text        NOT NULL CHECK (event IN ('raise', 'clear', 'shelve', 'unshelve', 'chatter')),
    annunciation text        CHECK (annunciation IN ('sent', 'shelved', 'suppressed', 'flood')),
    detector     text,
    detail       text        NOT NULL DEFAULT '',
    actor        text,
    CHECK ((event = 'raise') = (annunciation IS NOT NULL))
);
CREATE INDEX alarm_journal_at ON alarm_journal (at);
CREATE INDEX alarm_journal_point ON alarm_journal (plc_id, metric, at);

-- Shelves: one open shelf per alarm at most. `ended_at` is set by UNSHELVE or, once `until`
-- has passed, by the ingest (ended_by 'expired').
CREATE TABLE alarm_shelves (
    id         bigserial PRIMARY KEY,
    code       text        NOT NULL,
    plc_id     text        NOT NULL,
    metric     text        NOT NULL,
    shelved_by text        NOT NULL,
    shelved_at timestamptz NOT NULL DEFAULT now(),
    until      timestamptz NOT NULL,
    ended_at   timestamptz,
    ended_by   text,
    CHECK (until > shelved_at)
);
CREATE UNIQUE INDEX alarm_shelves_open ON alarm_shelves (code) WHERE ended_at IS NULL;

-- The narrator (`make demo`, dev/demo/narrator.py) hears what the product does from these
-- notifications instead of polling Temporal: each names the table, the operation and the
-- row's key (the payload stays far below NOTIFY's 8000 bytes; the listener reads the row).
CREATE FUNCTION factorylm_audit_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('audit_events', json_build_object(
        'table', TG_TABLE_NAME, 'op', lower(TG_OP), 'key', to_jsonb(NEW) ->> TG_ARGV[0])::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_notify AFTER INSERT OR UPDATE ON notifications
    FOR EACH ROW EXECUTE FUNCTION factorylm_audit_notify('id');
CREATE TRIGGER audit_notify AFTER INSERT OR UPDATE ON plc_writes
    FOR EACH ROW EXECUTE FUNCTION factorylm_audit_notify('action_id');
CREATE TRIGGER audit_notify AFTER INSERT ON work_orders
    FOR EACH ROW EXECUTE FUNCTION factorylm_audit_notify('id');
CREATE TRIGGER audit_notify AFTER INSERT ON alarm_journal
    FOR EACH ROW EXECUTE FUNCTION factorylm_audit_notify('id');
-- A drift workflow started (or signalled) for an alarm: its outbox row is stamped delivered.
CREATE TRIGGER audit_notify AFTER UPDATE OF delivered_at ON alarm_outbox
    FOR EACH ROW WHEN (OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL)
    EXECUTE FUNCTION factorylm_audit_notify('id');
-- An approval answered, denied or expired.
CREATE TRIGGER audit_notify AFTER UPDATE OF status ON approval_requests
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION factorylm_audit_notify('id');
-- A message's delivery state (queued → sent → delivered | failed), where the outbound path's
-- table exists (migration 0019).
DO $$
BEGIN
    IF to_regclass('outbound_messages') IS NOT NULL THEN
        CREATE TRIGGER audit_notify AFTER INSERT OR UPDATE OF state ON outbound_messages
            FOR EACH ROW EXECUTE FUNCTION factorylm_audit_notify('id');
    END IF;
END
$$;
