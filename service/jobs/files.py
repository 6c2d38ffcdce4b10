"""A job's files under ``SR_JOBS_DIR``: its input while it waits or runs, its result once it
has succeeded. Several replicas share the directory (a volume they all mount); a job's files
are named by its id alone, so any replica finds them."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

# uuid4().hex: also what a route accepts, so no path from a URL leaves this directory.
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class JobFiles:
    def __init__(self, root: Path) -> None:
        self.root = root / "data"
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def input(self, job_id: str) -> Path:
        return self.folder(job_id) / "input"

    def result(self, job_id: str) -> Path:
        return self.folder(job_id) / "result"

    def partial(self, job_id: str, claim: str) -> Path:
        """Where one claim of the job writes its result; renamed to :meth:`result` once
        complete, so a reader never sees half a video. Named for the claim: a replica that
        lost its lease and has not noticed yet never writes into the new owner's file."""
        return self.folder(job_id) / f"result.{hashlib.sha256(claim.encode()).hexdigest()[:16]}.part"

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def remove_input(self, job_id: str, claim: str) -> None:
        self.input(job_id).unlink(missing_ok=True)
        self.partial(job_id, claim).unlink(missing_ok=True)

    def idle_s(self, job_id: str) -> float:
        """Seconds since anything in the job's folder last changed."""
        folder = self.folder(job_id)
        try:
            times = [p.stat().st_mtime for p in (folder, *folder.iterdir())]
        except FileNotFoundError:  # removed meanwhile (a refused upload): nothing to sweep
            return 0.0
        return time.time() - max(times)

    def folders(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if JOB_ID.fullmatch(p.name)}
