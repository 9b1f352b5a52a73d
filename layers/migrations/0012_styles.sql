-- Each layer's look, kept in the catalog: MapLibre style layers (their source is filled in
-- when a style is served). A layer without a row here is drawn in its default look.
CREATE TABLE onemap.styles (
    layer_id   text PRIMARY KEY REFERENCES onemap.layers (id) ON DELETE CASCADE,
    layers     jsonb NOT NULL CHECK (jsonb_typeof(layers) = 'array'),
    set_by     text NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);
