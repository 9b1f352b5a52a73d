-- Raster layers: each is a mosaic of scenes (COGs in the raster store), one time slice
-- per acquisition time. A re-ingested scene closes the old row, which stays as history.
CREATE TABLE onemap.scenes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    layer_id    text NOT NULL REFERENCES onemap.layers (id) ON DELETE CASCADE,
    name        text NOT NULL,               -- the source file's name, unique per time
    acquired_at timestamptz NOT NULL,        -- the time slice it belongs to
    path        text NOT NULL,               -- inside the raster store
    crs         text NOT NULL,               -- the COG's (lon/lat: EPSG:4326 or 4490)
    source_crs  text,
    bounds      double precision[] NOT NULL, -- lon/lat
    footprint   geometry(Polygon, 4326) NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    resolution  double precision[] NOT NULL, -- degrees per pixel, x and y
    produced_at timestamptz,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    valid_from  timestamptz NOT NULL DEFAULT now(),
    valid_to    timestamptz
);
CREATE UNIQUE INDEX scenes_current_idx ON onemap.scenes (layer_id, acquired_at, name)
    WHERE valid_to IS NULL;
CREATE INDEX scenes_footprint_idx ON onemap.scenes USING gist (footprint);

-- What a raster layer holds and how it draws by default: bands (name, type, nodata),
-- whether it is elevation, statistics, the default bands and rescale.
ALTER TABLE onemap.layers ADD COLUMN raster jsonb;
