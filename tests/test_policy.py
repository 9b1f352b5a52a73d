"""``access/policy.py`` on its own: a table of principals x credentials x layers, each row
what the policy must answer. No database: the policy is pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from access.policy import Caps, Grant, Policy, Principal
from layers.catalog import Field, Layer
from layers.errors import Forbidden, QuotaExceeded, Unauthenticated
from layers.restrict import NONE

LEVELS = ("public", "internal", "sensitive", "secret")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def layer(lid: str, *, department: str | None = "roads-dept", level: str = "internal",
          sharing: str = "conditional", role: str = "thematic") -> Layer:
    return Layer(id=lid, kind="vector", title=lid, description=None, role=role,
                 department=department, attribution=None, keywords=(), update_cycle="daily",
                 sharing_type=sharing, level=level, crs="EPSG:4326", source_crs=None,
                 source=None, geometry_type="Point", key_field="id",
                 fields=(Field("id", "string"), Field("owner", "string"),
                         Field("cost", "number", level="sensitive")),
                 feature_count=10, extent=(0, 0, 1, 1), detail_zoom=None, minzoom=0,
                 maxzoom=22, version=1, schema_version=1, produced_at=None, created_at=NOW,
                 updated_at=NOW)


LAYERS = {
    "owned": layer("owned"),  # internal, the roads department's, shared on condition
    "open": layer("open", department="parks", level="public", sharing="unconditional"),
    "shared": layer("shared", department="parks", sharing="unconditional"),
    "secret": layer("secret", department="parks", level="secret"),
    "base": layer("base", department="roads-dept", role="base", level="public",
                  sharing="unconditional"),
}
GRANTS = [
    Grant(1, None, "police", "owned", hidden_fields=("owner",), filter="owner = 'x'"),
    Grant(2, None, "police", "secret", can_read=False),
    Grant(3, 7, None, "shared", can_publish=True),
]


def who(name: str, *, credential: str = "api") -> Principal:
    depts = {"roads": ("roads-dept", "city"), "police": ("police", "city"),
             "parks": ("parks", "city"), "clerk": ("clerk",)}
    if name == "anonymous":
        return Principal(None, "anonymous", "anonymous")
    ids = {"roads": 1, "police": 2, "parks": 3, "clerk": 7, "admin": 9}
    embed = credential == "embed"
    return Principal(ids[name], name, "user", departments=depts.get(name, ("city",)),
                     max_level="internal", admin=name == "admin", key_id="k" if embed else None,
                     key_layers=("open", "owned", "shared") if embed else None,
                     embedded=embed)


POLICY = Policy(LEVELS, GRANTS, Caps(base_items=100, base_offset=1000, base_daily=5000))

# (principal, credential, layer) -> None (does not exist for it) or (read, publish, admin,
# hidden fields, rows limited).
TABLE = [
    ("anonymous", "-", "open", (True, False, False, {"cost"}, False)),
    ("anonymous", "-", "owned", None),
    ("anonymous", "-", "shared", None),  # shared, but not public: signed-in only
    ("anonymous", "-", "secret", None),
    ("roads", "api", "owned", (True, True, False, set(), False)),  # the owner
    ("roads", "embed", "owned", (True, False, False, set(), False)),  # rule 0
    ("roads", "api", "shared", (True, False, False, {"cost"}, False)),
    ("roads", "api", "secret", None),  # above its clearance
    ("police", "api", "owned", (True, False, False, {"owner", "cost"}, True)),
    ("police", "embed", "owned", (True, False, False, {"owner", "cost"}, True)),
    ("police", "api", "secret", None),  # denied by grant
    ("clerk", "api", "shared", (True, True, False, {"cost"}, False)),  # named grant
    ("clerk", "embed", "shared", (True, False, False, {"cost"}, False)),
    ("clerk", "embed", "secret", None),  # not among the key's layers
    ("admin", "api", "secret", (True, True, True, set(), False)),  # rule 1
    ("admin", "embed", "secret", None),  # rule 2 before rule 1: not the key's layer
    ("admin", "embed", "owned", None),  # no admin by key, and no grant of its own
    ("admin", "embed", "open", (True, False, False, {"cost"}, False)),  # as anyone
]


@pytest.mark.parametrize(("name", "credential", "layer_id", "expected"), TABLE)
def test_the_table(name, credential, layer_id, expected):
    p = who(name, credential=credential)
    got = POLICY.evaluate(p, LAYERS[layer_id])
    if expected is None:
        assert got is None
        return
    assert got is not None
    read, publish, admin, hidden, limited = expected
    assert (got.read, got.publish, got.admin) == (read, publish, admin)
    assert set(got.restriction.hidden) == hidden
    assert got.restriction.rows_limited == limited


@pytest.mark.parametrize(("name", "credential"), [
    ("roads", "api"), ("roads", "embed"), ("admin", "api"), ("admin", "embed"),
    ("anonymous", "-")])
def test_only_an_administrators_own_credential_administers_and_embedding_never_writes(
        name, credential):
    p = who(name, credential=credential)
    assert POLICY.administers(p) == (name == "admin" and credential == "api")
    assert POLICY.may_write(p) == (name != "anonymous" and credential != "embed")


EDITS = [
    ("roads", "api", "owned", None),
    ("roads", "embed", "owned", "read-only"),
    ("roads", "api", "base", "base layer"),
    ("police", "api", "owned", "not publish"),
    ("clerk", "api", "shared", "with limits"),  # publishes, but fields above it are hidden
    ("admin", "api", "base", "base layer"),
    ("anonymous", "-", "open", "not publish"),
]


@pytest.mark.parametrize(("name", "credential", "layer_id", "refusal"), EDITS)
def test_edit_rules(name, credential, layer_id, refusal):
    p = who(name, credential=credential)
    ly = LAYERS[layer_id]
    got = POLICY.edit_refusal(p, ly, POLICY.evaluate(p, ly))
    assert (got is None) if refusal is None else (refusal in got)


def test_base_layers_are_served_in_small_pages_and_daily_quotas():
    base, thematic = LAYERS["base"], LAYERS["owned"]
    assert POLICY.base_page(base, 5000, 0) == 100
    assert POLICY.base_page(thematic, 5000, 0) == 5000
    assert POLICY.paging_window(base) == 1000 and POLICY.paging_window(thematic) is None
    with pytest.raises(Forbidden, match="1000 features deep"):
        POLICY.base_page(base, 10, 1000)
    POLICY.quota_left(base, 4999)
    with pytest.raises(QuotaExceeded, match="5000"):
        POLICY.quota_left(base, 5000)
    POLICY.quota_left(thematic, 10**9)


def test_registry_changes_are_made_and_decided_by_departments():
    assert POLICY.acting_department(who("police")) == "police"
    with pytest.raises(Unauthenticated):
        POLICY.acting_department(who("anonymous"))
    with pytest.raises(Forbidden, match="read-only"):
        POLICY.acting_department(who("police", credential="embed"))
    assert POLICY.may_decide(who("roads"), "roads-dept")
    assert not POLICY.may_decide(who("police"), "roads-dept")
    assert not POLICY.may_decide(who("police"), None)
    assert POLICY.may_decide(who("admin"), None)
    assert NONE.token == ""


PUBLISHES = [
    # (who, credential, publisher, layer id, level, department, refusal)
    ("roads", "api", False, "owned", None, None, None),  # its department's layer
    ("roads", "api", False, "new_layer", None, None, "publish right"),
    ("roads", "api", True, "new_layer", None, None, None),
    ("roads", "api", True, "new_layer", "secret", None, "clearance"),
    ("roads", "api", True, "new_layer", None, "parks", "your department"),
    ("roads", "embed", True, "owned", None, None, "read-only"),
    ("police", "api", True, "owned", None, None, "may not publish"),  # reads it, with limits
    ("police", "api", True, "secret", None, None, "may not publish"),  # not even there
    ("clerk", "api", False, "shared", None, None, "with limits"),  # grant 3, fields hidden
    ("admin", "api", False, "anything", "secret", "parks", None),
]


@pytest.mark.parametrize(("name", "credential", "publisher", "layer_id", "level", "dept",
                          "refusal"), PUBLISHES)
def test_publish_rules(name, credential, publisher, layer_id, level, dept, refusal):
    """Rule 10: who publishes a whole layer, new or existing."""
    from dataclasses import replace

    p = replace(who(name, credential=credential), publisher=publisher)
    got = POLICY.publish_refusal(p, layer_id, LAYERS.get(layer_id), level, dept)
    assert (got is None) if refusal is None else (got is not None and refusal in got), got


def test_anonymous_callers_sign_in_to_publish():
    with pytest.raises(Unauthenticated):
        POLICY.publish_refusal(who("anonymous"), "x", None, None, None)
