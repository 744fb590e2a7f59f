"""The PostgreSQL store, for several nodes (driver.py; SQL in queries.sql and migrations/)."""

from .driver import PostgresStore, split_schema

__all__ = ["PostgresStore", "split_schema"]
