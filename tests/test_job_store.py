"""The job store's contract, held by both stores: SQLite (one replica) and a real PostgreSQL
(several replicas); and two servers sharing one PostgreSQL and one results folder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.imaging.synthetic import synthetic_video
from service.jobs.runner import open_store
from service.jobs.store import JobStore, SqliteJobStore

from .helpers import assert_problem, image_bytes, wait_until
from .postgres import postgres_url  # noqa: F401 - the fixture
from .test_jobs import finished, slow_network, submit

LEASE = 30.0
KEEP = 600.0  # retention of finished jobs


def _fresh_postgres(url: str) -> JobStore:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS sr_jobs")
    return open_store(url, Path("unused"))


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, JobStore]]:
    """Two connections to one database: two replicas' views of the same jobs."""
    if request.param == "sqlite":
        pair: tuple[JobStore, JobStore] = (SqliteJobStore(tmp_path / "jobs.sqlite3"),
                                           SqliteJobStore(tmp_path / "jobs.sqlite3"))
    else:
        url = request.getfixturevalue("postgres_url")
        pair = (_fresh_postgres(url), open_store(url, tmp_path))
    yield pair
    for store in pair:
        store.close()


def test_a_job_is_queued_with_its_parameters_and_claimed_oldest_first(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    first = a.create("a" * 32, {"asked": {"scale": 3}, "video": True}, 240, 1234, now=100.0)
    a.create("b" * 32, {}, 1, 10, now=101.0)
    assert first.state == "queued" and first.params == {"asked": {"scale": 3}, "video": True}
    assert (first.frames_total, first.input_bytes, first.attempts) == (240, 1234, 0)
    assert b.counts() == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}

    claimed = b.claim("replica-b", now=102.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP)
    assert claimed is not None and claimed.id == "a" * 32
    assert (claimed.state, claimed.owner, claimed.attempts, claimed.started_at) == ("running", "replica-b", 1, 102.0)
    second = a.claim("replica-a", now=102.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP)
    assert second is not None and second.id == "b" * 32
    assert a.claim("replica-a", now=103.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is None


def test_the_owner_renews_its_lease_with_progress_and_records_the_outcome(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    job = a.create("c" * 32, {}, 100, 1, now=0.0)
    assert a.claim("A", now=1.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is not None
    beat = a.heartbeat(job.id, "A", 40, 100, now=20.0, lease_s=LEASE)
    assert beat.owned and not beat.cancel
    assert not b.heartbeat(job.id, "B", 1, 100, now=20.0, lease_s=LEASE).owned  # not B's job
    seen = b.get(job.id)
    assert seen is not None and seen.frames_done == 40 and seen.lease_until == 50.0
    # Renewed at 20 s, so at 45 s (past the first lease) nobody else may take it.
    assert b.claim("B", now=45.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is None

    assert not b.finish(job.id, "B", "succeeded", now=60.0, retention_s=10.0, result={"bytes": 1})
    assert a.finish(job.id, "A", "succeeded", now=60.0, retention_s=10.0, result={"bytes": 1}, frames_done=100)
    done = b.get(job.id)
    assert done is not None and done.finished and done.result == {"bytes": 1} and done.frames_done == 100
    assert (done.finished_at, done.expires_at, done.owner) == (60.0, 70.0, None)
    assert b.expired(now=69.0) == [] and a.expired(now=71.0) == [job.id]
    assert b.get(job.id) is None


def test_an_interrupted_job_is_claimed_again_then_failed_past_the_attempts(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    job = a.create("d" * 32, {}, 1, 1, now=0.0)
    assert a.claim("A", now=1.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is not None
    # A died: its lease (until 31 s) runs out; B runs the job again from the start.
    again = b.claim("B", now=32.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP)
    assert again is not None and again.id == job.id and again.owner == "B" and again.attempts == 2
    assert not a.heartbeat(job.id, "A", 1, 1, now=33.0, lease_s=LEASE).owned  # A, back, must stop
    # B dies too: two starts were allowed, so the job fails instead of a third.
    assert a.claim("A", now=70.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is None
    failed = a.get(job.id)
    assert failed is not None and failed.state == "failed" and failed.error is not None
    assert failed.error["code"] == "job_interrupted" and failed.error["status"] == 500
    # Ended, so it expires like any finished job.
    assert failed.expires_at == 70.0 + KEEP and failed.owner is None
    assert a.expired(now=70.0 + KEEP + 1) == [job.id]


def test_a_stopping_replica_hands_its_job_back_without_spending_an_attempt(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    job = a.create("e" * 32, {}, 1, 1, now=0.0)
    assert a.claim("A", now=1.0, lease_s=LEASE, max_attempts=1, retention_s=KEEP) is not None
    a.release(job.id, "A", now=1.5, retention_s=KEEP)
    back = b.claim("B", now=2.0, lease_s=LEASE, max_attempts=1, retention_s=KEEP)
    assert back is not None and back.attempts == 1 and back.owner == "B"


def test_cancel_stops_a_queued_job_at_once_and_asks_the_owner_of_a_running_one(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    running = a.create("f" * 32, {}, 1, 1, now=0.0)
    queued = a.create("0" * 32, {}, 1, 1, now=0.5)
    assert a.claim("A", now=1.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) == a.get(running.id)
    asked = b.cancel(running.id, now=2.0, retention_s=5.0)
    assert asked is not None and asked.state == "running" and asked.cancel_requested
    assert a.heartbeat(running.id, "A", 0, 1, now=3.0, lease_s=LEASE).cancel  # its owner learns it
    cancelled = b.cancel(queued.id, now=2.0, retention_s=5.0)
    assert cancelled is not None and cancelled.state == "cancelled" and cancelled.expires_at == 7.0
    assert a.claim("A", now=3.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is None


def test_a_deleted_job_nobody_runs_any_more_ends_cancelled(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    orphan = a.create("1" * 32, {}, 1, 1, now=0.0)
    handed_back = a.create("2" * 32, {}, 1, 1, now=0.5)
    assert a.claim("A", now=1.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is not None  # orphan
    assert a.claim("A2", now=1.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is not None  # handed_back
    for job in (orphan, handed_back):
        b.cancel(job.id, now=2.0, retention_s=KEEP)
    # A2 stops cleanly before its next heartbeat: the job it hands back was deleted, so it ends.
    a.release(handed_back.id, "A2", now=3.0, retention_s=KEEP)
    ended = b.get(handed_back.id)
    assert ended is not None and ended.state == "cancelled" and ended.expires_at == 3.0 + KEEP
    # A died with the other: when its lease runs out it is cancelled, not left running.
    assert b.claim("B", now=40.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP) is None
    gone = b.get(orphan.id)
    assert gone is not None and gone.state == "cancelled" and gone.expires_at == 40.0 + KEEP
    assert b.counts()["running"] == b.counts()["queued"] == 0


def test_two_replicas_claiming_at_once_never_take_the_same_job(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    for i in range(40):
        a.create(f"{i:032x}", {}, 1, 1, now=float(i))
    taken: dict[str, list[str]] = {"A": [], "B": []}

    def drain(store: JobStore, owner: str) -> None:
        while (job := store.claim(owner, now=100.0, lease_s=LEASE, max_attempts=2, retention_s=KEEP)) is not None:
            taken[owner].append(job.id)

    threads = [threading.Thread(target=drain, args=(s, o)) for s, o in ((a, "A"), (b, "B"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = taken["A"] + taken["B"]
    assert len(claimed) == len(set(claimed)) == 40


def test_two_servers_on_one_postgres_share_their_jobs(make_client: Any, tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    _fresh_postgres(postgres_url).close()
    shared: dict[str, Any] = {"jobs_dir": tmp_path, "jobs_database_url": postgres_url, "video_chunk_frames": 2}
    a = make_client(run_batch=slow_network(0.2), **shared)
    b = make_client(run_batch=slow_network(0.2), **shared)
    # Submitted to one, polled and fetched from the other, whichever ran it.
    job = finished(b, submit(a, image_bytes(), "image/png", scale=2).headers["location"])
    assert job["state"] == "succeeded"
    assert b.get(job["result"]["url"]).content == a.get(job["result"]["url"]).content
    # A DELETE on either replica stops the job wherever it runs.
    location = submit(a, synthetic_video("mp4", frames=48, audio=False), "video/mp4", scale=2).headers["location"]
    wait_until(lambda: b.get(location).json()["progress"]["frames_done"] > 0, timeout_s=30)
    assert b.delete(location).status_code == 202
    job = finished(a, location, timeout_s=10)
    assert job["state"] == "cancelled" and job["progress"]["frames_done"] < 48
    assert_problem(b.get(f"{location}/result"), 409, "job_not_finished")
