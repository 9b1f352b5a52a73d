"""A Mapnik map from the layers' MapLibre style layers, read at one zoom.

The style layers are the ones the viewer draws (``styles.build.style_layers``, or a base
map's), in their order: consecutive style layers of one catalog layer share a Mapnik layer
(one read of its rows), each style layer one Mapnik style. A style layer's values are read
at the image's zoom (``mapimages.expr``); what depends on the feature becomes rules with
filters, so a category's colour, a class's width or a label's field draw as in the viewer.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapimages.expr import Unsupported, cases, condition, constant, evaluate, fold, rgba

log = logging.getLogger(__name__)

# Font sets: Noto Sans, then Noto Sans CJK SC for what it lacks (the glyphs' stacks too).
FONTSETS = {
    "regular": ("Noto Sans Regular", "Noto Sans CJK SC Regular"),
    "bold": ("Noto Sans Bold", "Noto Sans CJK SC Bold"),
}
FONT_DIRS = ("/usr/share/fonts/truetype/noto", "/usr/share/fonts/opentype/noto")
# MapLibre's defaults for what a style layer leaves out (the style specification's).
DEFAULTS: dict[str, Any] = {
    "fill-color": "#000000", "fill-opacity": 1, "line-color": "#000000", "line-width": 1,
    "line-opacity": 1, "circle-radius": 5, "circle-color": "#000000", "circle-opacity": 1,
    "circle-stroke-width": 0, "circle-stroke-color": "#000000", "text-size": 16,
    "text-color": "#000000", "text-halo-width": 0, "text-halo-color": "rgba(0,0,0,0)",
    "text-opacity": 1, "icon-size": 1, "icon-opacity": 1, "fill-extrusion-color": "#000000",
    "fill-extrusion-opacity": 1, "text-max-width": 10, "text-letter-spacing": 0,
    "symbol-spacing": 250, "text-padding": 2, "line-cap": "butt", "line-join": "miter",
    "text-offset": [0, 0], "text-anchor": "center", "symbol-placement": "point",
    "text-transform": "none", "line-gap-width": 0, "line-offset": 0,
}
MOST_RULES = 256  # rules one style layer may become
# A source's connection parameters, among its Mapnik datasource parameters.
DB_KEYS = ("host", "port", "dbname", "user", "password")


@dataclass
class Source:
    """A catalog layer's rows for this image: Mapnik datasource parameters (the SQL that
    reads them under the caller's limits is in ``table``)."""

    layer_id: str
    params: dict[str, str]
    columns: tuple[str, ...] = ()  # the fields its rows carry
    points: bool = False  # its rows are points (or several points)
    cell: float = 1.0  # pixels: its points read once per cell of this side (``marker_cell``)


@dataclass
class Drawn:
    """One Mapnik layer: a source and the style layers drawn from it, in order."""

    source: Source
    entries: list[dict[str, Any]] = field(default_factory=list)


def groups(entries: Iterable[dict[str, Any]], sources: dict[str, Source]) -> list[Drawn]:
    """Consecutive style layers of one source layer, in the style's order; a style layer
    of a layer without a source (not readable, not drawn at this zoom) is left out."""
    out: list[Drawn] = []
    for entry in entries:
        src = sources.get(entry.get("source-layer", ""))
        if src is None:
            continue
        if out and out[-1].source is src:
            out[-1].entries.append(entry)
        else:
            out.append(Drawn(src, [entry]))
    return out


def visible_at(entry: dict[str, Any], zoom: float) -> bool:
    if (entry.get("layout") or {}).get("visibility") == "none":
        return False
    return entry.get("minzoom", 0) <= zoom < entry.get("maxzoom", 24.01)


def marker_cell(entries: Iterable[dict[str, Any]], zoom: float) -> float:
    """The side, in pixels, of a cell whose points one marker may stand for: half the
    smallest radius when every style layer drawn is an opaque circle of a constant size,
    unfiltered (a marker kept covers the pixels of those left out, which drawn over
    each other show only the last); else 1, a pixel."""
    radii = []
    for e in entries:
        paint = e.get("paint") or {}
        if e.get("type") != "circle" or "filter" in e:
            return 1.0
        try:
            values = {p: fold(constant(paint.get(p, DEFAULTS.get(p, 1))), zoom) for p in (
                "circle-radius", "circle-opacity", "circle-stroke-opacity", "circle-color")}
        except (Unsupported, TypeError, ValueError, IndexError, KeyError):
            return 1.0
        if not isinstance(values["circle-radius"], (int, float)) \
                or _translucent(values["circle-color"]) or values["circle-opacity"] != 1 \
                or values["circle-stroke-opacity"] != 1:
            return 1.0
        radii.append(float(values["circle-radius"]))
    return max(1.0, min(radii) / 2) if radii else 1.0


