"""The SQLite store: the embedded default (driver.py; SQL in queries.sql and migrations/)."""

from .driver import SQLiteStore

__all__ = ["SQLiteStore"]
