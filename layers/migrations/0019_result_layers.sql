-- A process's result kept as a layer (layers/results.py) is withdrawn once this passes.
ALTER TABLE onemap.layers ADD COLUMN IF NOT EXISTS expires_at timestamptz;
CREATE INDEX IF NOT EXISTS layers_expiring ON onemap.layers (expires_at)
  WHERE expires_at IS NOT NULL AND withdrawn_at IS NULL;
