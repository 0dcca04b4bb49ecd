"""`sovereign up`'s PostgreSQL step (infra/local/stack.py LocalStack._postgres) and `down`, on
a throwaway state folder and free port: data checksums, scram-sha-256 only, loopback only, the
socket in the run folder, the erasure's WAL settings, the role and the extension, the DSN file
0600, the server not running as root; `down` stops it with pg_ctl (a clean shutdown)."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import psycopg
import pytest

from infra.local import postgres
from infra.local.process import alive
from infra.local.profile import LocalProfile, Ports
from infra.local.stack import LocalStack, read_state
from tests.support import free_port, passable_tmp

pytestmark = pytest.mark.skipif(
    not (postgres.PG_BIN / "postgres").exists() or not postgres.vector_installed(),
    reason="PostgreSQL 15 with pgvector 0.8.0 is not installed: run scripts/bootstrap.sh",
)


def test_up_step_starts_a_hardened_cluster_and_down_stops_it(tmp_path: Path) -> None:
    state = passable_tmp(tmp_path) / "state"
    port = free_port()
    profile = LocalProfile(state_dir=state, ports=Ports(postgres=port))
    stack = LocalStack(profile, out=io.StringIO())
    try:
        stack._postgres()
        comp = read_state(stack.paths)["components"]["postgres"]
        assert alive(comp["pid"], comp["start_ticks"])
        if os.geteuid() == 0:  # initdb and postgres refuse root: they run as Debian's postgres user
            assert os.stat(f"/proc/{comp['pid']}").st_uid == postgres.pwd_user_uid()
        dsn_file = state / "secrets" / "memory.dsn"
        assert dsn_file.stat().st_mode & 0o777 == 0o600
        with psycopg.connect(dsn_file.read_text()) as conn:
            show = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in (
                    "data_checksums", "password_encryption", "listen_addresses", "wal_recycle",
                    "wal_keep_size", "full_page_writes", "log_statement",
                )
            }  # fmt: skip
            assert conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone() == ("0.8.0",)
            assert conn.execute("SELECT current_user").fetchone() == (postgres.GATEWAY_ROLE,)
        assert show == {
            "data_checksums": "on", "password_encryption": "scram-sha-256", "listen_addresses": "127.0.0.1",
            "wal_recycle": "off", "wal_keep_size": "0", "full_page_writes": "on",
            "log_statement": "none",
        }  # fmt: skip
        assert (state / "run" / "postgres" / f".s.PGSQL.{port}").is_socket()  # the run folder, not /var/run
        hba = (state / "postgres" / "pg_hba.conf").read_text()
        rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
        assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)  # no trust, no peer
        # a wrong password is refused
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                f"host=127.0.0.1 port={port} dbname=sovereign user={postgres.GATEWAY_ROLE} password=x"
            )
        # loopback only: not on this machine's other addresses
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(2)
                s.connect((other, port))
        # `up` again on the same data: no second initdb, the same role, provisioning idempotent
        assert stack._cluster().initdb() is False
        stack._cluster().provision()
    finally:
        stopped = stack.down()
    assert stopped == ["postgres"]
    assert not alive(comp["pid"], comp["start_ticks"])
    assert not (state / "postgres" / "postmaster.pid").exists()  # pg_ctl's clean shutdown
