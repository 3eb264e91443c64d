-- The outbound path (docs/approvals.md, "Delivery"): one row per message to one address,
-- written before the message is handed to Twilio. `state` follows Twilio's status callbacks:
-- queued (ours, or Twilio's queue) → sent → delivered | failed; never backwards. A row still
-- queued without a message SID was never confirmed handed over: it is sent again, and if its
-- last attempt's answer was lost (`in_flight`) the resend is counted in `duplicates`.
CREATE TABLE outbound_messages (
    id            bigserial PRIMARY KEY,
    idem_key      text        NOT NULL UNIQUE,
    kind          text        NOT NULL
                  CHECK (kind IN ('approval', 'page', 'notice', 'summary', 'outcome', 'report', 'alert')),
    channel       text        NOT NULL CHECK (channel IN ('whatsapp', 'sms', 'log')),
    address       text        NOT NULL,
    body          text        NOT NULL,
    workflow_id   text,
    run_id        text,
    -- An approval request's code, or a page's ACK code: a failure or an ACK finds the workflow.
    code          text,
    -- The person's SMS number, tried once when this WhatsApp message fails.
    fallback      text,
    fallback_of   bigint REFERENCES outbound_messages (id),
    state         text        NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'sent', 'delivered', 'failed')),
    twilio_status text,
    message_sid   text,
    error_code    text,
    attempts      integer     NOT NULL DEFAULT 0,
    in_flight     boolean     NOT NULL DEFAULT false,
    duplicates    integer     NOT NULL DEFAULT 0,
    -- The workflow was told that this message reached nobody (it escalated at once).
    escalated     boolean     NOT NULL DEFAULT false,
    acked_at      timestamptz,
    acked_by      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbound_messages_sid ON outbound_messages (message_sid);
CREATE INDEX outbound_messages_undelivered ON outbound_messages (created_at)
    WHERE state IN ('queued', 'sent');
CREATE INDEX outbound_messages_pages ON outbound_messages (address, created_at)
    WHERE kind = 'page' AND acked_at IS NULL;
