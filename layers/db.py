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


def prepare(settings: Settings) -> str:
    """Start (if embedded), migrate, build missing overviews; returns the URL.

    Run once at process start.
    """
    url = database_url(settings)
    with psycopg.connect(url, autocommit=True) as conn:
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
