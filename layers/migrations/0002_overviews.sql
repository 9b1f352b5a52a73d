-- Precomputed low-zoom overviews of each layer, rebuilt by every ingest that changes data.
CREATE SCHEMA IF NOT EXISTS onemap_overview;
