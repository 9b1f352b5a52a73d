"""``onemap federation``: tokens, joining, the nodes' state, removing, harvesting."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import psycopg

from federation import nodes
from federation.keys import NodeKey
from layers.errors import Invalid, NodeUnreachable


def add_parser(sub: Any) -> None:
    f = sub.add_parser("federation", help="city and district nodes: join, status, harvest")
    f.set_defaults(func=run)
    s = f.add_subparsers(dest="federation", required=True)
    t = s.add_parser("token", help="(city) a one-time token for a district to join with")
    t.add_argument("--hours", type=float, default=24, help="how long it is good for")
    j = s.add_parser("join", help="(district) join the city at URL with its token")
    j.add_argument("url", help="the city's OneMap, e.g. https://onemap.city.example")
    j.add_argument("--token", required=True)
    j.add_argument("--jurisdiction", help="a GeoJSON file of the district's boundary (lon/lat)")
    st = s.add_parser("status", help="the nodes: health, lag, last harvest and its errors")
    st.add_argument("--json", action="store_true")
    r = s.add_parser("remove", help="(city) remove a node; its layers go from the catalog")
    r.add_argument("name")
    s.add_parser("harvest", help="(city) harvest every district's catalog now")


def run(args: argparse.Namespace, settings: Any) -> int:
    from layers.db import prepare

    url = prepare(settings)
    return int(asyncio.run(_run(args, settings, url)))


async def _run(args: argparse.Namespace, settings: Any, url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        what = args.federation
        if what == "token":
            if settings.node_role != "city":
                raise Invalid("tokens are issued by a city (ONEMAP_NODE_ROLE=city)")
            print(await nodes.issue_token(conn, args.hours))
        elif what == "join":
            await _join(conn, args, settings)
        elif what == "status":
            rows = await nodes.listing(conn)
            if args.json:
                print(json.dumps(rows, default=str, indent=2))
            else:
                print(f"{settings.node_name} ({settings.node_role}), {len(rows)} nodes")
                for r in rows:
                    lag = f"{r['lag_seconds']:.0f} s" if r["lag_seconds"] is not None else "-"
                    print(f"  {r['name']:<16} {r['role']:<9} {r['health']:<8} {r['url']}"
                          f"  records {r['records']}, harvested {lag} ago"
                          + (f"; last error: {r['harvest_error']}" if r["harvest_error"]
                             else ""))
        elif what == "remove":
            await nodes.remove(conn, args.name)
            print(f"removed {args.name}")
        elif what == "harvest":
            from psycopg_pool import AsyncConnectionPool

            from federation.sync import harvest_all

            key = NodeKey.load(settings.data_dir / "node.key")
            districts = [r["name"] for r in await nodes.listing(conn)
                         if r["role"] == "district"]
            async with AsyncConnectionPool(url, min_size=1, max_size=4,
                                           kwargs={"autocommit": True}) as pool, \
                    httpx.AsyncClient(timeout=settings.federation_timeout * 2) as client:
                for node, result in (await harvest_all(pool, key, settings.node_name,
                                                       districts, client)).items():
                    print(f"{node}: {result}")
    return 0


async def _join(conn: Any, args: argparse.Namespace, settings: Any) -> None:
    if settings.node_role != "district":
        raise Invalid("a district joins its city: set ONEMAP_NODE_ROLE=district and "
                      "ONEMAP_NODE_NAME first")
    area = None
    if args.jurisdiction:
        path = Path(args.jurisdiction)
        try:
            area = nodes.jurisdiction_of(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise Invalid(f"{path}: {exc}") from None
    key = NodeKey.load(settings.data_dir / "node.key")
    city_url = nodes.check_url(args.url)
    body = {"token": args.token, "name": settings.node_name, "url": settings.node_url,
            "public_key": key.public_pem,
            "jurisdiction": json.loads(json.dumps(area.__geo_interface__)) if area else None}
    try:
        r = httpx.post(f"{city_url}/federation/nodes", json=body,
                       timeout=settings.federation_timeout * 5)
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"{city_url} cannot be reached: {exc}") from None
    if r.status_code != 201:
        detail = r.json().get("detail") if "json" in r.headers.get("content-type", "") else r.text
        raise Invalid(f"{city_url} refused: {r.status_code} {detail}")
    city = r.json()
    await nodes.remember(conn, city["name"], "city", city["url"], city["public_key"])
    print(f"{settings.node_name} joined {city['name']} at {city['url']}")
