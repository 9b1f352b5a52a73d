-- The layer catalog, the ingest log, and the schema that holds every layer's features.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE SCHEMA IF NOT EXISTS onemap_data;

CREATE TABLE onemap.layers (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind           text NOT NULL DEFAULT 'vector' CHECK (kind IN ('vector', 'raster', '3d')),
    title          text NOT NULL,
    description    text,
    department     text,
    attribution    text,
    keywords       text[] NOT NULL DEFAULT '{}',
    update_cycle   text NOT NULL DEFAULT 'irregular',
    sharing_type   text NOT NULL DEFAULT 'unconditional'
                   CHECK (sharing_type IN ('unconditional', 'conditional', 'not_shared')),
    -- The reference frame the data came in (EPSG:4326 or EPSG:4490); geometry is lon/lat.
    crs            text NOT NULL DEFAULT 'EPSG:4326',
    source_crs     text,
    source         text,
    geometry_type  text,
    key_field      text,
    -- The data dictionary: [{name, type, length, nullable, key, source_name}].
    fields         jsonb NOT NULL DEFAULT '[]',
    feature_count  bigint NOT NULL DEFAULT 0,
    extent         double precision[],
    detail_zoom    integer,
    minzoom        integer NOT NULL DEFAULT 0,
    maxzoom        integer NOT NULL DEFAULT 22,
    -- version changes with any change to the data; schema_version with its columns.
    version        bigint NOT NULL DEFAULT 0,
    schema_version integer NOT NULL DEFAULT 0,
    produced_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE onemap.ingests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    layer_id    text NOT NULL,
    source      text NOT NULL,
    status      text NOT NULL CHECK (status IN ('ok', 'failed')),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    counts      jsonb NOT NULL DEFAULT '{}',
    issues      jsonb NOT NULL DEFAULT '[]',
    error       text
);
CREATE INDEX ingests_layer_idx ON onemap.ingests (layer_id, started_at DESC);
