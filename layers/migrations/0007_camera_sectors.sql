-- A camera's field of view as a shape: the sector of `range_m` metres around `direction`
-- (degrees from north) opening `fov` degrees, its arc made of geodesic points (ST_Project
-- on the ellipsoid); a full circle for fov 360. NULL when the camera's view is not known.
-- Used to measure how much of a road layer cameras reach and how much of a proposed
-- camera's view is already watched.
CREATE FUNCTION registry.sector(p geometry, direction real, fov real, range_m real,
                                segments integer DEFAULT 24)
RETURNS geometry LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN range_m IS NULL OR fov IS NULL OR (fov < 360 AND direction IS NULL) THEN NULL
        WHEN fov >= 360 THEN ST_SetSRID(ST_Buffer(p::geography, range_m, 8)::geometry, 4326)
        ELSE ST_SetSRID(ST_MakePolygon(ST_MakeLine(
            ARRAY[ST_Force2D(p)]
            || ARRAY(SELECT ST_Project(p::geography, range_m,
                                       radians(direction - fov / 2 + fov * i / segments))::geometry
                     FROM generate_series(0, segments) i)
            || ARRAY[ST_Force2D(p)])), 4326)
    END
$$;

-- Proposed-camera checks look for cameras whose view may reach a site within the largest
-- range of any camera, so the index on position stays usable; this index finds that range
-- without reading every camera.
CREATE INDEX fronts_camera_range ON registry.fronts (range_m) WHERE kind = 'camera';

-- Whether a registry position lies in a caller's area (NULL: no area limit). Every
-- registry lookup limits rows through this one test.
CREATE FUNCTION registry.in_area(g geometry, area bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT area IS NULL OR ST_Intersects(ST_SetSRID(g, 4326),
                                         (SELECT a.geom FROM onemap.areas a WHERE a.id = area))
$$;
