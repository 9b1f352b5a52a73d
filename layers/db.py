"""Where the database is: a configured server, or the embedded cluster started on demand."""

from __future__ import annotations

import logging

import psycopg

from layers import overviews, store
from layers.cluster import Cluster
from layers.migrate import migrate
from onemap.settings import Settings

log = logging.getLogger("onemap.db")


def embedded_cluster(settings: Settings) -> Cluster:
    return Cluster(settings.data_dir / "postgres", settings.db_port, settings.db_durable)


def database_url(settings: Settings, start: bool = True) -> str:
    """The URL to use; starts the embedded cluster when none is configured."""
    if settings.database_url:
        return settings.database_url
    cluster = embedded_cluster(settings)
    if start:
        cluster.start()
    return cluster.url


# Behind a pooler in transaction mode a statement prepared on one server connection is
# not there on the next: OneMap's connections are opened with ``CONNECT`` (psycopg then
# prepares nothing), and the statements it prepares on purpose ask ``PREPARE`` first.
PREPARE: bool | None = True
CONNECT: dict[str, object] = {}


def transaction_pooled(settings: Settings) -> bool:
    return settings.database_pooling == "transaction"


def configure(settings: Settings) -> None:
    """Once per process, before any connection: what the pooler in front allows."""
    global PREPARE
    if settings.database_pooling not in ("session", "transaction"):
        raise ValueError(f"ONEMAP_DATABASE_POOLING is 'session' or 'transaction', not "
                         f"{settings.database_pooling!r}")
    if transaction_pooled(settings):
        CONNECT["prepare_threshold"] = None
        PREPARE = None


def direct_url(settings: Settings) -> str:
    """The database without a pooler between, for what holds a session: LISTEN, the
    migrations' lock, Mapnik's own connections."""
    return settings.database_direct_url or database_url(settings)


def prepare(settings: Settings) -> str:
    """Start (if embedded), migrate, build missing overviews; returns the URL.

    Run once at process start.
    """
    configure(settings)
    url = database_url(settings)
    with psycopg.connect(direct_url(settings), autocommit=True) as conn:
        migrate(conn)
        for layer_id in store.vector_tables(conn):
            indexes = store.create_indexes(conn, layer_id)
            if indexes:
                log.info("built missing indexes: %s", ", ".join(indexes))
        built = overviews.ensure_all(conn, settings.detail_zoom)
        if built:
            log.info("built missing overviews: %s", ", ".join(built))
    return url


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(database_url(settings))
