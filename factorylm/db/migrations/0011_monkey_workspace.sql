-- The Monkey works in a git repository: each attempt records its branch, commit, change and
-- its token reservation beside the real spend; the Cartographer caches a repository's map per
-- commit and its files' embedded chunks per blob (a file unchanged between commits is embedded
-- once).

ALTER TABLE monkey_runs
    ADD COLUMN status          text    NOT NULL DEFAULT 'failed'
        CHECK (status IN ('passed', 'failed', 'no_provider')),
    ADD COLUMN branch          text,
    ADD COLUMN commit_sha      text,
    ADD COLUMN diff_stat       text    NOT NULL DEFAULT '',
    ADD COLUMN diff            text    NOT NULL DEFAULT '',
    ADD COLUMN reserved_tokens integer NOT NULL DEFAULT 0;

CREATE TABLE monkey_repo_maps (
    repo       text        NOT NULL,  -- the repository as configured (path or URL)
    commit_sha text        NOT NULL,
    files      jsonb       NOT NULL,  -- [{path, size, blob, kind, summary...}]
    built_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo, commit_sha)
);

CREATE TABLE monkey_file_chunks (
    blob_sha    text        NOT NULL,
    chunk_index integer     NOT NULL,
    embedding   vector(384) NOT NULL,
    model       text        NOT NULL,
    PRIMARY KEY (blob_sha, chunk_index)
);
