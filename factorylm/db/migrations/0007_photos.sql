-- Photo intake (docs/photos.md). The image itself is in the photo store; this row says where,
-- what the vision model found, which machine it is and which work order it became. An asset's
-- photo history is its rows here, newest first.
CREATE TABLE photos (
    id             text PRIMARY KEY,
    workflow_id    text        NOT NULL,
    source         text        NOT NULL CHECK (source IN ('upload', 'whatsapp')),
    sender         text,
    note           text        NOT NULL DEFAULT '',
    storage        text        NOT NULL,
    location       text        NOT NULL,
    content_type   text        NOT NULL,
    size_bytes     integer     NOT NULL CHECK (size_bytes > 0),
    sha256         text        NOT NULL,
    width          integer     NOT NULL,
    height         integer     NOT NULL,
    status         text        NOT NULL DEFAULT 'received'
                   CHECK (status IN ('received', 'analysed', 'awaiting_asset', 'completed')),
    asset_id       text,
    finding        jsonb,
    work_order_id  text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz
);
CREATE INDEX photos_asset_history ON photos (asset_id, received_at DESC) WHERE asset_id IS NOT NULL;

-- "Which machine is this?" questions sent on WhatsApp; a reply from the recipient finds its
-- photo workflow here.
CREATE TABLE asset_questions (
    photo_id     text PRIMARY KEY REFERENCES photos (id),
    workflow_id  text        NOT NULL,
    recipient    text        NOT NULL,
    status       text        NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'answered', 'expired')),
    answer       text,
    asked_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX asset_questions_waiting ON asset_questions (recipient, asked_at DESC) WHERE status = 'waiting';
