"""The one place access is decided: who may do what with a layer, and under which limits.

Rules, in order (docs/security.md):

0. An embedding key is read-only, whoever its principal: it never publishes, administers
   or writes to the registry, since the origin it is checked against is the client's word.
1. An administrator may do anything (through an API key or a token, never an embedding
   key).
2. An embedding key opens only the layers it names.
3. The most specific grant that matches the layer decides: one naming the principal, then
   one naming its department, then its parent departments, nearest first, then one for
   everyone; among those, an exact layer id beats a pattern. A grant may also deny.
4. With no grant: the owning department reads and publishes its layers; a layer at the
   lowest level that is shared unconditionally is public; any signed-in principal reads
   layers shared unconditionally, inside its department's jurisdiction.
5. No one reads a layer above its clearance (the grant's, else its department's), except
   the owner; fields above it are hidden.

A layer a principal may not read does not exist for it.

What a credential may do beyond reading is decided here too, each by one method:

6. ``edit_refusal``: a feature edit needs the publish right, a thematic layer (base layers
   change by ingest only) and no limits on the layer (a caller who sees part of it cannot
   replace whole features).
7. ``base_page``, ``quota_left`` and ``shapes_refusal``: base data is served, never handed
   out in bulk: a page of a base layer holds at most ``Caps.base_items`` features, paging
   goes at most ``Caps.base_offset`` deep, a caller gets ``Caps.base_daily`` features a
   day, and no analysis process hands out a base layer's own shapes (clip, intersect,
   dissolve: up to thousands of shapes at once); statistics over it (aggregate, density,
   zonal) may be computed, and ``nearest`` gives at most a page's worth.
8. ``acting_department``, ``may_decide``: registry reservations are made and decided by a
   signed-in department (never anonymously, never through an embedding key), and only the
   carrier's owning department decides.
9. ``style_refusal``: a layer's look is set by those who may publish it (never
   anonymously, never through an embedding key); a caller who sees the layer only with
   limits may restyle it as well, since a style shows nothing its limits hide
   (``styles.build.drawable``).
10. ``publish_refusal``: a whole layer is published (an upload, a re-upload) by a signed-in
    principal, never through an embedding key. An existing layer needs the publish right
    on it (rule 3 or 4) seen without limits; a new one a publisher of its department (a
    principal marked so) or a grant to publish that layer id. The layer belongs to the
    publisher's department (an administrator names any), and its level is within that
    department's clearance. A process's result kept as a layer (``keep_refusal``) is
    written the same way for a signed-in principal of a department (never an embedding
    key, never a node's caller), belongs to that department, is shared with no one and is
    classified at the highest level of the layers it was computed from.
11. ``manage_refusal``: a layer's catalog entry, dictionary notes and classification are
    changed, and the layer withdrawn or restored, by those who may publish it (rule 10's
    existing-layer case, a withdrawn layer included), within their clearance. A withdrawn
    layer exists for no reader, an administrator included: it is served to no one.
12. ``discoverable`` and ``request_refusal``: a layer shared on condition is listed, as its
    catalog entry only, to signed-in principals cleared for its level, so that their
    department may ask for it; its owning department decides (rule 11), and the grant it
    gives is an ordinary grant (rule 3).
13. ``federated`` and ``sees_record``: a caller asserted by a federated node (another
    OneMap that signed who is asking, ``federation.keys``) only reads, never writes or
    administers. Its departments here are the node's department (named as the node) and,
    under it, ``<node>-<department>`` for the asserted department or its nearest parent
    that this directory has; its clearance is the lower of the asserted one and theirs.
    Grants to those departments then decide as for anyone (rules 3 to 5). An anonymous
    caller stays anonymous. A record harvested from a node is listed to callers cleared
    for its level (anonymous callers: the lowest level, shared unconditionally); reading
    its data is the node's own decision, made on the asserted caller. A caller asserted
    by a node is not asked on of another node (``cascade_refusal``), and an embedding key
    asks a node only for the layers it names as ``node:layer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

from layers.catalog import Layer
from layers.errors import Forbidden, QuotaExceeded, Unauthenticated
from layers.restrict import NONE, Restriction


@dataclass(frozen=True)
class LayerAccess:
    read: bool
    publish: bool
    admin: bool
    restriction: Restriction = NONE


FULL = LayerAccess(True, True, True)


@dataclass(frozen=True)
class Grant:
    id: int
    principal_id: int | None
    department_id: str | None
    layer_pattern: str
    can_read: bool = True
    can_publish: bool = False
    can_admin: bool = False
    max_level: str | None = None
    hidden_fields: tuple[str, ...] = ()
    masked_fields: tuple[tuple[str, str], ...] = ()
    area_id: int | None = None
    area_mode: str = "intersect"
    filter: str | None = None

    def matches(self, layer_id: str) -> bool:
        return fnmatchcase(layer_id, self.layer_pattern)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user or service of a department, or anonymous."""

    id: int | None
    name: str
    kind: str  # 'anonymous', 'user' or 'service'
    departments: tuple[str, ...] = ()  # its own first, then the parents, nearest first
    max_level: str | None = None  # its department's clearance
    area_id: int | None = None  # its department's jurisdiction (nearest that has one)
    admin: bool = False
    publisher: bool = False  # publishes new layers for its department (rule 10)
    key_id: str | None = None
    key_layers: tuple[str, ...] | None = None  # an embedding key's layers
    embedded: bool = False  # the credential is an embedding key: read-only (rule 0)
    node: str | None = None  # asserted by this federated node (rule 13)

    @property
    def department(self) -> str | None:
        return self.departments[0] if self.departments else None

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(None, "anonymous", "anonymous")


