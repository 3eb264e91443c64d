-- The plant board's drift markers by time (api/board.py `markers`, read on every live tick,
-- up to ten times a second): the alarms of the last 45 s from the outbox and from the drift
-- events. Neither table is pruned (the outbox is the alarms' journal, the drift events are the
-- vector memory), so without these the read was a scan of both that grew with the plant's
-- history: 10-19 ms per tick at 100 000 rows each, against 0.1-0.2 ms with them.
CREATE INDEX alarm_outbox_detected_at ON alarm_outbox (detected_at);
CREATE INDEX drift_events_detected_at ON drift_events (detected_at);
