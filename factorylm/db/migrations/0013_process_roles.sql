-- One PostgreSQL role per process (docs/operations.md, "Database roles"): the ingest, the PLC
-- edge worker, the agents worker, the API, and Grafana's read-only datasource. Roles belong to
-- the cluster, not to this database, so a role that exists already (another database of the
-- same cluster, or Grafana's role made by hand before) is kept. They are made without LOGIN and
-- without a password: a deployment gives each its password from its secret store (the compose
-- file's `db-roles` step). Their privileges on this database's tables are converged by
-- `factorylm db migrate` from app/deployment.py, after every migration, so that tables added by
-- later migrations are covered too.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['factorylm_ingest', 'factorylm_edge', 'factorylm_agents',
                                     'factorylm_api', 'grafana_reader']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object THEN
                NULL;  -- made meanwhile by a migration of another database of the cluster
            END;
        END IF;
    END LOOP;
END
$$;

-- Only the owner creates objects (PostgreSQL 15's default; a cluster upgraded from an older
-- version still lets every role create tables in public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- An approval is recorded as given only by the agents worker (the workflow's decision): the
-- PLC edge trusts the record before it writes. The internet-facing API may only expire a
-- pending request (a reply that came too late), never mark one approved; the edge and Grafana
-- read. The owner (migrations, the embedded development stack) is not subject to these rules.
ALTER TABLE approval_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY approval_requests_agents ON approval_requests
    TO factorylm_agents USING (true) WITH CHECK (true);
CREATE POLICY approval_requests_read ON approval_requests
    FOR SELECT TO factorylm_api, factorylm_edge, grafana_reader USING (true);
CREATE POLICY approval_requests_api_expires ON approval_requests
    FOR UPDATE TO factorylm_api USING (status = 'pending') WITH CHECK (status = 'expired');
