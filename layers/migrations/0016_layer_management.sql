-- A withdrawn layer is served to no one; nothing of it is deleted (its history stays) and
-- its publishers may restore it. Withdrawing changes who sees it, as reclassifying does.
ALTER TABLE onemap.layers ADD COLUMN withdrawn_at timestamptz, ADD COLUMN withdrawn_by text;
CREATE TRIGGER layers_withdrawn_bump AFTER UPDATE ON onemap.layers FOR EACH ROW
    WHEN (OLD.withdrawn_at IS DISTINCT FROM NEW.withdrawn_at)
    EXECUTE FUNCTION onemap.bump_access();

-- Sharing on request: a department asks for another's layer, stating a purpose; the owner
-- approves (the grant it makes is kept here) or refuses, saying why.
CREATE TABLE onemap.share_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    layer_id      text NOT NULL REFERENCES onemap.layers (id),
    department_id text NOT NULL REFERENCES onemap.departments (id),
    requested_by  text NOT NULL,
    purpose       text NOT NULL CHECK (length(purpose) BETWEEN 1 AND 2000),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'approved', 'refused', 'withdrawn')),
    decided_by    text,
    decided_at    timestamptz,
    reason        text,
    grant_id      bigint REFERENCES onemap.grants (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- One open request per department and layer.
CREATE UNIQUE INDEX share_requests_open ON onemap.share_requests (layer_id, department_id)
    WHERE state = 'pending';
