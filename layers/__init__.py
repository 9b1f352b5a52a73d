"""The layer catalog and its storage: PostGIS tables with full history, and the tile sources."""
