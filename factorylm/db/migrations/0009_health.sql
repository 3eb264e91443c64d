-- Health monitoring: failures as incidents (one alert per incident, not per check run), and
-- a row the monitor writes to prove the database accepts writes.
CREATE TABLE health_incidents (
    id         bigserial PRIMARY KEY,
    check_name text        NOT NULL,
    subject    text        NOT NULL,
    detail     text        NOT NULL,
    critical   boolean     NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz
);
CREATE UNIQUE INDEX health_incidents_open ON health_incidents (check_name, subject)
    WHERE closed_at IS NULL;

CREATE TABLE health_probe (
    id         int PRIMARY KEY,
    written_at timestamptz NOT NULL
);
