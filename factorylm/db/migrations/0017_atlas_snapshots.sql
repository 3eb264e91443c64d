-- Atlas CMMS (docs/operations.md, "Atlas CMMS"). What FactoryLM sent for each work order it
-- opened in Atlas, so that `GET /work-orders/ATLAS-<id>` can answer from our own database: the
-- API process holds no Atlas credentials, and Atlas keeps only a truncated, HTML-escaped copy
-- of a long description.
ALTER TABLE cmms_links
    ADD COLUMN title           text,
    ADD COLUMN description     text,
    ADD COLUMN priority        text,
    ADD COLUMN asset_id        text,
    ADD COLUMN remote_asset_id text,
    ADD COLUMN remote_custom_id text,
    ADD COLUMN truncated       boolean NOT NULL DEFAULT false;

-- Not unique: an Atlas reinstalled from scratch hands out its ids again.
CREATE INDEX cmms_links_remote ON cmms_links (system, remote_id);

-- FactoryLM asset ids (PLC ids) and the Atlas asset each one was found or created as: one
-- lookup per asset, not one per work order, and a created asset is never created twice.
CREATE TABLE cmms_assets (
    system     text        NOT NULL,
    asset_id   text        NOT NULL,
    remote_id  text        NOT NULL,
    created    boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, asset_id)
);
