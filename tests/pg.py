"""A real PostgreSQL 15 server for the tests (Debian's `postgresql` package), in a temp dir.

`initdb` and `pg_ctl` refuse to run as root, so under root (CI) they run as the `postgres`
system user through `runuser`; the data directory is made theirs. Trust authentication on
127.0.0.1 and a private socket directory; the server is stopped (fast) at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import skip_or_fail
from standin import free_port

PG_BIN = Path(os.environ.get("R2_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").is_file():
        skip_or_fail(f"PostgreSQL not found at {PG_BIN} (apt-get install postgresql; "
                     "scripts/install.sh does)")
    base = Path(tempfile.mkdtemp(prefix="r2-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = PostgresServer(base, data, free_port())
    try:
        _run(_as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "r2",
                        "--no-sync"]), base)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout)[-2000:]}")


class PostgresServer:
    def __init__(self, base: Path, data: Path, port: int) -> None:
        self.base, self.data, self.port = base, data, port

    @property
    def url(self) -> str:
        return f"postgresql://r2@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
                        "-l", str(self.base / "server.log"), "-w", "start"]), self.base)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode,
                                  "-w", "stop"]), capture_output=True, timeout=120, cwd=self.base)