def _translucent(value: Any) -> bool:
    """Whether a colour, or any colour a category or class may take, lets what is
    beneath show through."""
    if isinstance(value, list):
        return any(_translucent(v) for v in value)
    c = rgba(value) if isinstance(value, str) else None
    return c is not None and c[3] < 1


def map_xml(drawn: list[Drawn], srs: str, zoom: float, icons: Path | None,
            background: str | None = None, sprites: Path | None = None) -> str:
    """The Mapnik map of ``drawn``. With ``sprites`` (a folder), the circles of a source
    read once per cell of several pixels (``Source.cell``) are drawn from an image of
    each circle made there (``sprite``) instead of as a path per point: a city's markers
    are then copied, not rasterized one by one, each at its point's whole pixel, which
    the cell it stands for moves it by more than already."""
    root = ET.Element("Map", {"srs": srs, "background-color": background or "transparent"})
    for name, faces in FONTSETS.items():
        fs = ET.SubElement(root, "FontSet", {"name": name})
        for face in faces:
            ET.SubElement(fs, "Font", {"face-name": face})
    for n, group in enumerate(drawn):
        names = []
        for k, entry in enumerate(group.entries):
            if not visible_at(entry, zoom):
                continue
            try:
                rules = _rules(entry, zoom, icons, sprites if group.source.points
                               and group.source.cell > 1 else None)
            except (Unsupported, TypeError, ValueError, IndexError, KeyError) as exc:
                log.warning("style layer %r is not drawn in images: %s", entry.get("id"), exc)
                continue
            if not rules:
                continue
            name = f"s{n}_{k}"
            style = ET.SubElement(root, "Style", {"name": name, "filter-mode": "first"})
            style.extend(rules)
            names.append(name)
        if not names:
            continue
        # One read of the rows for all its styles (Mapnik reads once per style otherwise).
        layer = ET.SubElement(root, "Layer", {"name": f"l{n}", "srs": srs,
                                              "cache-features": "true"})
        for name in names:
            ET.SubElement(layer, "StyleName").text = name
        ds = ET.SubElement(layer, "Datasource")
        for key, value in group.source.params.items():
            ET.SubElement(ds, "Parameter", {"name": key}).text = value
    return ET.tostring(root, encoding="unicode")


def _rules(entry: dict[str, Any], zoom: float, icons: Path | None,
           sprites: Path | None = None) -> list[ET.Element]:
    """A style layer's Mapnik rules, one per combination of the cases of its values
    (``expr.cases``). The cases of a value are exclusive and cover every feature, and so
    are their combinations: the style stops at a feature's first matching rule
    (``filter-mode="first"``, set by ``map_xml``), and where every combination has its
    rule, the last, which a feature reaches only when no other matched, tests only the
    layer's filter. A categorized style's default class is then no test at all, where it
    was the negation of every other class, evaluated for each feature."""
    kind = entry.get("type")
    if kind not in _SYMBOLIZERS:
        return []
    base = condition(entry["filter"], zoom) if "filter" in entry else None
    if base == "false":
        return []
    props = {**(entry.get("layout") or {}), **(entry.get("paint") or {})}
    wanted, make = _SYMBOLIZERS[kind]
    if kind == "circle" and sprites is not None:
        make = functools.partial(_sprite, sprites)
    split = {p: cases(constant(props.get(p, DEFAULTS.get(p))), zoom) for p in wanted
             if p in props or p in DEFAULTS}
    names = list(split)
    out: list[tuple[ET.Element, list[str | None]]] = []
    every = True  # whether each combination draws something
    for made, combo in enumerate(itertools.product(*(split[p] for p in names)), 1):
        if made > MOST_RULES:
            raise Unsupported(f"more than {MOST_RULES} rules")
        values = {p: v for p, (_, v) in zip(names, combo, strict=True)}
        symbolizers = make(values, icons)
        if not symbolizers:  # Mapnik skips a rule without symbolizers: none is made
            every = False
            continue
        rule = ET.Element("Rule")
        rule.extend(symbolizers)
        out.append((rule, [base] + [c for c, _ in combo]))
    if out and every:
        # Reached only by the features that no other rule took: those of its own
        # combination, since every other one has its rule.
        out[-1] = (out[-1][0], [base])
    for rule, conds in out:
        test = " and ".join(f"({c})" for c in conds if c)
        if test:
            filt = ET.Element("Filter")
            filt.text = test
            rule.insert(0, filt)
    return [rule for rule, _ in out]


