"""QGIS (PyQGIS, headless) as a client of a running OneMap: run by the system's Python,
where Debian's python3-qgis lives. Prints what QGIS made of the service as JSON, and draws
the WMTS layer into a PNG.

    python3 tests/qgis_client.py URL VECTOR_LAYER RASTER_LAYER OUT.png
    python3 tests/qgis_client.py --wms URL LAYER OUT.png   (the layer from WMS 1.3.0)
"""

import faulthandler
import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def draw(layer, png: str, crs: str = "EPSG:3857") -> None:
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(QgsCoordinateReferenceSystem(crs))
    settings.setExtent(QgsRectangle(layer.extent()))
    settings.setOutputSize(QSize(512, 512))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(png, "PNG")


def wms(url: str, name: str, png: str) -> dict:
    layer = QgsRasterLayer(f"crs=EPSG:3857&dpiMode=7&format=image/png&layers={name}"
                           f"&styles=&url={url}/wms", name, "wms")
    out = {"valid": layer.isValid()}
    if layer.isValid():
        draw(layer, png)
        e = layer.extent()
        out["extent"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
    return out


def main() -> None:
    faulthandler.enable()
    app = QgsApplication([], False)
    app.initQgis()
    if sys.argv[1] == "--wms":
        print(json.dumps({"wms": wms(*sys.argv[2:5])}))
        app.exitQgis()
        return
    url, vector, raster, png = sys.argv[1:5]
    out = {}
    for name in (vector, raster):
        layer = QgsVectorLayer(f"url='{url}' typename='{name}'", name, "OAPIF")
        out[f"oapif:{name}"] = {"valid": layer.isValid(), "count": layer.featureCount(),
                                "geometry": layer.geometryType()}
    caps = f"{url}/wmts?SERVICE%3DWMTS%26REQUEST%3DGetCapabilities"
    wmts = QgsRasterLayer(f"contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&format=image/png"
                          f"&layers={raster}&styles=default&tileMatrixSet=WebMercatorQuad"
                          f"&url={caps}", raster, "wms")
    out["wmts"] = {"valid": wmts.isValid()}
    if not wmts.isValid():  # what QGIS made of it, for the test's message
        out["wmts"]["error"] = wmts.error().summary()[:2000]
    if wmts.isValid():
        draw(wmts, png)
        extent = wmts.extent()
        out["wmts"]["extent"] = [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                 extent.yMaximum()]
    print(json.dumps(out))
    app.exitQgis()


if __name__ == "__main__":
    main()
