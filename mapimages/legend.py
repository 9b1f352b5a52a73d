"""Legend graphics and messages, drawn by Mapnik like maps: in a plane of pixels.

A legend is read from the layer's style (``styles.legend``: an entry per style layer, an
item per category or class); each item is a row, its swatch drawn as the map draws it (a
filled box, a line, a circle) beside its label, in the map's fonts.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from mapimages.compose import FONTSETS, mapnik_colour

ROW = 20
PAD = 6
PLANE = "epsg:3857"  # any plane CRS: its units are the image's pixels here


def _map(width: int, height: int) -> ET.Element:
    root = ET.Element("Map", {"srs": PLANE, "background-color": "transparent"})
    for name, faces in FONTSETS.items():
        fs = ET.SubElement(root, "FontSet", {"name": name})
        for face in faces:
            ET.SubElement(fs, "Font", {"face-name": face})
    return root


def _layer(root: ET.Element, name: str, styles: list[str], feats: list[dict]) -> None:
    layer = ET.SubElement(root, "Layer", {"name": name, "srs": PLANE})
    for s in styles:
        ET.SubElement(layer, "StyleName").text = s
    ds = ET.SubElement(layer, "Datasource")
    ET.SubElement(ds, "Parameter", {"name": "type"}).text = "geojson"
    ET.SubElement(ds, "Parameter", {"name": "inline"}).text = json.dumps(
        {"type": "FeatureCollection", "features": feats}, ensure_ascii=False)


def _feature(n: int, geometry: dict, **props: Any) -> dict:
    return {"type": "Feature", "properties": {"k": n, **props}, "geometry": geometry}


def _rows(title: str, entries: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    """(symbol, colour, label) per row, the legend's order."""
    rows = []
    for e in entries:
        for item in e.get("items") or []:
            label = item.get("label")
            if label is None:
                label = title if len(entries) == 1 else e["id"].replace("-", " ")
            elif e.get("field"):
                label = f"{e['field']}: {label}" if len(e["items"]) <= 1 else label
            rows.append((e.get("symbol", "polygon"), item.get("colour"), str(label)))
    return rows


def legend_xml(title: str, entries: list[dict[str, Any]]) -> tuple[str, int, int]:
    """A legend's Mapnik map, its width and height."""
    rows = _rows(title, entries)
    longest = max([len(title)] + [len(r[2]) for r in rows])
    width = max(120, min(420, 34 + 7 * longest))
    height = PAD * 2 + ROW * (1 + len(rows))
    root = _map(width, height)
    text = ET.SubElement(root, "Style", {"name": "text"})
    rule = ET.SubElement(text, "Rule")
    t = ET.SubElement(rule, "TextSymbolizer", {
        "fontset-name": "regular", "size": "12", "fill": "#222222",
        "horizontal-alignment": "right", "vertical-alignment": "middle",
        "allow-overlap": "true", "placement": "point"})
    t.text = "[label]"
    head = ET.SubElement(root, "Style", {"name": "title"})
    h = ET.SubElement(ET.SubElement(head, "Rule"), "TextSymbolizer", {
        "fontset-name": "bold", "size": "13", "fill": "#111111",
        "horizontal-alignment": "right", "vertical-alignment": "middle",
        "allow-overlap": "true", "placement": "point"})
    h.text = "[label]"
    swatch = ET.SubElement(root, "Style", {"name": "swatch"})
    feats, labels = [], []
    top = height - PAD - ROW / 2
    for n, (symbol, colour, label) in enumerate(rows):
        y = top - ROW * (n + 1)
        c, alpha = mapnik_colour(colour or "#888888")
        r = ET.SubElement(swatch, "Rule")
        ET.SubElement(r, "Filter").text = f"[k] = {n}"
        if symbol == "line":
            feats.append(_feature(n, {"type": "LineString",
                                      "coordinates": [[PAD, y], [PAD + 18, y]]}))
            ET.SubElement(r, "LineSymbolizer", {"stroke": c, "stroke-width": "3",
                                                "stroke-opacity": f"{alpha:.3f}"})
        elif symbol in ("point", "label"):
            feats.append(_feature(n, {"type": "Point", "coordinates": [PAD + 9, y]}))
            ET.SubElement(r, "MarkersSymbolizer", {
                "marker-type": "ellipse", "width": "11", "height": "11", "fill": c,
                "fill-opacity": f"{alpha:.3f}", "stroke": "#ffffff", "stroke-width": "1",
                "allow-overlap": "true", "ignore-placement": "true"})
        else:
            box = [[PAD, y - 6], [PAD + 18, y - 6], [PAD + 18, y + 6], [PAD, y + 6],
                   [PAD, y - 6]]
            feats.append(_feature(n, {"type": "Polygon", "coordinates": [box]}))
            ET.SubElement(r, "PolygonSymbolizer", {"fill": c,
                                                   "fill-opacity": f"{max(alpha, .35):.3f}"})
            ET.SubElement(r, "LineSymbolizer", {"stroke": c, "stroke-width": "1"})
        labels.append(_feature(n, {"type": "Point", "coordinates": [PAD + 26, y]},
                               label=label))
    _layer(root, "title", ["title"], [_feature(-1, {"type": "Point",
                                                    "coordinates": [PAD, top]}, label=title)])
    if feats:
        _layer(root, "swatches", ["swatch"], feats)
        _layer(root, "labels", ["text"], labels)
    return ET.tostring(root, encoding="unicode"), width, height


def message_xml(text: str, width: int, height: int) -> str:
    """An error's text, wrapped in the middle of an image (WMS ``EXCEPTIONS=INIMAGE``)."""
    root = _map(width, height)
    style = ET.SubElement(root, "Style", {"name": "message"})
    t = ET.SubElement(ET.SubElement(style, "Rule"), "TextSymbolizer", {
        "fontset-name": "regular", "size": "12", "fill": "#9b1c1c", "halo-fill": "#ffffff",
        "halo-radius": "1.5", "wrap-width": str(max(40, width - 20)), "allow-overlap": "true",
        "placement": "point"})
    t.text = "[label]"
    _layer(root, "message", ["message"], [_feature(0, {"type": "Point", "coordinates": [
        width / 2, height / 2]}, label=text[:500])])
    return ET.tostring(root, encoding="unicode")
