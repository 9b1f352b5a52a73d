-- The client's address on each audit row: an anonymous caller's base-layer quota is
-- counted by address, and a restart reads it back from here as it does for keys.
ALTER TABLE onemap.audit ADD COLUMN client text;
CREATE INDEX audit_anonymous_quota ON onemap.audit (client, at DESC)
    WHERE principal_id IS NULL AND action = 'features';
