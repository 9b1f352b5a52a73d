-- Jobs: work that outlives a request (an upload's ingest; later, analyses), queued here and
-- run by worker processes (`onemap worker`) that claim them with FOR UPDATE SKIP LOCKED, so
-- any number of workers on any number of machines share one queue and a restart loses
-- nothing: a job whose worker stopped beating is claimed again (an ingest is one
-- transaction, so running it twice is safe). States are OGC API - Processes' statusCode.
CREATE TABLE onemap.jobs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind         text NOT NULL,
    state        text NOT NULL DEFAULT 'accepted'
                 CHECK (state IN ('accepted', 'running', 'successful', 'failed', 'dismissed')),
    principal_id bigint REFERENCES onemap.principals (id),
    principal    text NOT NULL,
    department   text,
    layer_id     text,
    params       jsonb NOT NULL DEFAULT '{}',
    progress     integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    message      text,
    result       jsonb,
    attempts     integer NOT NULL DEFAULT 0,
    worker       text,
    beat_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX jobs_waiting ON onemap.jobs (created_at) WHERE state IN ('accepted', 'running');
CREATE INDEX jobs_by_principal ON onemap.jobs (principal_id, created_at DESC);

-- Who may publish new layers for their department (rule 10 of access/policy.py).
ALTER TABLE onemap.principals ADD COLUMN publisher boolean NOT NULL DEFAULT false;
