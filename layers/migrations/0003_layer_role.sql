-- Base layers (imagery, the e-map) are served, not copied: they get item quotas.
ALTER TABLE onemap.layers ADD COLUMN role text NOT NULL DEFAULT 'thematic'
    CHECK (role IN ('base', 'thematic'));