def mapnik_colour(v: Any) -> tuple[str, float]:
    """A MapLibre colour as Mapnik's colour and the opacity its alpha carries."""
    c = rgba(v)
    if c is None:
        return str(v), 1.0
    return f"rgb({c[0]:.0f},{c[1]:.0f},{c[2]:.0f})", float(c[3])


def _num(v: Any) -> float:
    return float(v)


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") or "0"


def _fill(v: dict[str, Any], icons: Path | None) -> list[ET.Element]:
    colour, alpha = mapnik_colour(v["fill-color"])
    out = [ET.Element("PolygonSymbolizer", {
        "fill": colour, "fill-opacity": _fmt(alpha * _num(v["fill-opacity"])),
        "gamma": "0.7"})]
    if v.get("fill-outline-color") is not None:
        oc, oa = mapnik_colour(v["fill-outline-color"])
        out.append(ET.Element("LineSymbolizer", {
            "stroke": oc, "stroke-width": "1",
            "stroke-opacity": _fmt(oa * _num(v["fill-opacity"]))}))
    return out


def _extrusion(v: dict[str, Any], icons: Path | None) -> list[ET.Element]:
    colour, alpha = mapnik_colour(v["fill-extrusion-color"])
    return [ET.Element("PolygonSymbolizer", {
        "fill": colour, "fill-opacity": _fmt(alpha * _num(v["fill-extrusion-opacity"]))})]


def _line(v: dict[str, Any], icons: Path | None) -> list[ET.Element]:
    width = _num(v["line-width"])
    if width <= 0:
        return []
    colour, alpha = mapnik_colour(v["line-color"])
    attrs = {"stroke": colour, "stroke-width": _fmt(width),
             "stroke-opacity": _fmt(alpha * _num(v["line-opacity"])),
             "stroke-linecap": str(v["line-cap"]), "stroke-linejoin": str(v["line-join"])}
    dash = v.get("line-dasharray")
    if isinstance(dash, list) and dash and all(isinstance(d, (int, float)) for d in dash):
        dashes = [max(d * width, 0.5) for d in dash]
        if len(dashes) % 2:
            dashes *= 2
        attrs["stroke-dasharray"] = ",".join(_fmt(d) for d in dashes)
    gap = _num(v.get("line-gap-width") or 0)
    offset = _num(v.get("line-offset") or 0)
    if gap > 0:  # a casing on both sides of a gap
        shift = gap / 2 + width / 2
        return [ET.Element("LineSymbolizer", {**attrs, "offset": _fmt(o)})
                for o in (offset + shift, offset - shift)]
    if offset:
        attrs["offset"] = _fmt(-offset)  # MapLibre's positive offset is to the right
    return [ET.Element("LineSymbolizer", attrs)]


def _circle(v: dict[str, Any], icons: Path | None) -> list[ET.Element]:
    r = _num(v["circle-radius"])
    colour, alpha = mapnik_colour(v["circle-color"])
    sw = _num(v["circle-stroke-width"])
    sc, sa = mapnik_colour(v["circle-stroke-color"])
    attrs = {"marker-type": "ellipse", "width": _fmt(2 * r), "height": _fmt(2 * r),
             "fill": colour, "fill-opacity": _fmt(alpha * _num(v["circle-opacity"])),
             "allow-overlap": "true", "ignore-placement": "true", "placement": "point"}
    if sw > 0:
        attrs |= {"stroke": sc, "stroke-width": _fmt(sw), "stroke-opacity": _fmt(sa)}
        attrs["width"] = attrs["height"] = _fmt(2 * r + sw)
    else:
        attrs["stroke-width"] = "0"
    return [ET.Element("MarkersSymbolizer", attrs)]


