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
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

from layers.catalog import Layer
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
    key_id: str | None = None
    key_layers: tuple[str, ...] | None = None  # an embedding key's layers
    embedded: bool = False  # the credential is an embedding key: read-only (rule 0)

    @property
    def department(self) -> str | None:
        return self.departments[0] if self.departments else None

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(None, "anonymous", "anonymous")


@dataclass
class Policy:
    """The grants and levels in force, read from the database at one access version."""

    levels: tuple[str, ...]
    grants: list[Grant] = field(default_factory=list)

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

    def administers(self, p: Principal) -> bool:
        """Rules 0 and 1: administration needs an administrator's own credential."""
        return p.admin and not p.embedded

    def may_write(self, p: Principal) -> bool:
        """Whether the credential may change anything at all (rule 0); each write then asks
        about its layer."""
        return not p.embedded and not p.anonymous

    def evaluate(self, p: Principal, layer: Layer) -> LayerAccess | None:
        """What ``p`` may do with ``layer``; None when the layer does not exist for it."""
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

    def layer(self, layer: Layer) -> LayerAccess | None:
        return self.policy.evaluate(self.principal, layer)

    @property
    def administers(self) -> bool:
        return self.policy.administers(self.principal)

    @property
    def may_write(self) -> bool:
        return self.policy.may_write(self.principal)

    def readable(self, layers: list[Layer]) -> list[tuple[Layer, LayerAccess]]:
        out = []
        for layer in layers:
            found = self.layer(layer)
            if found is not None and found.read:
                out.append((layer, found))
        return out
