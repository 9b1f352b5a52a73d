"""The job queue in PostgreSQL (``onemap.jobs``): statements that servers and workers share.

A server submits (``SUBMIT``, then ``NOTIFY``), a worker claims the oldest waiting job with
``FOR UPDATE SKIP LOCKED`` (so two workers never take one job) and reports progress, which
is its heartbeat too; a running job whose worker has been silent for ``stale`` seconds is
claimed again: an ingest is one transaction, so a second run starts from the layer as the
first left it. Dismissing a waiting job ends it; a running one ends at its next report.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

CHANNEL = "onemap_jobs"
DONE = ("successful", "failed", "dismissed")
MAX_ATTEMPTS = 3  # a job whose worker died this often is failed, not claimed again

# What a caller sees of a job (never its files' paths).
SHOWN = ("id", "kind", "state", "principal", "department", "layer_id", "progress", "message",
         "result", "created_at", "started_at", "finished_at")
_SHOWN = sql.SQL(", ").join(map(sql.Identifier, SHOWN))

SUBMIT = """
INSERT INTO onemap.jobs (kind, principal_id, principal, department, layer_id, params)
VALUES (%(kind)s, %(principal_id)s, %(principal)s, %(department)s, %(layer_id)s, %(params)s)
RETURNING id"""

NOTIFY = "SELECT pg_notify('onemap_jobs', %s::text)"

GET = sql.SQL("SELECT {} FROM onemap.jobs WHERE id = %s").format(_SHOWN)

# A caller's own jobs (an administrator's: everyone's), newest first.
MINE = sql.SQL("""
SELECT {} FROM onemap.jobs
WHERE (%(all)s OR principal_id IS NOT DISTINCT FROM %(principal_id)s)
ORDER BY created_at DESC LIMIT %(limit)s""").format(_SHOWN)

DISMISS = """
UPDATE onemap.jobs SET state = 'dismissed', message = 'dismissed by ' || %(by)s,
       finished_at = CASE WHEN state = 'accepted' THEN now() END
WHERE id = %(id)s AND state IN ('accepted', 'running')
RETURNING id"""

CLAIM = """
UPDATE onemap.jobs j SET state = 'running', worker = %(worker)s, beat_at = now(),
       started_at = coalesce(j.started_at, now()), attempts = j.attempts + 1,
       message = CASE WHEN j.state = 'running' THEN 'taken over from a silent worker'
                      ELSE j.message END
WHERE j.id = (SELECT id FROM onemap.jobs
              WHERE state = 'accepted'
                 OR (state = 'running' AND beat_at < now() - %(stale)s)
              ORDER BY created_at
              FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING j.*"""

# Jobs whose worker died too often end failed rather than kill another.
GIVE_UP = """
UPDATE onemap.jobs SET state = 'failed', finished_at = now(),
       message = 'its worker stopped ' || attempts || ' times while running it'
WHERE state = 'running' AND beat_at < now() - %(stale)s AND attempts >= %(max)s"""

# Progress and heartbeat; returns the state, so a dismissed job is seen at once.
BEAT = """
UPDATE onemap.jobs SET progress = greatest(progress, %(progress)s), beat_at = now(),
       message = coalesce(%(message)s, message)
WHERE id = %(id)s AND worker = %(worker)s
RETURNING state"""

FINISH = """
UPDATE onemap.jobs SET state = %(state)s, progress = CASE WHEN %(state)s = 'successful'
       THEN 100 ELSE progress END, message = %(message)s, result = %(result)s,
       finished_at = now()
WHERE id = %(id)s AND worker = %(worker)s AND state = 'running'
RETURNING id"""


class Dismissed(Exception):
    """The job was dismissed while it ran; its work is rolled back."""


def submit_params(kind: str, principal_id: int | None, principal: str,
                  department: str | None, layer_id: str | None,
                  params: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "principal_id": principal_id, "principal": principal,
            "department": department, "layer_id": layer_id, "params": Jsonb(params)}


def claim(conn: psycopg.Connection, worker: str, stale: int) -> dict[str, Any] | None:
    """The oldest waiting job, now running under ``worker``; None when there is none."""
    after = timedelta(seconds=stale)
    with conn.transaction():
        conn.execute(GIVE_UP, {"stale": after, "max": MAX_ATTEMPTS})
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(CLAIM, {"worker": worker, "stale": after}).fetchone()


def beat(conn: psycopg.Connection, job_id: Any, worker: str, progress: int,
         message: str | None = None) -> None:
    """Report progress; Dismissed when the job was dismissed or taken over meanwhile."""
    row = conn.execute(BEAT, {"id": job_id, "worker": worker, "progress": progress,
                              "message": message}).fetchone()
    if row is None or row[0] != "running":
        raise Dismissed(str(job_id))


def finish(conn: psycopg.Connection, job_id: Any, worker: str, state: str,
           message: str | None, result: dict[str, Any] | None) -> bool:
    row = conn.execute(FINISH, {"id": job_id, "worker": worker, "state": state,
                                "message": message,
                                "result": None if result is None else Jsonb(result)}
                       ).fetchone()
    return row is not None
