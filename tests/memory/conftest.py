"""A throwaway real PostgreSQL 15 + pgvector cluster for the memory tests (session scope).

Started with the local stack's own code (infra/local/postgres.py Cluster: initdb options,
server settings, role, database, extension), on a free loopback port, as Debian's ``postgres``
user when the tests run as root. Skipped, naming the fix, where PostgreSQL 15 or pgvector 0.8.0
is not installed (scripts/bootstrap.sh installs both).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.local.postgres import PG_BIN, Cluster, vector_installed
from infra.local.process import spawn, stop, wait_ready
from tests.support import free_port, passable_tmp


@dataclass
class Postgres:
    cluster: Cluster
    dsn: str  # the gateway role's

    @property
    def data_dir(self) -> Path:
        return self.cluster.data_dir


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "postgres").exists() or not vector_installed():
        pytest.skip("PostgreSQL 15 with pgvector 0.8.0 is not installed: run scripts/bootstrap.sh")
    base = passable_tmp(Path("postgres"))  # the server's user (as root: postgres) must reach it
    cluster = Cluster(
        data_dir=base / "data", socket_dir=base / "run", secrets_dir=base / "secrets", port=free_port()
    )
    cluster.initdb()
    log = base / "postgres.log"
    proc, started = spawn("postgres", cluster.argv(), log)
    try:
        wait_ready("postgres", proc, cluster.ready, 60, log)
        cluster.provision()
        yield Postgres(cluster, cluster.dsn())
    finally:
        cluster.stop()
        stop(started.pid, started.start_ticks)
        shutil.rmtree(base, ignore_errors=True)
