-- A drift workflow's id is the same for every episode on a machine and metric
-- (drift-<plc>-<metric>), and 4-digit request codes repeat across episodes. Keyed by workflow
-- id and code alone, a new episode whose code matched an old one was taken for a retry of the
-- old request and never sent. Requests belong to the run that asked.
ALTER TABLE approval_requests ADD COLUMN run_id text NOT NULL DEFAULT '';
ALTER TABLE approval_requests DROP CONSTRAINT approval_requests_workflow_id_code_recipient_key;
ALTER TABLE approval_requests
    ADD CONSTRAINT approval_requests_run_code_recipient_key
    UNIQUE (workflow_id, run_id, code, recipient);