def text_parts(value: str) -> list[tuple[str, bool]]:
    """A constant text with ``{field}`` tokens as its pieces: (text, False) and
    (field name, True), in order."""
    out, rest = [], value
    while "{" in rest and "}" in rest[rest.index("{"):]:
        i = rest.index("{")
        j = rest.index("}", i)
        if i:
            out.append((rest[:i], False))
        out.append((rest[i + 1:j], True))
        rest = rest[j + 1:]
    if rest:
        out.append((rest, False))
    return out


def _text_expression(value: Any) -> str | None:
    """A label's text as a Mapnik expression: a field's value or a constant with
    ``{field}`` tokens."""
    if value is None or value == "":
        return None
    if isinstance(value, list) and value[:1] == ["get"]:
        return f"[{value[1]}]"
    if isinstance(value, list) and value[:1] == ["format"]:
        parts = [p for p in value[1:] if not isinstance(p, dict)]
        return _text_expression(parts[0]) if parts else None
    if isinstance(value, str):
        return " + ".join(f"[{piece}]" if field else "'" + piece.replace("'", "\\'") + "'"
                          for piece, field in text_parts(value))
    raise Unsupported(f"the text {value!r}")


_ANCHOR = {  # MapLibre's anchor: which side of the label touches the point
    "center": ("middle", "middle"), "top": ("middle", "bottom"), "bottom": ("middle", "top"),
    "left": ("right", "middle"), "right": ("left", "middle"), "top-left": ("right", "bottom"),
    "top-right": ("left", "bottom"), "bottom-left": ("right", "top"),
    "bottom-right": ("left", "top"),
}


def _sprite(folder: Path, v: dict[str, Any], icons: Path | None) -> list[ET.Element]:
    """A circle as a marker image (``sprite``) in ``folder``."""
    r, sw = _num(v["circle-radius"]), _num(v["circle-stroke-width"])
    fill = skia_paint(v["circle-color"], v["circle-opacity"]) if r > 0 else None
    stroke = skia_paint(v["circle-stroke-color"], v.get("circle-stroke-opacity", 1),
                        stroke=sw) if sw > 0 else None
    if fill is None and stroke is None:
        return []
    return [ET.Element("MarkersSymbolizer", {
        "file": str(sprite(folder, r, sw, fill, stroke)), "allow-overlap": "true",
        "ignore-placement": "true", "placement": "point"})]


def skia_paint(colour: Any, opacity: Any, stroke: float = 0.0, **kw: Any):
    """Skia's antialiased paint of a style's colour at ``opacity`` (a stroke of that width
    if ``stroke``), or None where it draws nothing."""
    import skia

    c = rgba(colour)
    a = 0.0 if c is None else c[3] * max(0.0, min(1.0, float(opacity)))
    if a <= 0:
        return None
    if stroke:
        kw |= {"Style": skia.Paint.kStroke_Style, "StrokeWidth": stroke}
    return skia.Paint(AntiAlias=True, Color=skia.Color(
        round(c[0]), round(c[1]), round(c[2]), round(255 * a)), **kw)


def sprite(folder: Path, r: float, sw: float, fill: Any, stroke: Any) -> Path:
    """The PNG of a circle of radius ``r`` with a stroke of ``sw`` px (paints by
    ``skia_paint``, None: not drawn), as MapLibre draws it (and ``marks`` does): the
    stroke outside the radius, the fill beneath it to its middle; made once in
    ``folder``, named by what it shows (Mapnik keeps a marker image by its name)."""
    import skia

    colours = tuple(None if p is None else p.getColor() for p in (fill, stroke))
    spec = repr((r, sw, colours))
    path = folder / f"circle-{hashlib.sha1(spec.encode()).hexdigest()[:16]}.png"
    if path.exists():
        return path
    side = 2 * math.ceil(r + sw) + 2
    surface = skia.Surface(side, side)
    canvas = surface.getCanvas()
    for paint in (fill, stroke):
        if paint is not None:
            canvas.drawCircle(side / 2, side / 2, r + sw / 2, paint)
    made = path.with_suffix(f".{os.getpid()}.tmp")
    made.write_bytes(bytes(surface.makeImageSnapshot().encodeToData()))  # straight alpha
    made.replace(path)  # whole, for a drawing process that reads it meanwhile
    return path


