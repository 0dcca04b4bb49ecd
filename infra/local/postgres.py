"""The local PostgreSQL 15 + pgvector cluster of the memory store (docs/memory.md).

One code path for ``sovereign up`` (infra/local/stack.py) and the tests' throwaway clusters
(tests/memory/conftest.py): :class:`Cluster` initialises a data directory (data checksums,
scram-sha-256, the superuser's password from a file), builds the server's command line with
:data:`SERVER_SETTINGS`, provisions the gateway's role and database with the ``vector``
extension, and stops the server with ``pg_ctl stop -m fast``.

initdb and postgres refuse to run as root (PostgreSQL 15 docs, "Creating a Database Cluster":
"the PostgreSQL server must be run as an unprivileged user"); when this process is root, they
run as Debian's ``postgres`` user (created by the postgresql-15 package), through ``setpriv``
(util-linux), which execs the server in place: the PID recorded is the postmaster's own.

The WAL settings are those the erasure proof needs (gateway/memory/rights.py): with
``wal_recycle = off`` a WAL segment no longer needed is unlinked, not renamed for reuse with its
old contents; ``wal_keep_size = 0`` keeps none beyond the last checkpoint's redo point;
``min_wal_size``/``max_wal_size`` small, so the few segments there are turn over quickly.
``full_page_writes`` stays on (the default): after each checkpoint the first change to a page
writes the whole page into WAL, so WAL written after the erasure's checkpoint holds whole
pages of the rewritten tables, which no longer hold the erased rows.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.files import write_private
from infra.local.process import ComponentError

PG_BIN = Path(os.environ.get("SOVEREIGN_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"  # Debian's, created by the postgresql-15 package
SUPERUSER = "sovereign_admin"
GATEWAY_ROLE = "sovereign_gateway"
DATABASE = "sovereign"

#: the server's settings (postgres -c name=value), shared by the local stack and the tests
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",  # loopback only; the port comes from the profile
    "password_encryption": "scram-sha-256",
    "wal_level": "replica",
    "wal_recycle": "off",  # old segments are unlinked, never reused with their old contents
    "wal_keep_size": "0",
    "min_wal_size": "32MB",
    "max_wal_size": "64MB",
    "full_page_writes": "on",  # the default, said explicitly (see the module docstring)
    "max_connections": "40",
    "shared_buffers": "64MB",
    "fsync": "on",
    "log_min_messages": "warning",
    "log_statement": "none",  # statements carry (tokenised) texts: never logged
    "log_min_error_statement": "panic",  # ... nor the statement of a failed one
    "logging_collector": "off",  # stderr goes to the component's log file
}


class PostgresError(ComponentError):
    pass


def _binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise PostgresError(
            f"postgres: {path} is missing; run scripts/bootstrap.sh (it installs postgresql-15 "
            "and builds pgvector 0.8.0)"
        )
    return str(path)


def pwd_user_uid() -> int:
    """The uid of the OS user the server runs as when this process is root."""
    return pwd.getpwnam(OS_USER).pw_uid


def vector_installed() -> bool:
    """pgvector 0.8.0 is installed for PostgreSQL 15 (bootstrap.sh builds it)."""
    try:
        out = subprocess.run(
            [_binary("pg_config"), "--sharedir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (PostgresError, subprocess.CalledProcessError):
        return False
    control = Path(out) / "extension" / "vector.control"
    return control.exists() and "default_version = '0.8.0'" in control.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Cluster:
    """A cluster in *data_dir* on host:port, its socket in *socket_dir*, its passwords in *secrets_dir*."""

    data_dir: Path
    socket_dir: Path
    secrets_dir: Path
    host: str = "127.0.0.1"
    port: int = 5433

    # -- who runs it ----------------------------------------------------------------------
    @staticmethod
    def run_as() -> pwd.struct_passwd | None:
        """The OS user the server runs as: None (this process's) unless this process is root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresError(
                f"postgres: running as root, and there is no OS user {OS_USER!r} to run PostgreSQL "
                "as (initdb and postgres refuse root); install postgresql-15 (scripts/bootstrap.sh)"
            ) from None

    def _as_user(self, argv: list[str]) -> list[str]:
        user = self.run_as()
        if user is None:
            return argv
        return [
            shutil.which("setpriv") or "/usr/bin/setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]

    def _own(self, path: Path, mode: int = 0o700) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        user = self.run_as()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
            for parent in path.parents:  # the server's user must reach its directories
                if parent == Path("/") or os.stat(parent).st_mode & 0o001:
                    continue
                raise PostgresError(
                    f"postgres: the server runs as {OS_USER!r}, which cannot reach {path} "
                    f"({parent} is not searchable by others: chmod o+x {parent}, or put state_dir "
                    "elsewhere)"
                )

    # -- files ----------------------------------------------------------------------------
    @property
    def admin_password_file(self) -> Path:
        return self.secrets_dir / "postgres-admin.password"

    @property
    def gateway_password_file(self) -> Path:
        return self.secrets_dir / "postgres-gateway.password"

    @property
    def dsn_file(self) -> Path:
        """The gateway's DSN (gateway setting memory.dsn_file), mode 0600."""
        return self.secrets_dir / "memory.dsn"

    def _password(self, path: Path) -> str:
        if not path.exists():
            write_private(path, secrets.token_urlsafe(24))
        return path.read_text(encoding="utf-8").strip()

    def dsn(self, user: str = GATEWAY_ROLE, database: str = DATABASE) -> str:
        password = self._password(
            self.admin_password_file if user == SUPERUSER else self.gateway_password_file
        )
        return f"host={self.host} port={self.port} dbname={database} user={user} password={password}"

    # -- life cycle -----------------------------------------------------------------------
    def initdb(self) -> bool:
        """Initialise the data directory unless it holds a cluster already; True if it did."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self._own(self.data_dir)
        password = self._password(self.admin_password_file)
        # initdb reads the superuser's password from a file its user can read: a private copy
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        write_private(pwfile, password)
        user = self.run_as()
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            argv = [
                _binary("initdb"),
                "--pgdata", str(self.data_dir),
                "--username", SUPERUSER,
                "--pwfile", str(pwfile),
                "--auth", "scram-sha-256",
                "--data-checksums",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
            ]  # fmt: skip
            done = subprocess.run(self._as_user(argv), capture_output=True, text=True)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise PostgresError(f"postgres: initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return True

    def argv(self) -> list[str]:
        """The server's command line (run by the stack's or the tests' supervisor)."""
        self._own(self.socket_dir, 0o700)
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        settings["listen_addresses"] = self.host
        argv = [_binary("postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return self._as_user(argv)

    def ready(self) -> bool:
        done = subprocess.run(
            [_binary("pg_isready"), "-q", "-h", self.host, "-p", str(self.port)], capture_output=True
        )
        return done.returncode == 0

    def provision(self) -> None:
        """The gateway's role (login, scram) and database, the vector extension; idempotent.
        The role owns the store's tables; CHECKPOINT (pg_checkpoint) and pg_switch_wal() are
        granted for the erasure's last step (gateway/memory/rights.py)."""
        import psycopg
        from psycopg import sql

        gateway_password = self._password(self.gateway_password_file)
        with psycopg.connect(self.dsn(SUPERUSER, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (GATEWAY_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(GATEWAY_ROLE), sql.Literal(gateway_password)
                )
            )
            conn.execute(sql.SQL("GRANT pg_checkpoint TO {}").format(sql.Identifier(GATEWAY_ROLE)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(DATABASE), sql.Identifier(GATEWAY_ROLE)
                    )
                )
        with psycopg.connect(self.dsn(SUPERUSER, DATABASE), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            # a function's privileges are the database's: granted here, where the role works
            conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {}").format(
                    sql.Identifier(GATEWAY_ROLE)
                )
            )
            conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(GATEWAY_ROLE)))
        write_private(self.dsn_file, self.dsn())

    def stop(self) -> bool:
        """``pg_ctl stop -m fast``: False if no server ran in the data directory."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        done = subprocess.run(
            self._as_user(
                [_binary("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60"]
            ),
            capture_output=True,
            text=True,
        )
        return done.returncode == 0
