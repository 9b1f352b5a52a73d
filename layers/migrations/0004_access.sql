-- Authorization: classification of layers, departments, principals, keys, grants, audit.

-- A layer's classification level; its fields may carry their own in the dictionary.
-- Levels are ordered by the ONEMAP_LEVELS setting, so the text is not constrained here.
ALTER TABLE onemap.layers ADD COLUMN level text NOT NULL DEFAULT 'internal';

-- Areas a grant or a department is limited to, kept in both frames the readers need.
CREATE TABLE onemap.areas (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name      text NOT NULL,
    geom      geometry(MultiPolygon, 4326) NOT NULL,
    geom_3857 geometry(MultiPolygon, 3857) GENERATED ALWAYS AS (
        ST_Multi(ST_Transform(ST_ClipByBox2D(geom,
            ST_MakeEnvelope(-180, -85.05, 180, 85.05, 4326)), 3857))) STORED
);

CREATE TABLE onemap.departments (
    id        text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{0,62}$'),
    name      text NOT NULL,
    parent_id text REFERENCES onemap.departments (id),
    -- The highest level its people are cleared for, and its jurisdiction.
    max_level text NOT NULL DEFAULT 'internal',
    area_id   bigint REFERENCES onemap.areas (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE onemap.principals (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('user', 'service')),
    department_id text NOT NULL REFERENCES onemap.departments (id),
    -- The OpenID Connect subject ("sub") a Bearer token names this principal by.
    subject       text UNIQUE,
    admin         boolean NOT NULL DEFAULT false,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Keys are shown once; only a SHA-256 of the secret part is kept.
CREATE TABLE onemap.keys (
    id           text PRIMARY KEY,
    principal_id bigint NOT NULL REFERENCES onemap.principals (id),
    kind         text NOT NULL CHECK (kind IN ('api', 'embed')),
    secret_hash  bytea NOT NULL,
    note         text,
    -- Embedding keys: the origins they may be used from and the layers they open.
    origins      text[] NOT NULL DEFAULT '{}',
    layers       text[],
    rate_limit   integer,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A grant gives one target (a principal, a department with its sub-departments, or
-- everyone) rights on the layers whose id matches a pattern (* and ? wildcards).
CREATE TABLE onemap.grants (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal_id   bigint REFERENCES onemap.principals (id),
    department_id  text REFERENCES onemap.departments (id),
    layer_pattern  text NOT NULL,
    can_read       boolean NOT NULL DEFAULT true,
    can_publish    boolean NOT NULL DEFAULT false,
    can_admin      boolean NOT NULL DEFAULT false,
    max_level      text,
    hidden_fields  text[] NOT NULL DEFAULT '{}',
    masked_fields  jsonb NOT NULL DEFAULT '{}',
    area_id        bigint REFERENCES onemap.areas (id),
    area_mode      text NOT NULL DEFAULT 'intersect' CHECK (area_mode IN ('intersect', 'clip')),
    filter         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (principal_id IS NULL OR department_id IS NULL)
);

-- Every change to the tables above bumps this number; servers re-read access when it moves.
CREATE TABLE onemap.access_state (one boolean PRIMARY KEY DEFAULT true CHECK (one),
                                  version bigint NOT NULL);
INSERT INTO onemap.access_state VALUES (true, 1);

CREATE FUNCTION onemap.bump_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE onemap.access_state SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER areas_bump AFTER INSERT OR UPDATE OR DELETE ON onemap.areas
    FOR EACH STATEMENT EXECUTE FUNCTION onemap.bump_access();
CREATE TRIGGER departments_bump AFTER INSERT OR UPDATE OR DELETE ON onemap.departments
    FOR EACH STATEMENT EXECUTE FUNCTION onemap.bump_access();
CREATE TRIGGER principals_bump AFTER INSERT OR UPDATE OR DELETE ON onemap.principals
    FOR EACH STATEMENT EXECUTE FUNCTION onemap.bump_access();
CREATE TRIGGER keys_bump AFTER INSERT OR UPDATE OR DELETE ON onemap.keys
    FOR EACH STATEMENT EXECUTE FUNCTION onemap.bump_access();
CREATE TRIGGER grants_bump AFTER INSERT OR UPDATE OR DELETE ON onemap.grants
    FOR EACH STATEMENT EXECUTE FUNCTION onemap.bump_access();

CREATE TABLE onemap.audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    principal_id bigint,
    principal    text NOT NULL,
    department   text,
    key_id       text,
    action       text NOT NULL,
    method       text NOT NULL,
    path         text NOT NULL,
    layers       text[] NOT NULL DEFAULT '{}',
    detail       jsonb NOT NULL DEFAULT '{}',
    features     bigint,
    status       integer NOT NULL
);
CREATE INDEX audit_at_idx ON onemap.audit (at DESC);
CREATE INDEX audit_principal_idx ON onemap.audit (principal, at DESC);
CREATE INDEX audit_layers_idx ON onemap.audit USING gin (layers);

-- Masks keep a value's shape but not its content: 'middle' keeps the first 3 and last 4
-- characters (an ID number's region and check digits), 'full' keeps nothing.
CREATE FUNCTION onemap.mask(value anyelement, how text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value IS NULL THEN NULL
        WHEN how = 'middle' AND length(value::text) > 7 THEN
            left(value::text, 3) || repeat('*', length(value::text) - 7) || right(value::text, 4)
        ELSE repeat('*', greatest(length(value::text), 1))
    END
$$;

-- Reclassifying a layer, or moving it to another owner, changes who may see it.
CREATE TRIGGER layers_bump AFTER UPDATE ON onemap.layers FOR EACH ROW
    WHEN (OLD.level IS DISTINCT FROM NEW.level
          OR OLD.sharing_type IS DISTINCT FROM NEW.sharing_type
          OR OLD.department IS DISTINCT FROM NEW.department
          OR OLD.fields IS DISTINCT FROM NEW.fields)
    EXECUTE FUNCTION onemap.bump_access();
