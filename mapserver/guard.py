"""Bounds on what a request may bring, and an end to requests whose client has gone.

Before any endpoint runs:
- a path or query parameter holding a NUL (which PostgreSQL's text cannot store) or a
  query string over ``MAX_QUERY`` is a 400 naming the parameter;
- a body over its endpoint's limit (``body_limit``) is a 413, by ``Content-Length`` before
  a byte is read and while streaming when the length is not declared.

While it runs, the connection is watched: when the client disconnects, the request's work
is cancelled (its running statement with it, which psycopg cancels on the server) and
``gone(scope)`` turns true, so a write in a worker thread rolls back instead of committing
for nobody. A request without a body is watched only once it has run ``WATCH_AFTER``
seconds: most answers (a cached tile) are sent sooner, and a watcher for each would cost
more than the answer.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layers.errors import TooLarge
from mapserver.errors import problem
from styles.store import MAX_BYTES as MAX_STYLE

MAX_QUERY = 64 * 1024
KB, MB = 1024, 1024 * 1024
# (method, path prefix, path suffix) -> the largest body taken; the first match wins.
UPLOAD = -1  # the configured upload limit (ONEMAP_UPLOAD_MAX_MB)
LIMITS: tuple[tuple[tuple[str, ...], str, str, int], ...] = (
    (("POST", "PATCH"), "/layers/", "", 64 * KB),  # a layer's entry, its withdrawal
    (("POST",), "/layers", "", UPLOAD),  # a layer's files, published as a job
    (("PUT",), "/uploads/", "", 64 * MB),  # one chunk of a large file
    (("POST", "PUT", "PATCH"), "/collections/", "", 10 * MB),  # a feature, as GeoJSON
    (("POST", "PUT", "PATCH", "DELETE"), "/admin/", "", 4 * MB),  # an area's polygon
    (("POST",), "/registry/", "", 256 * KB),  # a site to cover, a reservation
    (("POST",), "/codes/", "", 16 * KB),  # a lifecycle event
    (("PUT",), "/styles/", "", MAX_STYLE + KB),  # a layer's style, in its {"layers": ...}
)
DEFAULT_LIMIT = 16 * KB
GONE = "onemap.gone"
WATCH_AFTER = 0.05  # seconds a request without a body runs before its connection is watched


def body_limit(method: str, path: str, upload: int = DEFAULT_LIMIT) -> int:
    for methods, prefix, suffix, limit in LIMITS:
        if method in methods and path.startswith(prefix) and path.endswith(suffix):
            return upload if limit == UPLOAD else limit
    return DEFAULT_LIMIT


class Gone:
    """Set once the request's client has disconnected; read from worker threads too."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = False

    def set(self) -> None:
        self.left = True


def gone(scope: Scope) -> bool:
    """Whether the request's client has disconnected."""
    flag = scope.get(GONE)
    return flag is not None and flag.left


def bad_input(scope: Scope) -> str | None:
    """Why the request line cannot be taken, or None."""
    if "\x00" in scope["path"]:
        return "the path holds a NUL character"
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY:
        return f"the query string is over {MAX_QUERY // KB} KB"
    if b"%00" not in raw and b"\x00" not in raw:
        return None  # a NUL can reach a parameter no other way
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                                 encoding="utf-8", errors="replace"):
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "\\0")[:40]
            return f"parameter {shown!r} holds a NUL character"
    return None


def _declared_length(scope: Scope) -> int | None | str:
    """The declared body length; None when there is none, "chunked" for a streamed body."""
    found: int | None | str = None
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            text = v.decode("latin-1").strip()
            found = int(text) if text.isdigit() else "bad"
        elif k == b"transfer-encoding":
            return "chunked"
    return found


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        why = bad_input(scope)
        if why is not None:
            await problem(400, None, why)(scope, receive, send)
            return
        settings = scope["app"].state.onemap.settings
        limit = body_limit(scope["method"], scope["path"], settings.upload_max_mb * MB)
        declared = _declared_length(scope)
        if declared == "bad":
            await problem(400, None, "Content-Length is not a number")(scope, receive, send)
            return
        if isinstance(declared, int) and declared > limit:
            await problem(413, None, _too_large(limit))(scope, receive, send)
            return
        event = Gone()
        scope[GONE] = event
        if declared in (None, 0):
            await _bodyless(self.app, scope, receive, send, event)
            return
        # Two messages at most wait for the app: a large body is read as the app reads it.
        inbox: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=2)

        answered = False

        async def watch(cancel: anyio.CancelScope) -> None:
            total, body_done = 0, False
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not answered:  # after the answer, the end is the server's own
                        event.set()
                        cancel.cancel()
                    return
                if body_done:
                    continue
                total += len(message.get("body", b""))
                if total > limit:
                    await inbox.put(None)  # the app's next read raises TooLarge
                    return
                await inbox.put(message)
                body_done = not message.get("more_body", False)

        async def app_receive() -> Message:
            message = await inbox.get()
            if message is None:
                raise TooLarge(_too_large(limit))
            return message

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            async def app_send(message: Message) -> None:
                nonlocal answered
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    answered = True
                await send(message)

            try:
                await self.app(scope, app_receive, app_send)
            finally:
                tg.cancel_scope.cancel()


async def _bodyless(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                    event: Gone) -> None:
    """Run a request that has no body; watch its connection only once it is slow (or the
    app itself waits for the end, as a streamed answer does)."""
    loop = asyncio.get_running_loop()
    host = asyncio.current_task()
    assert host is not None
    ended = asyncio.Event()
    cancelled = False
    answered = False
    asked = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal cancelled
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not answered:  # after the answer, the end is the server's own
                    event.set()
                    cancelled = True
                    host.cancel()
                ended.set()
                return

    def start() -> None:
        nonlocal watcher
        if watcher is None:
            watcher = loop.create_task(watch())

    async def app_receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        start()
        await ended.wait()
        return {"type": "http.disconnect"}

    async def app_send(message: Message) -> None:
        nonlocal answered
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered = True
        await send(message)

    timer = loop.call_later(WATCH_AFTER, start)
    try:
        await app(scope, app_receive, app_send)
    except asyncio.CancelledError:
        if not cancelled or host.uncancel():  # not ours alone: the server's shutdown
            raise
    finally:
        timer.cancel()
        if watcher is not None and not watcher.done():
            watcher.cancel()


def _too_large(limit: int) -> str:
    size = f"{limit // MB} MB" if limit >= MB else f"{limit // KB} KB"
    return f"the body is over this endpoint's limit of {size}"
