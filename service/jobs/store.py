"""Job state behind one small interface: SQLite by default (one replica), PostgreSQL by URL
(several replicas, results on a shared volume).

A job is a row. Its life: ``queued`` -> ``running`` (claimed by one replica, which renews a
lease while it works) -> ``succeeded`` | ``failed`` | ``cancelled``. A running job whose lease
ran out was interrupted (its replica died or was killed): any replica claims it again and runs
it from the start, up to ``max_attempts`` starts, after which it fails as interrupted. A
replica that shuts down cleanly hands its running jobs back to the queue at once.

Both stores run the same SQL (the placeholders are rewritten for psycopg); they differ in how
they connect and in how a claim skips rows another replica is claiming. Calls block: the
async side makes them from one thread (``jobs.runner.StoreThread``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.errors import JobInterrupted

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")

_COLUMNS = (
    "id, state, params, created_at, started_at, finished_at, expires_at, frames_done, frames_total, "
    "attempts, owner, lease_until, cancel_requested, result, error, input_bytes"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sr_jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    expires_at DOUBLE PRECISION,
    frames_done BIGINT NOT NULL DEFAULT 0,
    frames_total BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    input_bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sr_jobs_by_state ON sr_jobs (state, created_at);
"""


@dataclass(frozen=True)
class Job:
    id: str
    state: JobState
    params: dict[str, Any]  # what the job was asked to do (``jobs.runner.JobParams``' fields)
    created_at: float  # wall-clock seconds: shared by replicas
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    frames_done: int
    frames_total: int
    attempts: int
    owner: str | None
    lease_until: float | None
    cancel_requested: bool
    result: dict[str, Any] | None  # the answer's headers and size, once succeeded
    error: dict[str, Any] | None  # a problem+json body, once failed
    input_bytes: int

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass(frozen=True)
class Heartbeat:
    owned: bool  # False: the lease ran out and another replica has the job now
    cancel: bool  # DELETE asked for it


def _job(row: tuple[Any, ...]) -> Job:
    (id_, state, params, created, started, finished, expires, done, total, attempts, owner, lease,
     cancel, result, error, input_bytes) = row
    return Job(id_, state, json.loads(params), created, started, finished, expires, int(done), int(total),
               int(attempts), owner, lease, bool(cancel), json.loads(result) if result else None,
               json.loads(error) if error else None, int(input_bytes))


