"""The one settings object. Every value comes from an ``ONEMAP_*`` environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"ONEMAP_{name}", default)


@dataclass(frozen=True)
class Settings:
    # With no database_url, OneMap runs its own PostgreSQL cluster under data_dir.
    database_url: str | None = None
    data_dir: Path = Path("var")
    db_port: int = 54329
    # Server.
    host: str = "127.0.0.1"
    port: int = 8080
    cors_origins: tuple[str, ...] = ("*",)
    # Streaming replicas that tiles and feature pages are read from (comma-separated URLs);
    # an answer a replica makes for an older version of a layer is made again on the
    # primary (mapserver/replicas.py).
    database_replica_urls: tuple[str, ...] = ()
    # Behind pgbouncer in transaction pooling ('transaction'; default 'session', which is
    # also a direct connection): no prepared statements, each request's budget set in its
    # own transaction, and the listeners and migrations on ONEMAP_DATABASE_DIRECT_URL.
    database_pooling: str = "session"
    database_direct_url: str | None = None
    pool_min: int = 2
    pool_max: int = 10
    # Versioned tile URLs (``?v=N`` matching the layer version) may be cached this long.
    tile_max_age: int = 86400
    # Ingest.
    ingest_batch_size: int = 50_000
    # Tiles below this zoom are generalized unless a layer says otherwise.
    detail_zoom: int = 14
    # ... or higher, for a layer so dense that a tile at that zoom would hold more features
    # than this: the detail zoom is chosen at each ingest, so full-detail tiles stay bounded.
    max_detail_features: int = 10_000
    # Memory for generalized (below detail zoom) tiles; 0 turns the cache off.
    tile_cache_mb: int = 256
    # Base layers are served, not copied: at most this many features per request, and
    # paging no deeper than this many features into one query.
    base_max_items: int = 1000
    base_max_offset: int = 10_000
    # ... and at most this many base-layer features per caller per day.
    base_daily_items: int = 100_000
    # Tests turn this off to run the embedded cluster without fsync.
    db_durable: bool = True
    # Classification levels, lowest first; the lowest is what anonymous callers may see.
    levels: tuple[str, ...] = ("public", "internal", "sensitive", "secret")
    # The level of a new layer that states none: shared inside government, not public.
    default_level: str = "internal"
    # OpenID Connect: Bearer JWTs are accepted when an issuer is set. Keys come from
    # jwks_url, or from the issuer's discovery document when it is unset.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    # Browser sign-in with the same issuer (authorization code with PKCE): OneMap's client
    # id there (default: the audience), its secret if the issuer wants one, and how long a
    # session lasts.
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    session_hours: float = 8.0
    # Access changes reach each server as the database's notices (LISTEN/NOTIFY), so no
    # request reads the access version; off, every request reads it (a pooler in
    # transaction mode cannot LISTEN).
    access_notices: bool = True
    # Requests per minute a key may make (a key can set its own); 0 means no limit.
    key_rate_limit: int = 6000
    # Where raster layers' COGs live: a folder, or an object store as GDAL names it
    # (``/vsis3/bucket/prefix``, credentials from GDAL's AWS_* settings). Unset: data_dir/rasters.
    raster_store: str | None = None
    # Time budgets of one statement, in milliseconds, by kind of request: past it the
    # statement is cancelled and the client gets 503 with Retry-After.
    budget_tiles_ms: int = 10_000  # tiles (vector, raster, 3D), styles, metadata
    budget_items_ms: int = 15_000  # feature and catalog pages
    budget_filters_ms: int = 10_000  # feature pages with a CQL2 filter
    budget_registry_ms: int = 10_000  # code resolution, reuse, coverage, reservations
    budget_admin_ms: int = 30_000  # the admin API
    budget_writes_ms: int = 60_000  # one feature edit or registry change
    budget_images_ms: int = 10_000  # the rows of one layer of a map image
    budget_jobs_ms: int = 600_000  # one statement of an analysis run as a job
    # How long a write waits for a layer another change is writing; then 503.
    lock_timeout_ms: int = 5_000
    # Bounds checked before a tile is made: layers in one tile, and the low zoom below
    # which an as-of tile (made from every row alive then) takes only a few layers.
    max_tile_layers: int = 16
    as_of_low_zoom: int = 10
    as_of_low_zoom_layers: int = 4
    # Registry claims: a department holds at most this many awaiting a decision, and a claim
    # not approved within this many hours lapses.
    max_claims: int = 20
    claim_hours: int = 72
    # Server processes; raster tiles are CPU work, so one per core pays.
    workers: int = 1
    # CesiumJS's built folder (Build/Cesium), served at /vendor/cesium/ for the 3D page;
    # make demo installs it. Unset: the page says so, and /3dtiles serves any viewer.
    cesium_dir: Path | None = None
    # Map images (WMS GetMap, image tiles): the largest image, and the processes per
    # server process that draw them (Mapnik holds the interpreter while it draws).
    wms_max_width: int = 4096
    wms_max_height: int = 4096
    image_workers: int = 2
    # Publishing over HTTP: the largest upload (refused by its Content-Length before it is
    # read), the job workers `onemap serve` starts beside itself (0: run `onemap worker`
    # elsewhere), and how long a running job may go without a sign of life from its worker
    # before another worker takes it over. Uploads wait in data_dir/uploads, which the
    # servers and workers share.
    upload_max_mb: int = 1024
    job_workers: int = 1
    job_stale_seconds: int = 60
    # How long a process's result kept as a layer (outputs by reference) is served.
    result_hours: float = 24.0
    # Federation (docs/federation.md): this node's name and role ('city' or 'district'),
    # the URL others reach it at (default: http://host:port), how long a cascaded request
    # may wait for the other node, how long what a node said about a caller's rights is
    # trusted before it is asked again (a notice from the node ends it sooner), and how
    # often a city harvests its districts' catalogs. The node's signing key is
    # data_dir/node.key, made at first use.
    node_name: str = "city"
    node_role: str = "city"
    public_url: str | None = None
    federation_timeout: float = 2.0
    federation_ttl: float = 30.0
    harvest_seconds: float = 300.0
    federation_cache_mb: int = 128
    # The glyphs (fonts/) and sprites (sprites/) the styles name, made by make setup.
    map_assets: Path = Path(__file__).resolve().parents[1] / ".tools" / "map-assets"

    def budget_ms(self, kind: str) -> int:
        """A statement's time budget for this kind of request (see the budget_* fields)."""
        return int(getattr(self, f"budget_{kind}_ms"))

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def node_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def raster_root(self) -> str:
        return self.raster_store or str(self.data_dir / "rasters")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read ``ONEMAP_*``; keyword overrides win (the CLI's flags)."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = _env(f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.node_role not in ("city", "district"):
            raise ValueError(f"ONEMAP_NODE_ROLE {settings.node_role!r} is neither city nor "
                             "district")
        if settings.default_level not in settings.levels:
            raise ValueError(f"ONEMAP_DEFAULT_LEVEL {settings.default_level!r} is not one of "
                             f"ONEMAP_LEVELS {','.join(settings.levels)}")
        return settings


def _coerce(name: str, kind: str, raw: str) -> object:
    """An environment value as the field's declared type (``kind``, as annotated)."""
    if kind.startswith("Path"):
        return Path(raw)
    if kind == "int":
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"ONEMAP_{name.upper()} must be an integer, got {raw!r}") from exc
    if kind == "float":
        try:
            return float(raw)
        except ValueError as exc:
            raise ValueError(f"ONEMAP_{name.upper()} must be a number, got {raw!r}") from exc
    if kind == "bool":
        return raw.strip().lower() not in {"0", "false", "no", "off"}
    if kind.startswith("tuple"):
        return tuple(o.strip() for o in raw.split(",") if o.strip())
    return raw
