"""OGC 3D Tiles for the city's 3D models. Nothing is served from here yet."""
