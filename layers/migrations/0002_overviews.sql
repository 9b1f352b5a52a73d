-- Precomputed low-zoom overviews of each layer, rebuilt by every ingest that changes data.
CREATE SCHEMA IF NOT EXISTS onemap_overview;
-- Overviews are searched by (zoom, position) in one GiST index.
CREATE EXTENSION IF NOT EXISTS btree_gist;
