-- Work orders kept in an external CMMS (Atlas): which remote id each of our keys became,
-- so a retried activity finds the work order it already opened.
CREATE TABLE cmms_links (
    external_key text PRIMARY KEY,
    system       text        NOT NULL,
    remote_id    text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
