-- Approval requests sent to people, so an inbound reply finds its workflow; WhatsApp's
-- 24-hour session window per number; outcome replies awaited after a work order.
CREATE TABLE approval_requests (
    id           bigserial PRIMARY KEY,
    workflow_id  text        NOT NULL,
    code         text        NOT NULL,
    recipient    text        NOT NULL,
    action       text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'escalated')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    answered_at  timestamptz,
    answered_by  text,
    message_sid  text,
    UNIQUE (workflow_id, code, recipient)
);
CREATE INDEX approval_requests_pending ON approval_requests (recipient) WHERE status = 'pending';

CREATE TABLE whatsapp_sessions (
    number          text PRIMARY KEY,
    last_inbound_at timestamptz NOT NULL
);

CREATE TABLE outcome_requests (
    workflow_id   text PRIMARY KEY,
    event_id      bigint      NOT NULL,
    recipient     text        NOT NULL,
    work_order_id text        NOT NULL,
    status        text        NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'answered', 'expired')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    answer        text
);
CREATE INDEX outcome_requests_waiting ON outcome_requests (recipient) WHERE status = 'waiting';
