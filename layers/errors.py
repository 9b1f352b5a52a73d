"""The domain's errors: what went wrong, never how HTTP says it.

``layers/``, ``access/``, ``registry/`` and ``scenes3d/`` raise these; ``mapserver/errors.py``
alone maps each class to a status and a problem body (and WMTS to an OWS exception code),
and the command line to its exit codes. A message names the parameter, field, file or row.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Invalid(DomainError, ValueError):
    """The input is malformed or breaks a rule of the data (a dictionary, a type)."""


class NotFound(DomainError, LookupError):
    """No such thing, or none the caller may know of."""


class OutOfRange(Invalid):
    """A tile address outside its matrix: ``axis`` says which part, "zoom" (the grid has
    no such matrix), "column" or "row"."""

    def __init__(self, message: str, axis: str = "zoom") -> None:
        super().__init__(message)
        self.axis = axis


class Conflict(DomainError):
    """The input is good but collides with the state (exists already, taken, too many)."""


class Stale(Conflict):
    """The caller's copy is older than the stored one (If-Match)."""


class Unauthenticated(DomainError):
    """The caller must sign in (or its credential is not valid) for this."""


class Forbidden(DomainError, PermissionError):
    """The caller is known and may not do this."""


class TooCostly(DomainError):
    """The request would cost more than its bounds allow (size, nesting, vertices, layers);
    refused before it runs. Narrow it and ask again."""


class TooLarge(TooCostly):
    """The request's body is over its endpoint's limit."""


class QuotaExceeded(DomainError):
    """A rate or a daily quota is used up."""


class Unavailable(DomainError):
    """Not now: a time budget ran out, a lock was held too long, the database is away.
    Nothing was changed; try again after ``retry_after`` seconds."""


class StoreFull(Unavailable):
    """The raster store (or the disk under it) has no room: not the input's fault."""


class NodeUnreachable(Unavailable):
    """Another node of the federation could not be reached, or answered with an error of
    its own; nothing was changed here."""


class NodeTimeout(NodeUnreachable):
    """Another node of the federation did not answer within its time."""
