"""A PostgreSQL database of a bench's own: a unique name, created at the start and dropped at the
end. A bench never drops or touches a database it did not create."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


@contextmanager
def own_postgres_database(prefix: str, server_url: str | None = None) -> Iterator[str]:
    """The URL of a new database on the server of `server_url` (default: DATABASE_URL's server,
    else the local one); dropped, with its connections, when the block ends."""
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlsplit(server_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER)
    name = unique_name(prefix)
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
