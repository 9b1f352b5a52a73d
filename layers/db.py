"""Where the database is: a configured server, or the embedded cluster started on demand."""

from __future__ import annotations

import psycopg

from layers.cluster import Cluster
from layers.migrate import migrate
from onemap.settings import Settings


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
    """Start (if embedded) and migrate; returns the URL. Run once at process start."""
    url = database_url(settings)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(database_url(settings))
