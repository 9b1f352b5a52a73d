"""Builds the map assets OneMap serves itself (``make setup``), so no map needs a CDN:

- ``fonts/{stack}/{start}-{end}.pbf``: SDF glyph ranges for the stacks the styles name,
  from fonts of the system's packages (fonts-noto-core, fonts-noto-cjk): Noto Sans with
  Noto Sans CJK SC for every code point it lacks, so Finnish street names and Chinese
  district names render from one stack. Made by ``scripts/glyphs.js`` (fontnik and
  glyph-pbf-composite, the tools MapLibre's glyph format comes from).
- ``sprites/onemap.{json,png}`` and ``@2x``: POI icons (Maki, CC0, from npm) and OneMap's
  device icons (``styles/icons/``) on coloured discs, rasterized by librsvg; and
  ``icons/{name}.svg``, each disc on its own, which server-side maps draw.

Usage: python scripts/map_assets.py OUT_DIR NODE_MODULES
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import imagecodecs
import numpy as np
from fontTools.ttLib import TTCollection

ROOT = Path(__file__).resolve().parents[1]
NOTO = Path("/usr/share/fonts/truetype/noto")
CJK = Path("/usr/share/fonts/opentype/noto")
# The stacks the styles name (styles/build.py: FONT, FONT_BOLD), each a list of fonts: the
# first that has a code point gives its glyph. Face 2 of the CJK collections is SC.
STACKS = {
    "Noto Sans Regular": [NOTO / "NotoSans-Regular.ttf", (CJK / "NotoSansCJK-Regular.ttc", 2)],
    "Noto Sans Bold": [NOTO / "NotoSans-Bold.ttf", (CJK / "NotoSansCJK-Bold.ttc", 2)],
}

# Icon name -> (source SVG, disc colour). Maki's names where Maki has the icon.
FOOD, SHOP, STAY, CULTURE, TRANSIT, SERVICE, HEALTH, DEVICE = (
    "#d9822b", "#a24fa8", "#2b7fc4", "#8a5a2b", "#2f6db5", "#6b7280", "#1f9e5a", "#37474f")
ICONS = {
    "restaurant": ("maki:restaurant", FOOD), "cafe": ("maki:cafe", FOOD),
    "fast-food": ("maki:fast-food", FOOD), "bar": ("maki:bar", FOOD),
    "shop": ("maki:shop", SHOP), "clothing-store": ("maki:clothing-store", SHOP),
    "lodging": ("maki:lodging", STAY), "museum": ("maki:museum", CULTURE),
    "art-gallery": ("maki:art-gallery", CULTURE), "information": ("maki:information", CULTURE),
    "theatre": ("maki:theatre", CULTURE), "bus": ("maki:bus", TRANSIT),
    "rail-metro": ("maki:rail-metro", TRANSIT), "rail-light": ("maki:rail-light", TRANSIT),
    "rail": ("maki:rail", TRANSIT), "bank": ("maki:bank", SERVICE),
    "post": ("maki:post", SERVICE), "parking": ("maki:parking", SERVICE),
    "toilet": ("maki:toilet", SERVICE), "place-of-worship": ("maki:place-of-worship", SERVICE),
    "pharmacy": ("maki:pharmacy", HEALTH), "hospital": ("maki:hospital", HEALTH),
    "marker": ("maki:marker", SERVICE),
    "pole": ("own:pole", DEVICE), "camera": ("own:camera", DEVICE),
    "lamp": ("own:lamp", DEVICE),
}
SIZE = 19  # an icon's disc at 1x, in pixels
SVG = "http://www.w3.org/2000/svg"


def build_fonts(out: Path, node_modules: Path) -> None:
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    with tempfile.TemporaryDirectory() as tmp:
        for stack, fonts in STACKS.items():
            files = []
            for font in fonts:
                if isinstance(font, tuple):  # one face of a collection, as its own file
                    path, index = font
                    face = Path(tmp) / f"{path.stem}-{index}.otf"
                    TTCollection(str(path)).fonts[index].save(str(face))
                    files.append(str(face))
                else:
                    files.append(str(font))
            shutil.rmtree(out / "fonts" / stack, ignore_errors=True)
            subprocess.run(["node", str(ROOT / "scripts" / "glyphs.js"), str(out / "fonts"),
                            stack, *files], check=True, env=env)


def _glyph(source: str, node_modules: Path) -> str:
    """The drawing elements of an icon's SVG, without its root."""
    kind, name = source.split(":")
    path = (node_modules / "@mapbox" / "maki" / "icons" / f"{name}.svg" if kind == "maki"
            else ROOT / "styles" / "icons" / f"{name}.svg")
    root = ET.parse(path).getroot()
    ET.register_namespace("", SVG)
    return "".join(ET.tostring(child, encoding="unicode") for child in root)


def _render(svg: str, pixels: int, tmp: Path) -> np.ndarray:
    src, dst = tmp / "icon.svg", tmp / "icon.png"
    src.write_text(svg)
    subprocess.run(["rsvg-convert", "-w", str(pixels), "-h", str(pixels), "-o", str(dst),
                    str(src)], check=True)
    rgba = imagecodecs.png_decode(dst.read_bytes())
    if rgba.shape[2] == 3:
        rgba = np.dstack([rgba, np.full(rgba.shape[:2], 255, np.uint8)])
    return rgba


def build_sprite(out: Path, node_modules: Path) -> None:
    (out / "sprites").mkdir(parents=True, exist_ok=True)
    per_row = 8
    with tempfile.TemporaryDirectory() as tmp:
        for ratio, suffix in ((1, ""), (2, "@2x")):
            px = SIZE * ratio
            rows = (len(ICONS) + per_row - 1) // per_row
            sheet = np.zeros((rows * px, per_row * px, 4), np.uint8)
            index = {}
            for i, (name, (source, colour)) in enumerate(ICONS.items()):
                svg = (f'<svg xmlns="{SVG}" width="{SIZE}" height="{SIZE}" '
                       f'viewBox="0 0 {SIZE} {SIZE}"><circle cx="9.5" cy="9.5" r="8.6" '
                       f'fill="{colour}" stroke="#ffffff" stroke-width="1.2"/>'
                       f'<g transform="translate(3.8 3.8) scale(0.76)" fill="#ffffff">'
                       f'{_glyph(source, node_modules)}</g></svg>')
                if ratio == 1:  # each icon on its own too, for server-side maps
                    (out / "icons").mkdir(parents=True, exist_ok=True)
                    (out / "icons" / f"{name}.svg").write_text(svg)
                x, y = (i % per_row) * px, (i // per_row) * px
                sheet[y:y + px, x:x + px] = _render(svg, px, Path(tmp))
                index[name] = {"x": x, "y": y, "width": px, "height": px,
                               "pixelRatio": ratio}
            (out / "sprites" / f"onemap{suffix}.png").write_bytes(
                imagecodecs.png_encode(sheet))
            (out / "sprites" / f"onemap{suffix}.json").write_text(
                json.dumps(index, indent=1, sort_keys=True))


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, node_modules = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
    build_sprite(out, node_modules)
    build_fonts(out, node_modules)
    (out / "fonts" / "stacks.json").write_text(json.dumps(sorted(STACKS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
