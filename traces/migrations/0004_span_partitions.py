"""On PostgreSQL the span table becomes partitioned by RANGE on start_ns, one partition per UTC day and
a DEFAULT partition for the rest (traces.partitions keeps the days coming and drops expired ones), so
that retention drops whole days instead of deleting rows. SQLite keeps its plain table.

A partitioned table's primary key must hold the partition key: it becomes (project_id, trace_id,
span_id, start_ns). The model keeps (project, trace_id, span_id) as its key, which stays unique: ingest
stores a span only if no span of its trace has its id (traces.ingest, under the trace's row lock), and
a retried span carries its start_ns anyway. The stored rows are copied over; the primary key, the
foreign key and the indexes are rebuilt after the copy, under their old names (partitioned indexes).
"""

from datetime import UTC, datetime, timedelta

from django.db import migrations

TABLE = "traces_span"
KEY = ("project_id", "trace_id", "span_id")
NS_PER_DAY = 86400 * 10**9
DAYS_AHEAD = 7  # as traces.partitions.DAYS_AHEAD


def _constraints_and_indexes(cursor):
    """(primary key name, [foreign key (name, definition)], [index definition]) of the span table."""
    cursor.execute("SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE conrelid = %s::regclass AND contype IN ('p', 'f')", [TABLE])
    constraints = cursor.fetchall()
    primary = next(name for name, kind, _ in constraints if kind == "p")
    foreign = [(name, definition) for name, kind, definition in constraints if kind == "f"]
    cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname <> %s", [TABLE, primary])
    return primary, foreign, [row[0] for row in cursor.fetchall()]


def _days_to_create(apps) -> list[datetime]:
    # The days that can hold spans still within retention, and a week ahead; older spans go to DEFAULT.
    Project = apps.get_model("governance", "Project")
    longest = max(Project.objects.values_list("retention_days", flat=True), default=14)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [today + timedelta(days=n) for n in range(-longest, DAYS_AHEAD + 1)]


def _rebuild(schema_editor, *, partitioned_days: list[datetime] | None) -> None:
    """Replace the span table by a copy, partitioned by day when `partitioned_days` is given."""
    with schema_editor.connection.cursor() as cursor:
        primary, foreign, indexes = _constraints_and_indexes(cursor)
        new = f"{TABLE}_rebuilt"
        partitioning = " PARTITION BY RANGE (start_ns)" if partitioned_days is not None else ""
        cursor.execute(f"CREATE TABLE {new} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS){partitioning}")
        if partitioned_days is not None:
            cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {new} DEFAULT")
            for day in partitioned_days:
                lower = int(day.timestamp()) * 10**9
                cursor.execute(f"CREATE TABLE {TABLE}_p{day:%Y%m%d} PARTITION OF {new} "
                               f"FOR VALUES FROM ({lower}) TO ({lower + NS_PER_DAY})")
        cursor.execute(f"INSERT INTO {new} SELECT * FROM {TABLE}")
        cursor.execute(f"DROP TABLE {TABLE}")
        cursor.execute(f"ALTER TABLE {new} RENAME TO {TABLE}")
        key = KEY + ("start_ns",) if partitioned_days is not None else KEY
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {primary} PRIMARY KEY ({', '.join(key)})")
        for name, definition in foreign:
            cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
        for definition in indexes:
            cursor.execute(definition)


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        _rebuild(schema_editor, partitioned_days=_days_to_create(apps))


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        _rebuild(schema_editor, partitioned_days=None)


class Migration(migrations.Migration):

    dependencies = [
        ("governance", "0002_api_tokens_hashed"),
        ("traces", "0003_pipeline_states"),
    ]

    operations = [migrations.RunPython(partition, unpartition)]
