"""A real PostgreSQL for the tests: Debian's binaries, a throw-away cluster on a free port.

Without the binaries the tests that need it skip, unless SR_REQUIRE_POSTGRES=1 (CI), where
they fail. As root (CI), the server runs as the ``postgres`` user the Debian package creates:
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import free_port

REQUIRED = os.environ.get("SR_REQUIRE_POSTGRES") == "1"


def _bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    return None


def _missing() -> str | None:
    if _bindir() is None:
        return "PostgreSQL binaries not found (Debian postgresql: /usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run PostgreSQL as"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://...`` of a fresh server, stopped at the end of the session."""
    missing = _missing()
    if missing is not None:
        if REQUIRED:
            pytest.fail(f"{missing}; SR_REQUIRE_POSTGRES=1")
        pytest.skip(f"{missing}; SR_REQUIRE_POSTGRES=1 fails instead")
    bindir = _bindir()
    assert bindir is not None
    # Outside pytest's own tmp folders: those are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="sr-test-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "sr", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    try:
        yield f"postgresql://sr@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