@dataclass(frozen=True)
class Caps:
    """Rule 7's numbers (``ONEMAP_BASE_MAX_ITEMS``, ``_MAX_OFFSET``, ``_DAILY_ITEMS``)."""

    base_items: int = 1000
    base_offset: int = 10_000
    base_daily: int = 100_000


@dataclass
class Policy:
    """The grants and levels in force, read from the database at one access version."""

    levels: tuple[str, ...]
    grants: list[Grant] = field(default_factory=list)
    caps: Caps = field(default_factory=Caps)

    def rank(self, level: str | None) -> int:
        # An unknown level ranks above every known one: unknown data is never shown.
        if level is None:
            return -1
        return self.levels.index(level) if level in self.levels else len(self.levels)

    def _grant(self, p: Principal, layer_id: str) -> Grant | None:
        best: tuple[int, int, int] | None = None
        chosen = None
        for g in self.grants:
            if not g.matches(layer_id):
                continue
            if g.principal_id is not None:
                if g.principal_id != p.id:
                    continue
                who = 0
            elif g.department_id is not None:
                if g.department_id not in p.departments:
                    continue
                who = 1 + p.departments.index(g.department_id)
            else:
                who = 1 + len(p.departments)  # everyone
            score = (who, 0 if g.layer_pattern == layer_id else 1, -g.id)
            if best is None or score < best:
                best, chosen = score, g
        return chosen

    def sees_record(self, p: Principal, level: str, sharing_type: str) -> bool:
        """Rule 13: whether a record harvested from a node is listed to ``p``."""
        if p.admin and not p.embedded:
            return True
        if p.anonymous:
            return self.rank(level) == 0 and sharing_type == "unconditional"
        return self.rank(level) <= self.rank(p.max_level)

    @staticmethod
    def cascade_refusal(p: Principal, node: str, layer_id: str | None,
                        asset: bool = False) -> str | None:
        """Rule 13: why ``p`` may not ask ``node`` for ``layer_id`` (or for an ``asset`` of
        no layer: glyphs, sprites, grids) through this node."""
        if p.node is not None:
            return "a request from another node is not passed on to a third"
        if p.key_layers is not None and not asset and (layer_id is None
                                         or f"{node}:{layer_id}" not in p.key_layers):
            return f"this key does not open {node}:{layer_id or '*'}"
        return None

    def administers(self, p: Principal) -> bool:
        """Rules 0 and 1: administration needs an administrator's own credential."""
        return p.admin and not p.embedded

    def may_write(self, p: Principal) -> bool:
        """Whether the credential may change anything at all (rule 0); each write then asks
        about its layer."""
        return not p.embedded and not p.anonymous and p.node is None

    @staticmethod
    def _publisher_refusal(p: Principal, layer: Layer, a: LayerAccess | None, what: str,
                           doing: str) -> str | None:
        """Rule 0 and the publish right, which edits and styles both need."""
        if p.embedded:
            return "embedding keys are read-only"
        if a is None or not a.read:
            return f"no {what} {layer.id!r}"
        if not a.publish:
            return f"you may read {layer.id!r} but {doing}"
        return None

    def edit_refusal(self, p: Principal, layer: Layer, a: LayerAccess | None) -> str | None:
        """Rule 6 (and 0): why ``p`` may not edit ``layer``'s features, or None."""
        refusal = self._publisher_refusal(p, layer, a, "collection", "not publish to it")
        if refusal is not None:
            return refusal
        if layer.role == "base":
            return f"{layer.id!r} is a base layer: it changes by ingest only"
        if a is not None and a.restriction != NONE:
            return (f"you see {layer.id!r} with limits (area, filter or fields) and so cannot "
                    "replace whole features")
        return None

    def style_refusal(self, p: Principal, layer: Layer, a: LayerAccess | None) -> str | None:
        """Rule 9 (and 0): why ``p`` may not set ``layer``'s style, or None."""
        if p.anonymous:
            raise Unauthenticated("sign in to set a layer's style")
        return self._publisher_refusal(p, layer, a, "layer",
                                       "only its publishers set its style")

    def publish_refusal(self, p: Principal, layer_id: str, layer: Layer | None,
                        level: str | None, department: str | None) -> str | None:
        """Rule 10 (and 0): why ``p`` may not publish ``layer_id`` (``layer`` when it
        exists) at ``level`` for ``department``, or None."""
        if p.anonymous:
            raise Unauthenticated("sign in to publish a layer")
        if p.embedded:
            return "embedding keys are read-only"
        if self.administers(p):
            return None
        if department is not None and department != p.department:
            return (f"you publish for your department {p.department!r}, not for "
                    f"{department!r}")
        if layer is not None:
            a = self.evaluate(p, layer)
            if a is None or not a.read or not a.publish:
                return f"you may not publish to layer {layer_id!r}"
            if a.restriction != NONE:
                return (f"you see {layer_id!r} with limits (area, filter or fields) and so "
                        "cannot replace it")
        else:
            grant = self._grant(p, layer_id)
            if not (p.publisher or (grant is not None and grant.can_publish)):
                return ("you may not publish new layers: ask your department's "
                        "administrator for the publish right")
        if level is not None and p.max_level is not None \
                and self.rank(level) > self.rank(p.max_level):
            return (f"level {level!r} is above your department's clearance "
                    f"{p.max_level!r}")
        return None

    def manage_refusal(self, p: Principal, layer: Layer, level: str | None = None
                       ) -> str | None:
        """Rule 11: why ``p`` may not manage ``layer`` (its entry, notes, level, withdrawal,
        the requests for it), or None; ``level`` is a level it would be given."""
        return self.publish_refusal(p, layer.id, replace(layer, withdrawn_at=None), level,
                                    None)

    def discoverable(self, p: Principal, layer: Layer) -> bool:
        """Rule 12: whether ``p`` sees ``layer``'s catalog entry, to ask for it."""
        return (not p.anonymous and not p.embedded and layer.withdrawn_at is None
                and layer.sharing_type == "conditional" and p.max_level is not None
                and self.rank(layer.level) <= self.rank(p.max_level))

    def request_refusal(self, p: Principal, layer: Layer) -> str | None:
        """Rule 12: why ``p``'s department may not ask for ``layer``, or None."""
        if p.anonymous:
            raise Unauthenticated("sign in to ask for a layer")
        if p.embedded:
            return "embedding keys are read-only"
        if p.department is None:
            return "only a department asks for a layer"
        if layer.department == p.department:
            return f"{layer.id!r} is your department's own layer"
        if not self.discoverable(p, layer):
            return f"no layer {layer.id!r} to ask for"
        return None

    def base_page(self, layer: Layer, limit: int, offset: int) -> int:
        """Rule 7: the page size a request of ``layer`` gets; Forbidden past the depth."""
        if layer.role != "base":
            return limit
        if offset >= self.caps.base_offset:
            raise Forbidden(f"{layer.id!r} is a base layer: it is served, not copied; "
                            f"queries page at most {self.caps.base_offset} features deep; "
                            "narrow the query with bbox or filter")
        return min(limit, self.caps.base_items)

    def paging_window(self, layer: Layer) -> int | None:
        """Rule 7: how deep pages of ``layer`` go, None for no bound."""
        return self.caps.base_offset if layer.role == "base" else None

    def quota_left(self, layer: Layer, used: int) -> None:
        """Rule 7: QuotaExceeded once a caller was served its day's base features."""
        if layer.role == "base" and used >= self.caps.base_daily:
            raise QuotaExceeded(f"{layer.id!r} is a base layer: it is served, not copied; "
                                f"your daily quota of {self.caps.base_daily} of its features "
                                "is used up")

    def keep_refusal(self, p: Principal) -> str | None:
        """Rule 10: why ``p``'s process result may not be kept as a layer, or None."""
        if p.anonymous or p.department is None:
            return "a result kept as a layer belongs to a department: sign in with its key"
        if p.embedded:
            return "embedding keys are read-only: they keep no results"
        if p.node is not None:
            return "a federated node's caller keeps no results here"
        return None

    def shapes_refusal(self, layer: Layer) -> str | None:
        """Rule 7: why a process may not hand out ``layer``'s own shapes, or None."""
        if layer.role == "base":
            return (f"{layer.id!r} is a base layer: it is served, not copied; a process may "
                    "count or measure it (aggregate, density) but not hand out its shapes")
        return None

    def acting_department(self, p: Principal) -> str:
        """Rule 8: the department a registry change is made as."""
        if p.anonymous or p.department is None:
            raise Unauthenticated("reservations are made and decided by a department: sign "
                                  "in with a department's key")
        if p.embedded:
            raise Forbidden("embedding keys are read-only")
        return p.department

    def may_decide(self, p: Principal, owner: str | None) -> bool:
        """Rule 8: only the carrier's owning department decides its reservations (an
        administrator too)."""
        if self.administers(p):
            return True
        return owner is not None and owner == self.acting_department(p)

    def evaluate(self, p: Principal, layer: Layer) -> LayerAccess | None:
        """What ``p`` may do with ``layer``; None when the layer does not exist for it."""
        if layer.withdrawn_at is not None:  # rule 11
            return None
        if p.key_layers is not None and not any(fnmatchcase(layer.id, pat)
                                                for pat in p.key_layers):
            return None
        if self.administers(p):
            return FULL
        found = self._evaluate(p, layer)
        if found is not None and p.embedded:
            return replace(found, publish=False, admin=False)
        return found

    def _evaluate(self, p: Principal, layer: Layer) -> LayerAccess | None:
        owner = layer.department is not None and layer.department == p.department
        grant = self._grant(p, layer.id)
        public = layer.level == self.levels[0] and layer.sharing_type == "unconditional"
        area, clip, row_filter, hidden, masks = None, False, None, set(), ()
        if grant is not None:
            read = grant.can_read or grant.can_publish
            publish, admin = grant.can_publish or owner, grant.can_admin
            clearance = grant.max_level or p.max_level
            area = grant.area_id if grant.area_id is not None else (
                None if owner or public else p.area_id)
            clip, row_filter = grant.area_mode == "clip", grant.filter
            hidden, masks = set(grant.hidden_fields), grant.masked_fields
        elif owner:
            read, publish, admin, clearance = True, True, False, None
        elif public:
            read, publish, admin, clearance = True, False, False, self.levels[0]
        elif not p.anonymous and layer.sharing_type == "unconditional":
            read, publish, admin, clearance = True, False, False, p.max_level
            area = p.area_id
        else:
            return None
        if not read:
            return None
        if not owner:
            if clearance is None or self.rank(layer.level) > self.rank(clearance):
                return None
            hidden |= {f.name for f in layer.fields
                       if f.level and self.rank(f.level) > self.rank(clearance)}
        masks = tuple(sorted((n, how) for n, how in masks if n not in hidden))
        return LayerAccess(read, publish, admin, Restriction(
            frozenset(hidden), masks, area, clip and area is not None, row_filter))


