-- Base maps: named, versioned compositions of catalog layers with a cartographic style.
-- A vector base map keeps MapLibre style layers, each naming the catalog layer it draws
-- (source-layer); a raster one names imagery layers (the newest time slice is served);
-- one made of another's labels (labels_of) keeps no style of its own: it is always the
-- symbol layers of the other, so the two never disagree.
CREATE TABLE onemap.basemaps (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{0,62}$'),
    title      text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('vector', 'raster')),
    layers     text[] NOT NULL CHECK (cardinality(layers) BETWEEN 1 AND 16),
    style      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(style) = 'array'),
    labels_of  text REFERENCES onemap.basemaps (id) ON DELETE RESTRICT,
    background text,
    set_by     text NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);
