"""The SQLite database file, guarded: one process at a time (a lock file), and writes only
while the path still names the file the connections opened."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from ...errors import DatabaseInUse, StorageUnavailable, StoreError


@dataclass(frozen=True, slots=True)
class DatabaseFile:
    """The file the connections opened. A write goes in only while the path still names that
    file: one deleted or replaced under the server would take every acknowledged job with it
    (the next start makes a new, empty database), so writes are refused (503) instead."""

    path: str
    device: int
    inode: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> DatabaseFile:
        st = os.stat(path)
        return cls(os.fspath(path), st.st_dev, st.st_ino)

    def check(self) -> None:
        """Raise StorageUnavailable unless the path still names this file (one stat call)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StorageUnavailable(
                f"the database file {self.path} was deleted while the server ran: writes are"
                " refused; restart the server once the file is restored"
            ) from None
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            raise StorageUnavailable(
                f"the database file {self.path} was replaced while the server ran: writes are"
                " refused; restart the server to open the new file"
            )


class ProcessLock:
    """One process per database file: the workers recover every `running` row at start."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def take(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            database = self.path.removesuffix("-lock")
            raise DatabaseInUse(
                f"{database} is in use by another jobserver process (lock file {self.path})"
            ) from None
        self._fd = fd

    def drop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
