-- Per-client API tokens bound to a role (and, for approvers, to one approver identity).
-- Only a SHA-256 of each token is kept: the token itself is shown once, when it is made.
CREATE TABLE api_tokens (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    role       text        NOT NULL CHECK (role IN ('uploader', 'viewer', 'approver', 'admin')),
    approver   text,
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (role <> 'approver' OR approver IS NOT NULL)
);

-- Every inbound WhatsApp message once, by Twilio's MessageSid: a replayed or re-delivered
-- webhook is answered with what the first delivery was answered, and never acted on again.
CREATE TABLE inbound_messages (
    message_sid text        PRIMARY KEY,
    sender      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    answer      text
);

-- A plain "yes" is taken only for a request sent less than its timeout ago.
ALTER TABLE approval_requests ADD COLUMN expires_at timestamptz;
