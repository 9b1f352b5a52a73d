-- What every server process must agree on, kept here rather than in each process: the
-- rate limits' token buckets (one per key) and what each caller was served of base layers
-- today. Unlogged: a crash forgets at most a minute of limits, and quotas are read back
-- from the audit log.
CREATE UNLOGGED TABLE IF NOT EXISTS onemap.rate_buckets (
  key text PRIMARY KEY,
  tokens double precision NOT NULL,
  at timestamptz NOT NULL,
  granted integer NOT NULL  -- what the last lease took
);
CREATE UNLOGGED TABLE IF NOT EXISTS onemap.quota_used (
  who text NOT NULL,
  day date NOT NULL,
  used bigint NOT NULL,
  PRIMARY KEY (who, day)
);
