"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a temp dir, a free loopback port.

`PgCluster.start()` finds the binaries (PATH, then /usr/lib/postgresql/*/bin), runs initdb with trust
authentication for a local `studio` superuser, starts the server on 127.0.0.1 with its socket in the
cluster's own folder, and `stop()` removes everything. PostgreSQL refuses to run as root: as root the
server runs as the `postgres` system user (created by Debian's package), which owns the temp dir.

`Unavailable` says why a cluster cannot be had (no binaries, no psycopg, no unprivileged user), so
callers can skip with that message.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from studio.errors import StudioError

SUPERUSER = "studio"
BINARIES = ("initdb", "pg_ctl")


class Unavailable(StudioError):
    """PostgreSQL cannot be started here (the message says why)."""


def find_bindir() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, else the newest Debian /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if all((Path(candidate) / name).is_file() for name in BINARIES):
            return Path(candidate)
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.bindir, self.root, self.port, self.run_as = bindir, root, port, run_as
        self.datadir = root / "data"

    @classmethod
    def start(cls) -> PgCluster:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"psycopg is not installed ({exc}); pip install -r requirements.txt") from exc
        bindir = find_bindir()
        if bindir is None:
            raise Unavailable("PostgreSQL's initdb/pg_ctl were not found (PATH or /usr/lib/postgresql/*/bin)")
        run_as = None
        root = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as exc:
                shutil.rmtree(root, ignore_errors=True)
                raise Unavailable("running as root and there is no 'postgres' user to run the server as") from exc
            os.chown(root, account.pw_uid, account.pw_gid)
            run_as = "postgres"
        cluster = cls(bindir, root, free_port(), run_as)
        try:
            cluster._initdb_and_start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _initdb_and_start(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) on the maintenance database."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True) as c:
            c.execute(sql)

    def create_database(self, name: str, template: str | None = None) -> str:
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
