"""A QGIS project over the benchmark's tables, styled as OneMap's and MapServer's, for QGIS
Server: run by the system's Python, where Debian's python3-qgis lives.

    python3 bench/qgis_project.py SPEC.json OUT.qgs

SPEC: ``{"db": {host, port, dbname, user}, "label_scale": n, "layers": {table: {kind,
field, classes, label}}}`` (``bench/map_images.py:LAYERS``). Each table is read in Web
Mercator (``_geom_3857``, its current rows), points as 7 px circles in their class's
colour with a white outline, polygons filled at 0.85 with an outline of their colour,
labels from the label field in Noto Sans 11 px with a 2 px white buffer, kept apart by
QGIS's own placement, from the scale denominator ``label_scale`` down (at the request's
DPI: the benchmark asks at 72, the DPI MapServer's scales are at).
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsDataSourceUri,
    QgsFillSymbol,
    QgsMarkerSymbol,
    QgsPalLayerSettings,
    QgsProject,
    QgsRectangle,
    QgsRendererCategory,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor, QFont  # noqa: E402


def _symbol(kind: str, colour: str):
    if kind == "POINT":
        s = QgsMarkerSymbol.createSimple({"name": "circle", "color": colour, "size": "7",
                                          "size_unit": "Pixel", "outline_color": "#ffffff",
                                          "outline_width": "1", "outline_width_unit": "Pixel"})
    else:
        s = QgsFillSymbol.createSimple({"color": colour, "outline_color": colour,
                                        "outline_width": "1", "outline_width_unit": "Pixel"})
        fill = QColor(colour)
        fill.setAlphaF(0.85)
        s.symbolLayer(0).setFillColor(fill)
    return s


def _labels(st: dict, scale: float) -> QgsVectorLayerSimpleLabeling:
    text = QgsTextFormat()
    text.setFont(QFont("Noto Sans"))
    text.setSize(11)
    text.setSizeUnit(QgsUnitTypes.RenderPixels)
    text.setColor(QColor("#333333"))
    halo = QgsTextBufferSettings()
    halo.setEnabled(True)
    halo.setSize(2)
    halo.setSizeUnit(QgsUnitTypes.RenderPixels)
    halo.setColor(QColor("#ffffff"))
    text.setBuffer(halo)
    pal = QgsPalLayerSettings()
    pal.fieldName = st["label"]
    pal.setFormat(text)
    pal.placement = QgsPalLayerSettings.OverPoint
    if st["kind"] == "POINT":  # below the point, as the others place it
        pal.quadOffset = QgsPalLayerSettings.QuadrantBelow
        pal.yOffset = 5
        pal.offsetUnits = QgsUnitTypes.RenderPixels
    pal.scaleVisibility = True
    pal.minimumScale = scale  # shown when zoomed in past this denominator
    pal.maximumScale = 0
    return QgsVectorLayerSimpleLabeling(pal)


def main() -> None:
    spec_path, out = sys.argv[1:3]
    with open(spec_path) as fh:
        spec = json.load(fh)
    app = QgsApplication([], False)
    app.initQgis()
    said: list[str] = []  # what QGIS logs (why a layer failed to open)
    QgsApplication.messageLog().messageReceived.connect(lambda m, tag, level: said.append(m))
    project = QgsProject.instance()
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    project.setCrs(mercator)
    db = spec["db"]
    for table, st in spec["layers"].items():
        uri = QgsDataSourceUri()
        uri.setConnection(db["host"], str(db["port"]), db["dbname"], db["user"], "")
        uri.setDataSource("onemap_data", table, "_geom_3857", "_valid_to IS NULL", "_rid")
        uri.setSrid("3857")
        uri.setWkbType(QgsWkbTypes.Point if st["kind"] == "POINT" else QgsWkbTypes.Polygon)
        uri.setUseEstimatedMetadata(True)
        layer = QgsVectorLayer(uri.uri(False), table, "postgres")
        if not layer.isValid():
            print(f"QGIS could not open {table}: {' '.join(said)}", file=sys.stderr)
            os._exit(2)  # QGIS's teardown after a failed layer may crash: say why first
        layer.setCrs(mercator)
        # Each object kept in a name until QGIS holds it (its Python wrapper owns it
        # until then).
        symbols = [_symbol(st["kind"], colour) for colour in st["classes"].values()]
        categories = [QgsRendererCategory(value, symbol, value)
                      for value, symbol in zip(st["classes"], symbols, strict=True)]
        renderer = QgsCategorizedSymbolRenderer(st["field"], categories)
        layer.setRenderer(renderer)
        layer.setLabeling(_labels(st, spec["label_scale"]))
        layer.setLabelsEnabled(True)
        project.addMapLayer(layer)
    project.writeEntry("WMSServiceCapabilities", "/", True)
    project.writeEntry("WMSCrsList", "/", ["EPSG:3857", "EPSG:4326"])
    world = QgsRectangle(-20037508, -20037508, 20037508, 20037508)
    project.writeEntry("WMSExtent", "/", [str(v) for v in (
        world.xMinimum(), world.yMinimum(), world.xMaximum(), world.yMaximum())])
    if not project.write(out):
        raise SystemExit(f"QGIS could not write {out}")
    app.exitQgis()


if __name__ == "__main__":
    main()
