"""The embedded Celery broker: kombu's SQLAlchemy transport on a SQLite file of its own.

A consumer claims a message inside BEGIN IMMEDIATE (kombu's own `_get`), so no two
processes take the same message and none reads a half-written one. kombu's filesystem
transport, used before, did both: its reader does not take the writer's lock, and the
worker died on an empty file (JSONDecodeError) within minutes of continuous traffic.

What kombu's transport leaves to the deployment, set here:
- WAL, so publishers (gunicorn, beat) do not queue behind the consumer's reads;
- a short polling interval: with late acknowledgement the worker holds only as many
  messages as it has pool processes, and kombu's default (1 s) sleeps between them;
- kombu keeps claimed messages as invisible rows that every claim then scans past; they
  are deleted every few hundred claims (the in-flight ones live in the worker's memory);
- processes that start together on a new file race to create its tables and queue rows: the
  losers retry, or read the winner's row.
"""

from __future__ import annotations

import time

from kombu.transport import sqlalchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError

COMPACT_EVERY = 500


def _set_wal(connection, _record) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


class Channel(sqlalchemy.Channel):
    claims = 0

    def _engine_from_config(self):
        # A publisher waits up to 30 s for a consumer's claim (SQLite's default is 5 s).
        engine = create_engine(self.connection.client.hostname, connect_args={"timeout": 30})
        event.listen(engine, "connect", _set_wal)
        return engine

    def _open(self):
        # kombu creates its tables at first use; processes starting together on a new file race
        # to do so, and the losers' CREATE TABLE fails. Once the tables exist, create_all passes.
        for attempt in range(5):
            try:
                return super()._open()
            except OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _get_or_create(self, queue):
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            # Another process (web, beat, the worker: they start together) created the queue's
            # row between kombu's look-up and its insert; kombu only expects OperationalError.
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()

    def _get(self, queue):
        payload = super()._get(queue)
        Channel.claims += 1
        if Channel.claims % COMPACT_EVERY == 0:
            self.session.execute(text(f"DELETE FROM {self.message_tablename} WHERE visible = 0"))
            self.session.commit()
        return payload


class Transport(sqlalchemy.Transport):
    Channel = Channel
    polling_interval = 0.05
