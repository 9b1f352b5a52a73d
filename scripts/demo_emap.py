"""The demo's city base maps, from the Helsinki OSM extract: the e-map's own layers (rail,
land cover and water, places, points of interest) beside the roads and buildings the demo
loads already, then the base maps ``emap`` (styles/emap.json), ``annotation`` (its labels)
and, when an imagery layer is given, ``imagery``.

Usage: python scripts/demo_emap.py PBF [--department NAME] [--imagery LAYER]
Settings come from ONEMAP_* as for every ``onemap`` command; a layer already loaded is
merged again (an unchanged extract changes nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The e-map's layers that the demo does not load otherwise: (layer, OSM layer, filter, key,
# title).
LAYERS = [
    ("railways", "lines", "railway IN ('rail', 'tram', 'subway', 'light_rail')", "osm_id",
     "Railways and tramways"),
    ("landcover", "multipolygons",
     "landuse IS NOT NULL OR leisure IS NOT NULL OR \"natural\" IS NOT NULL",
     "osm_id,osm_way_id", "Land use, parks and water"),
    ("places", "points", "place IS NOT NULL AND name IS NOT NULL", "osm_id", "Place names"),
    ("pois", "points",
     "name IS NOT NULL AND (amenity IS NOT NULL OR shop IS NOT NULL OR tourism IS NOT NULL)",
     "osm_id", "Points of interest"),
]
ATTRIBUTION = "© OpenStreetMap contributors, ODbL"
TITLES = {"name": "Name", "railway": "Railway", "landuse": "Land use", "leisure": "Leisure",
          "natural": "Natural feature", "place": "Place", "amenity": "Amenity", "shop": "Shop",
          "tourism": "Tourism", "osm_id": "OSM id"}


def titles(source: str) -> list[str]:
    """The dictionary's titles of the columns this OSM layer has (osmconf-emap.ini)."""
    import configparser

    conf = configparser.ConfigParser(interpolation=None)
    conf.read(ROOT / "data" / "samples" / "osmconf-emap.ini")
    columns = {"osm_id", *conf[source]["attributes"].split(",")}
    return [f"--field-title={k}={v}" for k, v in TITLES.items() if k in columns]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pbf")
    p.add_argument("--department")
    p.add_argument("--imagery")
    args = p.parse_args(argv)
    # The OSM driver reads its tag-to-column mapping from here (GDAL's config option).
    os.environ["OSM_CONFIG_FILE"] = str(ROOT / "data" / "samples" / "osmconf-emap.ini")
    from onemap.cli import main as onemap

    owner = ["--department", args.department] if args.department else []
    for layer, source, where, key, title in LAYERS:
        code = onemap(["ingest", "vector", args.pbf, "--layer", layer, "--source-layer", source,
                       "--where", where, "--key", key, "--title", title, "--role", "base",
                       "--attribution", ATTRIBUTION, *owner, *titles(source)])
        if code:
            return code
    steps = [["basemap", "emap", "--style", str(ROOT / "styles" / "emap.json"),
              "--title", "City e-map"],
             ["basemap", "annotation", "--labels-of", "emap", "--title", "Annotation"]]
    if args.imagery:
        steps.append(["basemap", "imagery", "--imagery", args.imagery, "--title", "Imagery"])
    for step in steps:
        if code := onemap(step):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
