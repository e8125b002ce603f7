"""A real PostgreSQL server for the tests: Debian's package, started by ``initdb`` and
``pg_ctl`` as an unprivileged user on a loopback port, at SERIALIZABLE by default
(the level the durable store uses, and the only one CockroachDB offers).

``make testenv`` installs Debian's ``postgresql`` when it is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.net import free_port


def _bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        pytest.fail("PostgreSQL is not installed: run `make testenv`")
    return Path(found[-1]).parent


def _user() -> str | None:
    """The unprivileged user to run the server as (None: we are one already)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("no unprivileged user to run PostgreSQL as (postgres or nobody)")


@dataclass
class PostgresServer:
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentmem-pg-")))
    user: str | None = field(default_factory=_user)
    #: The address it listens on (also trusted for connections from its /16).
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://agentmem@{self.host}:{self.port}/agentmem"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def init(self) -> PostgresServer:
        if self.user is not None:
            shutil.chown(self.workdir, self.user)
        bindir = _bindir()
        self._run(
            str(bindir / "initdb"), "-D", str(self.data), "-U", "agentmem",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        if self.host != "127.0.0.1":
            network = ".".join(self.host.split(".")[:2]) + ".0.0/16"
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {network} trust\n")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{self.host}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.workdir}'\n"
                "default_transaction_isolation = 'serializable'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        self.start()
        self._run(str(bindir / "createdb"), "-h", str(self.workdir), "-p", str(self.port),
                  "-U", "agentmem", "agentmem")  # fmt: skip
        return self

    def start(self) -> None:
        self._run(
            str(_bindir() / "pg_ctl"), "-D", str(self.data), "-l", str(self.workdir / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(_bindir() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
            check=False,
        )  # fmt: skip

    def running(self) -> bool:
        result = self._run(str(_bindir() / "pg_ctl"), "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def destroy(self) -> None:
        self.stop("immediate")
        for _ in range(50):
            if not self.running():
                break
            time.sleep(0.1)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(statement.encode())
            return list(cursor.fetchall()) if cursor.description else []