def _symbol(v: dict[str, Any], icons: Path | None) -> list[ET.Element]:
    out: list[ET.Element] = []
    placement = str(v["symbol-placement"])
    icon = v.get("icon-image")
    size = _num(v["text-size"])
    if isinstance(icon, str) and icon and icons is not None and placement == "point":
        path = icons / f"{icon}.svg"
        if path.is_file():
            scale = _num(v["icon-size"])
            out.append(ET.Element("MarkersSymbolizer", {
                "file": str(path), "transform": f"scale({_fmt(scale)})",
                "opacity": _fmt(_num(v["icon-opacity"])), "placement": "point",
                "allow-overlap": "false"}))
    text = _text_expression(v.get("text-field"))
    if text is None:
        return out
    colour, alpha = mapnik_colour(v["text-color"])
    halo, halo_alpha = mapnik_colour(v["text-halo-color"])
    fonts = v.get("text-font") or []
    bold = any("Bold" in str(f) for f in fonts) if isinstance(fonts, list) else False
    offset = v["text-offset"] if isinstance(v["text-offset"], list) else [0, 0]
    h, vert = _ANCHOR.get(str(v["text-anchor"]), ("middle", "middle"))
    attrs = {
        "fontset-name": "bold" if bold else "regular", "size": _fmt(size),
        "fill": colour, "opacity": _fmt(alpha * _num(v["text-opacity"])),
        "halo-fill": halo, "halo-radius": _fmt(_num(v["text-halo-width"]) * halo_alpha),
        # Halos drawn from the glyphs' bitmaps, not stroked outlines: a quarter of an
        # image's time, for the same look at map sizes.
        "halo-rasterizer": "fast",
        "wrap-width": _fmt(_num(v["text-max-width"]) * size),
        "character-spacing": _fmt(_num(v["text-letter-spacing"]) * size),
        "margin": _fmt(_num(v["text-padding"])),
        "dx": _fmt(_num(offset[0]) * size), "dy": _fmt(_num(offset[1]) * size),
        "horizontal-alignment": h, "vertical-alignment": vert,
        "placement": "line" if placement.startswith("line") else "point",
    }
    if placement.startswith("line"):
        attrs |= {"spacing": _fmt(_num(v["symbol-spacing"])), "max-char-angle-delta": "30",
                  "avoid-edges": "false"}
        del attrs["wrap-width"]
    if str(v["text-transform"]) in ("uppercase", "lowercase"):
        attrs["text-transform"] = str(v["text-transform"])
    if out:  # a label beside its icon: below it unless placed otherwise
        attrs["allow-overlap"] = "false"
    el = ET.Element("TextSymbolizer", attrs)
    el.text = text
    out.append(el)
    return out


_SYMBOLIZERS = {
    "fill": (("fill-color", "fill-opacity", "fill-outline-color"), _fill),
    "fill-extrusion": (("fill-extrusion-color", "fill-extrusion-opacity"), _extrusion),
    "line": (("line-color", "line-width", "line-opacity", "line-dasharray", "line-cap",
              "line-join", "line-gap-width", "line-offset"), _line),
    "circle": (("circle-radius", "circle-color", "circle-opacity", "circle-stroke-width",
                "circle-stroke-color"), _circle),
    "symbol": (("text-field", "text-size", "text-color", "text-halo-color",
                "text-halo-width", "text-opacity", "text-font", "text-offset", "text-anchor",
                "text-max-width", "text-letter-spacing", "text-padding", "symbol-placement",
                "symbol-spacing", "text-transform", "icon-image", "icon-size",
                "icon-opacity"), _symbol),
}


def background_of(entries: Iterable[dict[str, Any]], zoom: float) -> str | None:
    """The colour of a style's background layer at ``zoom``, if it has one."""
    for e in entries:
        if e.get("type") == "background" and visible_at(e, zoom):
            value = evaluate((e.get("paint") or {}).get("background-color", "#000000"), zoom)
            return str(fold(value, zoom))
    return None
