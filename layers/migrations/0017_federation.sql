-- Federation: the nodes this instance knows (a city knows its districts, a district its
-- city), the one-time tokens a city issues for joining, and the catalog records harvested
-- from districts. A node's rows are its own: removing it removes its records at once.
CREATE TABLE onemap.node_tokens (
    hash       text PRIMARY KEY,  -- sha256 of the token; the token itself is shown once
    made_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_by    text,
    used_at    timestamptz
);

CREATE TABLE onemap.nodes (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,30}$'),
    role         text NOT NULL CHECK (role IN ('city', 'district')),
    url          text NOT NULL,
    public_key   text NOT NULL,  -- its Ed25519 key (PEM): it signs assertions and notices
    jurisdiction geometry(MultiPolygon, 4490),
    joined_at    timestamptz NOT NULL DEFAULT now(),
    health       text NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown', 'up', 'down')),
    checked_at   timestamptz,
    harvested_at timestamptz,
    harvest_etag text,
    harvest_error text,
    records      integer NOT NULL DEFAULT 0
);

-- Columns named as in onemap.layers, so one catalog search runs over both.
CREATE TABLE onemap.remote_records (
    node          text NOT NULL REFERENCES onemap.nodes (name) ON DELETE CASCADE,
    layer         text NOT NULL,
    id            text GENERATED ALWAYS AS (node || ':' || layer) STORED,
    kind          text NOT NULL,
    title         text NOT NULL,
    description   text,
    department    text,
    keywords      text[] NOT NULL DEFAULT '{}',
    update_cycle  text NOT NULL DEFAULT 'irregular',
    sharing_type  text NOT NULL DEFAULT 'unconditional',
    role          text NOT NULL DEFAULT 'thematic',
    level         text NOT NULL,
    feature_count bigint NOT NULL DEFAULT 0,
    extent        double precision[],
    version       bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    record        jsonb NOT NULL,  -- as the node serves it, its links the node's own
    harvested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, layer)
);

-- Nodes are part of access: a node removed is refused at every server's next request.
CREATE TRIGGER nodes_bump AFTER INSERT OR UPDATE OF url, public_key OR DELETE ON onemap.nodes
    FOR EACH STATEMENT EXECUTE FUNCTION onemap.bump_access();
