-- Vector memory and agents: what fixed each drift event, equipment manuals as embedded
-- chunks, and every LLM call's tokens and cost (read by the token budget).

-- Outcome metadata written by `record_outcome`; `outcome`, `action_taken` and `resolved`
-- already exist on drift_events.
ALTER TABLE drift_events
    ADD COLUMN outcome_kind    text CHECK (outcome_kind IN ('resolved', 'false_positive', 'unresolved')),
    ADD COLUMN outcome_at      timestamptz,
    ADD COLUMN embedding_model text;
CREATE INDEX drift_events_vendor ON drift_events (vendor);

CREATE TABLE manuals (
    id          bigserial PRIMARY KEY,
    source      text        NOT NULL UNIQUE,  -- the file name citations show
    title       text        NOT NULL,
    media_type  text        NOT NULL CHECK (media_type IN ('pdf', 'markdown', 'text')),
    sha256      text        NOT NULL,
    pages       integer     NOT NULL,
    chunk_count integer     NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE manual_chunks (
    id          bigserial PRIMARY KEY,
    manual_id   bigint      NOT NULL REFERENCES manuals (id) ON DELETE CASCADE,
    chunk_index integer     NOT NULL,
    page        integer,              -- PDF page (1-based); NULL for Markdown and text
    section     text,                 -- nearest Markdown heading
    text        text        NOT NULL,
    embedding   vector(384) NOT NULL,
    UNIQUE (manual_id, chunk_index)
);
CREATE INDEX manual_chunks_embedding_hnsw ON manual_chunks USING hnsw (embedding vector_cosine_ops);

CREATE TABLE llm_usage (
    id            bigserial PRIMARY KEY,
    at            timestamptz      NOT NULL DEFAULT now(),
    agent         text             NOT NULL,
    workflow_id   text,
    activity      text,
    provider      text             NOT NULL,  -- anthropic | gemini | offline
    model         text             NOT NULL,
    purpose       text             NOT NULL DEFAULT 'answer' CHECK (purpose IN ('answer', 'repair')),
    input_tokens  integer          NOT NULL DEFAULT 0,
    output_tokens integer          NOT NULL DEFAULT 0,
    cost_usd      numeric(12, 6)   NOT NULL DEFAULT 0,
    latency_ms    double precision,
    ok            boolean          NOT NULL,
    error         text
);
CREATE INDEX llm_usage_at ON llm_usage (at);
CREATE INDEX llm_usage_agent_at ON llm_usage (agent, at);