@dataclass(frozen=True)
class Access:
    """One request's principal under the policy in force: what every endpoint asks."""

    principal: Principal
    policy: Policy
    # What the request was told of each layer it read: "version.limits-token" by layer id;
    # a federated node keys its cache of the answer by it (rule 13).
    told: dict[str, str] = field(default_factory=dict, compare=False)

    def layer(self, layer: Layer) -> LayerAccess | None:
        found = self.policy.evaluate(self.principal, layer)
        if found is not None and found.read and self.principal.node is not None:
            self.told[layer.id] = f"{layer.version}.{found.restriction.token}"
        return found

    @property
    def administers(self) -> bool:
        return self.policy.administers(self.principal)

    def sees_record(self, record_id: str, level: str, sharing_type: str) -> bool:
        """Rule 13 for a harvested record, and rule 2 for an embedding key's layers."""
        p = self.principal
        if p.key_layers is not None and record_id not in p.key_layers:
            return False
        return self.policy.sees_record(p, level, sharing_type)

    def edit_refusal(self, layer: Layer) -> str | None:
        return self.policy.edit_refusal(self.principal, layer, self.layer(layer))

    def style_refusal(self, layer: Layer) -> str | None:
        return self.policy.style_refusal(self.principal, layer, self.layer(layer))

    def publish_refusal(self, layer_id: str, layer: Layer | None, level: str | None,
                        department: str | None) -> str | None:
        return self.policy.publish_refusal(self.principal, layer_id, layer, level,
                                           department)

    def manage_refusal(self, layer: Layer, level: str | None = None) -> str | None:
        return self.policy.manage_refusal(self.principal, layer, level)

    def request_refusal(self, layer: Layer) -> str | None:
        return self.policy.request_refusal(self.principal, layer)

    def discoverable(self, layer: Layer) -> bool:
        return self.policy.discoverable(self.principal, layer)

    @property
    def department(self) -> str:
        return self.policy.acting_department(self.principal)

    def readable(self, layers: list[Layer]) -> list[tuple[Layer, LayerAccess]]:
        out = []
        for layer in layers:
            found = self.layer(layer)
            if found is not None and found.read:
                out.append((layer, found))
        return out
