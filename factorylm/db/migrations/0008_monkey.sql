-- The Monkey: one row per attempt at a Trello card, and every budget refusal. Token usage
-- itself stays in llm_usage (0003), which the budget ledger aggregates.

CREATE TABLE monkey_runs (
    id            bigserial PRIMARY KEY,
    run_key       text        NOT NULL UNIQUE,  -- workflow run / card / attempt: retries write once
    workflow_id   text        NOT NULL,
    card_id       text        NOT NULL,
    card_name     text        NOT NULL,
    attempt       integer     NOT NULL CHECK (attempt >= 1),
    passed        boolean     NOT NULL,
    generated_by  text        NOT NULL,  -- "anthropic claude-..." or "offline rules"
    summary       text        NOT NULL,
    check_report  text        NOT NULL,
    input_tokens  integer     NOT NULL DEFAULT 0,
    output_tokens integer     NOT NULL DEFAULT 0,
    cost_usd      numeric(12, 6) NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX monkey_runs_card ON monkey_runs (card_id, finished_at);

CREATE TABLE budget_refusals (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    agent            text        NOT NULL,
    work_ref         text,                -- e.g. the Trello card id
    budget_window    text        NOT NULL, -- hour | day | agent-day
    used_tokens      bigint      NOT NULL,
    limit_tokens     bigint      NOT NULL,
    requested_tokens bigint      NOT NULL
);
CREATE INDEX budget_refusals_at ON budget_refusals (at);
