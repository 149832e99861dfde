"""A PostgreSQL database of a bench's own: a unique name, created at the start and dropped at the
end. A bench never drops or touches a database it did not create. The tests make theirs with the
same helpers, which live in tests/services.py."""

from tests.services import DEFAULT_SERVER, own_postgres_database, unique_name

__all__ = ["DEFAULT_SERVER", "own_postgres_database", "unique_name"]
