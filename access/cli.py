"""``onemap auth``: administer departments, principals, keys, areas, grants and levels."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from access import admin
from access.admin import Actor, AdminError
from layers.errors import DomainError
from onemap.settings import Settings


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, value = v.partition("=")
        if not sep or not name or not value:
            raise AdminError(f"{what} {v!r} is not name=value")
        out[name] = value
    return out


def _list(raw: str | None) -> list[str] | None:
    return [v.strip() for v in raw.split(",") if v.strip()] if raw else None


def _when(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError as exc:
        raise AdminError(f"{raw!r} is not an ISO 8601 time") from exc


async def _run(args: argparse.Namespace, settings: Settings, url: str) -> Any:
    actor = Actor(f"cli:{getpass.getuser()}")
    levels = settings.levels
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        match args.auth:
            case "department":
                return await admin.create_department(
                    conn, actor, levels, id=args.id, name=args.name or args.id,
                    parent=args.parent, max_level=args.max_level, area_id=args.area)
            case "principal":
                return await admin.create_principal(
                    conn, actor, name=args.name, kind=args.kind, department=args.department,
                    subject=args.subject, admin=args.admin, publisher=args.publisher)
            case "key":
                return await admin.create_key(
                    conn, actor, principal=args.principal,
                    kind="embed" if args.origin else "api", origins=args.origin,
                    layers=_list(args.layers), expires_at=_when(args.expires),
                    rate_limit=args.rate_limit, note=args.note)
            case "revoke-key":
                await admin.revoke_key(conn, actor, args.id)
                return {"revoked": args.id}
            case "area":
                geojson = None
                if args.geojson:
                    try:
                        with open(args.geojson, encoding="utf-8") as fh:
                            geojson = json.load(fh)
                    except (OSError, ValueError) as exc:
                        raise AdminError(f"{args.geojson}: {exc}") from exc
                    if geojson.get("type") == "FeatureCollection":
                        geojson = geojson["features"][0]
                layer, _, feature = (args.from_feature or "").partition(":")
                return {"id": await admin.create_area(
                    conn, actor, name=args.name, geojson=geojson, from_layer=layer or None,
                    feature=feature or None)}
            case "grant":
                return await admin.grant(
                    conn, actor, levels, to=args.to, layers=args.layers, read=not args.deny,
                    publish=args.publish, admin=args.admin_rights, max_level=args.max_level,
                    hidden=_list(args.hide), masked=_pairs(args.mask, "mask"),
                    area_id=args.area, area_mode="clip" if args.clip else "intersect",
                    filter=args.filter)
            case "revoke-grant":
                await admin.revoke_grant(conn, actor, args.id)
                return {"revoked": args.id}
            case "classify":
                return await admin.classify(
                    conn, actor, levels, layer=args.layer, level=args.level,
                    fields=_pairs(args.field, "field level"))
            case "list":
                return await admin.listing(conn, args.what)
            case "audit":
                return await admin.audit(conn, principal=args.principal, layer=args.layer,
                                         action=args.action, limit=args.limit)
    raise AdminError(f"unknown command {args.auth!r}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from layers.db import prepare

    url = prepare(settings)
    try:
        result = asyncio.run(_run(args, settings, url))
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and "key" in result and args.auth == "key":
        print(f"key {result['id']} for {result['principal']} (shown once, keep it safe):",
              file=sys.stderr)
        print(result["key"])
        return 0
    print(json.dumps(result, default=admin.to_json, ensure_ascii=False, indent=2))
    return 0


def add_parser(sub: Any) -> None:
    a = sub.add_parser("auth", help="departments, principals, keys, grants, levels, audit")
    a.set_defaults(func=run)
    s = a.add_subparsers(dest="auth", required=True)

    d = s.add_parser("department", help="add a department")
    d.add_argument("id", help="a-z, 0-9, - and _")
    d.add_argument("--name")
    d.add_argument("--parent", help="the parent department (city -> district -> street)")
    d.add_argument("--max-level", default="internal",
                   help="the highest level its people are cleared for (ONEMAP_LEVELS)")
    d.add_argument("--area", type=int, help="its jurisdiction (an area id)")

    p = s.add_parser("principal", help="add a user or service account")
    p.add_argument("name")
    p.add_argument("--department", required=True)
    p.add_argument("--kind", choices=["user", "service"], default="user")
    p.add_argument("--subject", help="the OpenID Connect 'sub' that names this user")
    p.add_argument("--admin", action="store_true", help="may administer everything")
    p.add_argument("--publisher", action="store_true",
                   help="may publish new layers for its department")

    k = s.add_parser("key", help="make a key for a principal (printed once)")
    k.add_argument("principal")
    k.add_argument("--origin", action="append",
                   help="makes an embedding key usable in URLs from this origin (repeatable; "
                        "* wildcards)")
    k.add_argument("--layers", help="embedding key: the layers it opens (patterns, comma-"
                                    "separated)")
    k.add_argument("--expires", help="ISO 8601 time with zone")
    k.add_argument("--rate-limit", type=int, help="requests per minute")
    k.add_argument("--note")

    rk = s.add_parser("revoke-key", help="revoke a key at once")
    rk.add_argument("id")

    ar = s.add_parser("area", help="add an area for jurisdictions and grants")
    ar.add_argument("name")
    src = ar.add_mutually_exclusive_group(required=True)
    src.add_argument("--geojson", help="a GeoJSON (multi)polygon file, lon/lat")
    src.add_argument("--from-feature", help="LAYER:FEATURE_ID, e.g. districts:110105")

    g = s.add_parser("grant", help="grant rights on layers")
    g.add_argument("to", help="a principal's name, department:<id>, or public")
    g.add_argument("layers", help="a layer id or pattern (* and ?)")
    g.add_argument("--deny", action="store_true", help="deny reading instead")
    g.add_argument("--publish", action="store_true", help="may write features")
    g.add_argument("--admin", dest="admin_rights", action="store_true",
                   help="may administer the layer")
    g.add_argument("--max-level", help="clearance for these layers (ONEMAP_LEVELS)")
    g.add_argument("--hide", help="fields to hide, comma-separated")
    g.add_argument("--mask", action="append", help="FIELD=middle|full (repeatable)")
    g.add_argument("--area", type=int, help="limit to an area (id)")
    g.add_argument("--clip", action="store_true", help="cut shapes at the area's edge")
    g.add_argument("--filter", help="CQL2 text the features must satisfy")

    rg = s.add_parser("revoke-grant", help="remove a grant")
    rg.add_argument("id", type=int)

    c = s.add_parser("classify", help="set a layer's level and its fields' levels")
    c.add_argument("layer")
    c.add_argument("--level", help="one of ONEMAP_LEVELS")
    c.add_argument("--field", action="append", help="FIELD=LEVEL (repeatable)")

    ls = s.add_parser("list", help="list what exists")
    ls.add_argument("what", choices=["departments", "principals", "keys", "grants", "areas"])

    au = s.add_parser("audit", help="read the audit log, newest first")
    au.add_argument("--principal")
    au.add_argument("--layer")
    au.add_argument("--action")
    au.add_argument("--limit", type=int, default=50)
