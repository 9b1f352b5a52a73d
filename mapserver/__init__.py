"""The ASGI web app: tiles, TileJSON, styles, the catalog and the viewer."""
