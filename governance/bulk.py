"""Writing many rows at once, where Django's bulk helpers cost more than the work."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models


def rows_update(objects: Sequence[models.Model], field_names: Sequence[str]) -> None:
    """What `Model.objects.bulk_update(objects, field_names)` writes, as one prepared UPDATE run per
    row (psycopg pipelines them; SQLite runs them in one statement cache). bulk_update builds a
    CASE WHEN per field and row: for thousands of rows that cost more than the rest of the work."""
    if not objects:
        return
    model = type(objects[0])
    fields = [model._meta.get_field(name) for name in field_names]
    assignments = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
    pk = model._meta.pk
    rows = [[f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields]
            + [pk.get_db_prep_value(obj.pk, connection)] for obj in objects]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {connection.ops.quote_name(model._meta.db_table)} SET {assignments} "
                           f"WHERE {connection.ops.quote_name(pk.column)} = %s", rows)