class JobStore:
    """The SQL every store runs; subclasses connect and say how a claim locks."""

    # How the claim's inner SELECT keeps two replicas from taking the same row.
    _claim_lock = ""

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- the interface -----------------------------------------------------------------------

    def create(self, job_id: str, params: dict[str, Any], frames_total: int, input_bytes: int, now: float) -> Job:
        rows = self._execute(
            f"INSERT INTO sr_jobs (id, state, params, created_at, frames_total, input_bytes) "
            f"VALUES (?, 'queued', ?, ?, ?, ?) RETURNING {_COLUMNS}",
            (job_id, json.dumps(params), now, frames_total, input_bytes),
        )
        return _job(rows[0])

    def get(self, job_id: str) -> Job | None:
        rows = self._execute(f"SELECT {_COLUMNS} FROM sr_jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def counts(self) -> dict[JobState, int]:
        counted = dict(self._execute("SELECT state, COUNT(*) FROM sr_jobs GROUP BY state"))
        return {state: int(counted.get(state, 0)) for state in STATES}

    def claim(self, owner: str, now: float, lease_s: float, max_attempts: int, retention_s: float) -> Job | None:
        """The oldest queued job (or interrupted one: its lease ran out), now running here.

        First the jobs nobody will finish are ended: interrupted ones past their attempts
        fail, and ones a DELETE reached (queued, or running on a replica that died) are
        cancelled; both then expire like any finished job."""
        self._execute(
            "UPDATE sr_jobs SET state = 'cancelled', finished_at = ?, expires_at = ?, owner = NULL, "
            "lease_until = NULL WHERE cancel_requested = 1 AND "
            "(state = 'queued' OR (state = 'running' AND lease_until < ?))",
            (now, now + retention_s, now),
        )
        self._execute(
            "UPDATE sr_jobs SET state = 'failed', finished_at = ?, expires_at = ?, error = ?, owner = NULL, "
            "lease_until = NULL WHERE state = 'running' AND lease_until < ? AND attempts >= ?",
            (now, now + retention_s, json.dumps(_interrupted(max_attempts)), now, max_attempts),
        )
        rows = self._execute(
            f"UPDATE sr_jobs SET state = 'running', owner = ?, lease_until = ?, started_at = ?, "
            f"attempts = attempts + 1, frames_done = 0 WHERE id = ("
            f"SELECT id FROM sr_jobs WHERE cancel_requested = 0 AND "
            f"(state = 'queued' OR (state = 'running' AND lease_until < ?)) "
            f"ORDER BY created_at LIMIT 1{self._claim_lock}) RETURNING {_COLUMNS}",
            (owner, now + lease_s, now, now),
        )
        return _job(rows[0]) if rows else None

    def heartbeat(self, job_id: str, owner: str, frames_done: int, frames_total: int, now: float,
                  lease_s: float) -> Heartbeat:
        rows = self._execute(
            "UPDATE sr_jobs SET frames_done = ?, frames_total = ?, lease_until = ? "
            "WHERE id = ? AND owner = ? AND state = 'running' RETURNING cancel_requested",
            (frames_done, frames_total, now + lease_s, job_id, owner),
        )
        return Heartbeat(owned=bool(rows), cancel=bool(rows and rows[0][0]))

    def finish(self, job_id: str, owner: str, state: JobState, now: float, retention_s: float, *,
               result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
               frames_done: int | None = None) -> bool:
        """Record the outcome, if this replica still owns the job; False if it does not."""
        rows = self._execute(
            "UPDATE sr_jobs SET state = ?, finished_at = ?, expires_at = ?, result = ?, error = ?, "
            "owner = NULL, lease_until = NULL, frames_done = COALESCE(?, frames_done) "
            "WHERE id = ? AND owner = ? AND state = 'running' RETURNING id",
            (state, now, now + retention_s, json.dumps(result) if result else None,
             json.dumps(error) if error else None, frames_done, job_id, owner),
        )
        return bool(rows)

    def release(self, job_id: str, owner: str, now: float, retention_s: float) -> None:
        """Hand a running job back to the queue (this replica is stopping): not an attempt.
        One a DELETE has reached is cancelled instead."""
        self._execute(
            "UPDATE sr_jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, "
            "finished_at = CASE WHEN cancel_requested = 1 THEN ? ELSE NULL END, "
            "expires_at = CASE WHEN cancel_requested = 1 THEN ? ELSE NULL END, "
            "owner = NULL, lease_until = NULL, frames_done = 0, attempts = attempts - 1 "
            "WHERE id = ? AND owner = ? AND state = 'running'",
            (now, now + retention_s, job_id, owner),
        )

    def cancel(self, job_id: str, now: float, retention_s: float) -> Job | None:
        """Cancel a queued job at once; ask the replica running a job to stop it."""
        self._execute(
            "UPDATE sr_jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?, expires_at = ? "
            "WHERE id = ? AND state = 'queued'",
            (now, now + retention_s, job_id),
        )
        self._execute("UPDATE sr_jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        self._execute("DELETE FROM sr_jobs WHERE id = ?", (job_id,))

    def expired(self, now: float) -> list[str]:
        """Finished jobs past their retention: their rows go now; the caller removes their files."""
        rows = self._execute("DELETE FROM sr_jobs WHERE expires_at < ? RETURNING id", (now,))
        return [row[0] for row in rows]

    def ids(self) -> set[str]:
        return {row[0] for row in self._execute("SELECT id FROM sr_jobs")}


def _interrupted(max_attempts: int) -> dict[str, Any]:
    return JobInterrupted(
        f"the job was interrupted {max_attempts} time(s) (its replica stopped without finishing it; "
        "SR_JOB_MAX_ATTEMPTS)"
    ).problem()


class SqliteJobStore(JobStore):
    """One file, WAL (readers never wait for the writer), one replica."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every statement is its own transaction, and each of ours is one
        # statement, so a claim (UPDATE ... WHERE id = (SELECT ...)) is atomic.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
