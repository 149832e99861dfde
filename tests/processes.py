"""Celery worker and beat as their own processes, and a redis-server of a test's or bench's own: one way to
start, kill and restart them, for tests and benches.

Each process runs in a process group of its own, so that SIGKILL takes a prefork worker's pool process (the
one running the task) with its main process, as a container kill or the OOM killer would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.gunicorn import free_port

ROOT = Path(__file__).resolve().parent.parent


class ProcessGroup:
    """A child process that leads a process group of its own (start_new_session): SIGKILL goes to the whole
    group, a stop asks politely first and kills the group after `stop_seconds`."""

    process: subprocess.Popen | None = None
    stop_seconds: float = 30

    def sigkill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        """The polite stop: SIGTERM to the whole group (a subclass whose leader stops its children sends it
        to the leader alone)."""
        os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.sigkill()


class CeleryProcess(ProcessGroup):
    """`celery -A governance <args>`, restartable; each start logs to a file of its own in `log_dir`
    (`<name>.log`, then `<name>2.log`, ...)."""

    def __init__(self, env: dict, log_dir: str | Path, name: str, args: tuple[str, ...], *, stop_seconds: float = 30):
        self.env, self.log_dir, self.name, self.args = env, Path(log_dir), name, args
        self.stop_seconds = stop_seconds  # a warm shutdown waits for the task in hand; then SIGKILL
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / (f"{self.name}.log" if self.starts <= 1 else f"{self.name}{self.starts}.log")

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "governance", *self.args],
                                            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def pool_pids(self) -> list[int]:
        """A prefork worker's pool processes (the ones running tasks): the main process's children."""
        return [int(pid) for children in Path(f"/proc/{self.process.pid}/task").glob("*/children")
                for pid in children.read_text().split()]

    def sigkill_pool(self) -> None:
        """SIGKILL the pool processes only, as the OOM killer picks the one grown big on a task: the main process
        sees its task's process lost, gives the message back to the broker (late acknowledgement) and forks anew."""
        for pid in self.pool_pids():
            os.kill(pid, signal.SIGKILL)


def worker(env: dict, log_dir: str | Path, name: str = "worker", *, concurrency: int = 1, queues: str = "",
           stop_seconds: float = 30) -> CeleryProcess:
    """A worker as production runs it (prefork, every queue unless `queues` names some, as -Q does),
    named `<name>@host`."""
    return CeleryProcess(env, log_dir, name, ("worker", "--pool=prefork", f"--concurrency={concurrency}",
                                              "--loglevel=INFO", "--without-gossip", "--without-mingle",
                                              "--without-heartbeat", "-n", f"{name}@%h",
                                              *(("-Q", queues) if queues else ())),
                         stop_seconds=stop_seconds)


def beat(env: dict, log_dir: str | Path, *, loglevel: str = "INFO") -> CeleryProcess:
    return CeleryProcess(env, log_dir, "beat", ("beat", f"--loglevel={loglevel}", "--schedule",
                                                str(Path(log_dir) / "celerybeat-schedule")), stop_seconds=10)


@contextmanager
def running(*processes) -> Iterator[None]:
    """Starts the processes (CeleryProcess or RedisServer) in order; stops them in reverse at the end."""
    started = []
    try:
        for process in processes:
            process.start()
            started.append(process)
        yield
    finally:
        for process in reversed(started):
            process.stop()


def celery_env(**overrides: str) -> dict:
    """The environment of a worker or beat started from a test: the test database, the configured broker and
    data directory (the embedded broker lives there), and `overrides` (settings read from the environment)."""
    from django.conf import settings
    from django.db import connection

    from tests.conftest import _database_url

    return {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict), "PYTHONPATH": str(ROOT),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "CAUSEWAY_DATA_DIR": str(settings.DATA_DIR),
            **overrides}


def wait_for(condition, seconds: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {seconds:.0f} s: {what}")
        time.sleep(every)


# --- Redis ---------------------------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of its own on a fixed free port, without persistence (a restart empties it), restartable."""

    def __init__(self, directory: str | Path):
        self.directory = str(directory)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self._answering, 10, "redis-server to listen", every=0.1)

    def _answering(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def own_redis(directory: str | Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    with running(server):
        yield server


# --- holding a process up on the database --------------------------------------------------------------------------


@contextmanager
def writes_held(model) -> Iterator[None]:
    """No other connection writes to `model`'s table until the block ends: on PostgreSQL an EXCLUSIVE lock of
    the table (readers go on), on SQLite the one write lock (BEGIN IMMEDIATE: no other writer at all)."""
    from django.db import connection, transaction

    table, key = model._meta.db_table, model._meta.pk.column
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        else:
            cursor.execute(f"UPDATE {table} SET {key} = {key} WHERE 0")  # a write: SQLite's write lock is ours
        yield
