-- Routes and service areas (the analysis processes route and service-area) run on
-- pgRouting where the server has it; without it those two processes say so and the
-- rest of OneMap is unaffected.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgrouting') THEN
    CREATE EXTENSION IF NOT EXISTS pgrouting;
  END IF;
END $$;

-- A line layer's network: its lines cut at every vertex into edges between nodes (shared
-- vertices join ways, as OpenStreetMap's do), built from one version of the layer and
-- made again when the version moves. The edges live in onemap_graph."<layer id>".
CREATE SCHEMA IF NOT EXISTS onemap_graph;
CREATE TABLE IF NOT EXISTS onemap.graphs (
  layer_id text PRIMARY KEY REFERENCES onemap.layers (id) ON DELETE CASCADE,
  version bigint NOT NULL,
  edges bigint NOT NULL,
  nodes bigint NOT NULL,
  built_at timestamptz NOT NULL DEFAULT now()
);
