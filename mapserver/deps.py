"""What every endpoint shares: settings, the connection pool and the source registry."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from layers.registry import SourceRegistry
from mapserver.cache import TileCache
from onemap.settings import Settings


@dataclass
class AppState:
    settings: Settings
    pool: AsyncConnectionPool
    registry: SourceRegistry
    cache: TileCache


def app_state(request: Request) -> AppState:
    return request.app.state.onemap
