"""Writing many rows at once, where Django's bulk helpers cost more than the work."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models
from django.db.models.constants import OnConflict


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


def rows_insert(objects: Sequence[models.Model], *, ignore_conflicts: bool = False) -> None:
    """What `Model.objects.bulk_create(objects, ignore_conflicts=...)` writes (primary keys left to the
    database and not set on the objects), as one prepared INSERT run per row, pipelined as in
    rows_update. bulk_create compiles every value of every row through the ORM's SQL compiler: at
    the thousands of findings an analysis run stores, that was most of storing them."""
    if not objects:
        return
    model = type(objects[0])
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    quote = connection.ops.quote_name
    sql = (f"{connection.ops.insert_statement(on_conflict=on_conflict)} {quote(model._meta.db_table)} "
           f"({', '.join(quote(f.column) for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
           f"{connection.ops.on_conflict_suffix_sql(fields, on_conflict, None, None)}")
    rows = [[f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields] for obj in objects]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
