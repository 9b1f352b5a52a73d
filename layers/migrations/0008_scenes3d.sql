-- 3D scenes: a polygon layer published as OGC 3D Tiles of its footprints extruded to their
-- heights (the city's white model). The heights come from the layer's own fields, read by
-- onemap.tag_number; nothing is copied, so the scene follows every edit and ingest.
CREATE TABLE onemap.scenes3d (
    layer_id     text PRIMARY KEY REFERENCES onemap.layers (id) ON DELETE CASCADE,
    height_field text,              -- metres: a field, or field:tag for OSM-style tags
    levels_field text,              -- storeys, the same way; times storey_m
    storey_m     double precision NOT NULL DEFAULT 3.0 CHECK (storey_m > 0 AND storey_m < 20),
    default_m    double precision NOT NULL DEFAULT 6.0 CHECK (default_m > 0 AND default_m < 1000),
    tile_zoom    integer NOT NULL DEFAULT 16 CHECK (tile_zoom BETWEEN 12 AND 19),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The leading number of a value ("20", "20.5 m"), or of one tag of an OSM tag set as GDAL
-- writes them ('"height"=>"20","building:levels"=>"6"'); NULL when there is none.
CREATE FUNCTION onemap.tag_number(value text, tag text)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT substring(
        CASE WHEN tag IS NULL THEN value
             WHEN strpos(value, '"' || tag || '"=>"') = 0 THEN NULL
             ELSE split_part(substr(value, strpos(value, '"' || tag || '"=>"')
                                           + length(tag) + 5), '"', 1)
        END
        FROM '^\s*([0-9]{1,5}(\.[0-9]+)?)')::double precision
$$;
