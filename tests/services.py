"""Services of a test's or bench's own, that it can kill and restart: a PostgreSQL database or a whole
PostgreSQL server, and gunicorn in a process group of its own. The shared server on 5432 is never
restarted, and nothing is dropped or stopped that was not made here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.gunicorn import ROOT, _wait_until_answering, free_port
from tests.processes import ProcessGroup

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


@contextmanager
def own_postgres_database(prefix: str, server_url: str | None = None, template: str = "template1") -> Iterator[str]:
    """The URL of a new database, a copy of `template`, on the server of `server_url` (default:
    DATABASE_URL's server, else the local one); dropped, with its connections, when the block ends."""
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlsplit(server_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER)
    name = unique_name(prefix)
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def as_postgres_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """A PostgreSQL 15 server of this run's own: a cluster in a temporary directory on a free port."""

    def __init__(self, directory: str):
        self.directory = Path(directory) / "postgres"
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]), check=True,
                       stdout=subprocess.DEVNULL)

    def create(self) -> None:
        self.directory.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chmod(self.directory.parent, 0o755)
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(as_postgres_user([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                         "--auth=trust", "--no-instructions"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c max_connections=100"
        self.pg_ctl("-o", options, "-l", str(self.directory / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")


@contextmanager
def own_postgres_server(directory: str) -> Iterator[PostgresServer]:
    server = PostgresServer(directory)
    server.create()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(server.directory, ignore_errors=True)


def product_env(directory: str, database_url: str, broker_url: str | None) -> dict:
    """The environment of Causeway's processes as production runs them (DEBUG off), on `database_url`,
    with `directory` as their data directory."""
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "false", "HTTPS": "false", "SECRET_KEY": "chaos",
           "CAUSEWAY_DATA_DIR": directory, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    return env


def manage(env: dict, *args: str) -> str:
    """The output of `manage.py <args>` run in `env`; its error output if it fails."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


class Web(ProcessGroup):
    """gunicorn governance.wsgi on a fixed port in a process group of its own, so that SIGKILL takes the
    workers with the master, as a container kill or the OOM killer would."""

    def __init__(self, env: dict, directory: str):
        self.env, self.directory = env, directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log_path = Path(self.directory) / f"gunicorn{self.starts}.log"
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "governance.wsgi", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "3", "--keep-alive", "30", "--timeout", "120"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_until_answering(self.process, self.port, log_path)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # to the master: its workers finish the request in hand

    def sigterm(self) -> None:
        self.terminate()
        self.process.wait(60)


@contextmanager
def web_on(database_url: str, directory: str, broker_url: str | None = None) -> Iterator[tuple[Web, dict, str]]:
    """(gunicorn, its environment, an ingest key) on a migrated `database_url`, until the block ends."""
    env = product_env(directory, database_url, broker_url)
    manage(env, "migrate", "-v0")
    key = manage(env, "create_ingest_key", "chaos").strip()
    web = Web(env, directory)
    web.start()
    try:
        yield web, env, key
    finally:
        web.stop()
