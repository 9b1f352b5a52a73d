"""MapLibre styles: a default look per geometry type, overridable per layer by a JSON file here."""
