#!/usr/bin/env bash
# Installs what OneMap needs from the system's packages (Debian/Ubuntu): PostgreSQL 15+ with
# PostGIS 3 and pgRouting (routes and service areas), Python's venv, GDAL's command-line tools (the tests drive ogr2ogr against
# OneMap); and any extra commands or packages named as arguments (the benchmarks' wrk,
# MapServer, QGIS Server and lighttpd; the tests' Chromium and QGIS).
# Does nothing when all of it is there already.
set -euo pipefail
extra=()
for cmd in "$@"; do
  case "$cmd" in
    # QGIS's Python bindings, for the tests that drive QGIS: a module, not a command.
    python3-qgis) /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 || extra+=("$cmd") ;;
    # UMN MapServer's FastCGI program, a peer of the benchmarks: not on the PATH.
    cgi-mapserver) [ -x /usr/lib/cgi-bin/mapserv ] || extra+=("$cmd") ;;
    # QGIS Server's FastCGI program, the map images' other peer.
    qgis-server) [ -x /usr/lib/cgi-bin/qgis_mapserv.fcgi ] || extra+=("$cmd") ;;
    # Fonts for the map's glyphs, and librsvg for its icons.
    fonts-noto-core) [ -f /usr/share/fonts/truetype/noto/NotoSans-Regular.ttf ] || extra+=("$cmd") ;;
    fonts-noto-cjk) [ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || extra+=("$cmd") ;;
    librsvg2-bin) command -v rsvg-convert >/dev/null || extra+=("$cmd") ;;
    *) command -v "$cmd" >/dev/null || extra+=("$cmd") ;;
  esac
done

have_postgis() { ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; }
have_pgrouting() { ls /usr/share/postgresql/*/extension/pgrouting.control >/dev/null 2>&1; }
have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_venv() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }
have_gdal() { command -v ogr2ogr >/dev/null; }

if have_postgis && have_pgrouting && have_server && have_venv && have_gdal && [ ${#extra[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: install PostgreSQL 15+ with PostGIS 3 and python3-venv, then run make again" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The distribution's default PostgreSQL major version, for the matching PostGIS package.
pgv=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/.*Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n1)
if [ -z "$pgv" ] || [ "$pgv" -lt 15 ]; then
  echo "error: this system's PostgreSQL (${pgv:-none}) is older than 15; add the PGDG apt" \
       "repository or set ONEMAP_DATABASE_URL to a PostgreSQL 15+ server with PostGIS 3" >&2
  exit 1
fi
$SUDO apt-get install -y -qq --no-install-recommends \
  "postgresql-$pgv" "postgresql-$pgv-postgis-3" "postgresql-$pgv-pgrouting" postgresql-client python3-venv python3-dev gdal-bin \
  ${extra[@]+"${extra[@]}"}
