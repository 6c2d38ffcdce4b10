"""Job state in PostgreSQL (``SR_JOBS_DATABASE_URL=postgresql://...``), for several replicas:
any of them answers a job's status poll, and the results live on a volume they all mount."""

from __future__ import annotations

import threading
from typing import Any

from service.jobs.store import SCHEMA, JobStore


class PostgresJobStore(JobStore):
    # Two replicas claiming at once each take a different row instead of waiting for the other.
    _claim_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        import psycopg

        self._url = url
        self._psycopg = psycopg
        self._lock = threading.Lock()
        self._db = self._connect()
        try:
            # Replicas starting together each try to create the table: one lock makes it one.
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(7317)")
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self._db.execute(statement)
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> Any:
        # Bounded waits: a database that stops answering (a partition, not a refusal) is found
        # out in seconds by keepalives and the TCP user timeout, and no statement runs for
        # more than 5 s, so the one database thread is never stuck for the kernel's minutes.
        return self._psycopg.connect(
            self._url, autocommit=True, connect_timeout=5, keepalives=1, keepalives_idle=5,
            keepalives_interval=2, keepalives_count=2, tcp_user_timeout=10_000,
            options="-c statement_timeout=5000",
        )

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("?", "%s")
        with self._lock:
            try:
                return self._run(sql, params)
            except self._psycopg.OperationalError:
                # The server restarted or the connection dropped: one fresh connection, one retry.
                # Updates are guarded by state and owner, so a statement that had taken effect
                # does nothing twice; at worst a claim whose answer was lost, which its lease
                # hands back. A repeated INSERT fails on its key and reaches the caller.
                self._db.close()
                self._db = self._connect()
                return self._run(sql, params)

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cursor = self._db.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    def close(self) -> None:
        with self._lock:
            self._db.close()
