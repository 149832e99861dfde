"""The span table's partitions by day on PostgreSQL: created ahead of the clock, dropped whole once expired.

On PostgreSQL traces_span is partitioned by RANGE on start_ns (migration 0004): one partition per UTC
day, named traces_span_pYYYYMMDD, and a DEFAULT partition for spans whose (client-sent, possibly wrong)
timestamps fall on a day without one. Expired days are dropped whole, which costs a catalog change
instead of deleting millions of rows (and vacuuming after them).

A partition is created only after the rows of its range have been moved out of the DEFAULT partition,
in one transaction: PostgreSQL refuses a new partition while the DEFAULT partition holds rows of its range
(a client clock days ahead puts them there). Partitions are created a week ahead, so this is rare and
the rows moved are few. On SQLite every function here does nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

TABLE = "traces_span"
DEFAULT_PARTITION = f"{TABLE}_default"
DAYS_AHEAD = 7  # partitions exist from today to today + DAYS_AHEAD, so spans rarely land in the default
NS_PER_DAY = 86400 * 10**9
# Waits no longer than this for ingest's locks: an ALTER waiting for its lock holds up every later
# insert behind it. A run that times out is retried (the lock error is transient) or redone next hour.
LOCK_TIMEOUT = "5s"
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


@dataclass(frozen=True)
class Partition:
    name: str
    lower_ns: int
    upper_ns: int  # exclusive


def day_start_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9


def day_of_ns(ns: int) -> date:
    return datetime.fromtimestamp(ns // 10**9, tz=UTC).date()


def partition_of_day(day: date) -> Partition:
    lower = day_start_ns(day)
    return Partition(f"{TABLE}_p{day:%Y%m%d}", lower, lower + NS_PER_DAY)


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def partitions_list() -> list[Partition]:
    """The span table's range partitions, oldest first (not the DEFAULT one)."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass", [TABLE])
        rows = cursor.fetchall()
    partitions = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        if match:
            partitions.append(Partition(name, int(match[1]), int(match[2])))
    return sorted(partitions, key=lambda p: p.lower_ns)


def _lock(cursor) -> None:
    """One maintainer at a time (beat may overlap a slow run, and a migration may run alongside)."""
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{TABLE} partitions"])


def partitions_create(days: list[date]) -> list[str]:
    """Create the partitions of `days` that do not exist yet; returns the names created."""
    if not is_partitioned():
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        _lock(cursor)
        existing = {p.name for p in partitions_list()}
        for day in days:
            partition = partition_of_day(day)
            if partition.name not in existing:
                _partition_attach(cursor, partition)
                created.append(partition.name)
    return created


def _partition_attach(cursor, partition: Partition) -> None:
    # The new table takes the rows of its range from the DEFAULT partition first; ATTACH then finds none
    # left there, creates the partition's share of the primary key and indexes, and locks the parent
    # table only in SHARE UPDATE EXCLUSIVE mode, so ingest goes on meanwhile (into other partitions).
    name = connection.ops.quote_name(partition.name)
    cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE start_ns >= %s AND start_ns < %s RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved", [partition.lower_ns, partition.upper_ns])
    cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ({partition.lower_ns}) "
                   f"TO ({partition.upper_ns})")


def partitions_drop_before(cutoff_ns: int) -> list[str]:
    """Drop the partitions whose every span started before `cutoff_ns`; returns the names dropped."""
    if not is_partitioned() or not any(p.upper_ns <= cutoff_ns for p in partitions_list()):
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        _lock(cursor)
        # PostgreSQL refuses to drop a table with foreign key checks pending ("pending trigger events"):
        # when called inside a transaction that wrote spans, run the checks deferred to its commit now.
        connection.check_constraints()
        expired = [p.name for p in partitions_list() if p.upper_ns <= cutoff_ns]
        for name in expired:
            cursor.execute(f"DROP TABLE {connection.ops.quote_name(name)}")
    return expired


def days_ahead(today: date) -> list[date]:
    return [today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)]


def days_between(first_ns: int, last_ns: int) -> list[date]:
    """The days from the one of `first_ns` to the one of `last_ns`, both included."""
    first, last = day_of_ns(first_ns), day_of_ns(last_ns)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def longest_retention_cutoff_ns(now: datetime) -> int | None:
    """Spans that started before this are past every project's retention (None: no project)."""
    from governance.models import Project

    longest = Project.objects.order_by("-retention_days").values_list("retention_days", flat=True).first()
    if longest is None:
        return None
    return int((now - timedelta(days=longest)).timestamp()) * 10**9


def expired_partitions_drop(now: datetime) -> list[str]:
    cutoff_ns = longest_retention_cutoff_ns(now)
    return partitions_drop_before(cutoff_ns) if cutoff_ns is not None else []
