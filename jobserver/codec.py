"""JSON encoding in one place (orjson)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Serialise to JSON bytes; raises TypeError for values JSON cannot hold (unless `default`)."""
    return orjson.dumps(value, default=default)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


# A NUL character as JSON writes it: \u0000 after an even number of backslashes (an odd number
# would make it the text "\u0000" itself).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def holds_nul(encoded: bytes) -> bool:
    """A NUL character in some string of this JSON (PostgreSQL's jsonb cannot hold one)."""
    return b"\\u0000" in encoded and _JSON_NUL.search(encoded) is not None


def has_non_finite(value: Any) -> bool:
    """Whether a float NaN or +/-Infinity is anywhere in `value` (lists, tuples, dicts)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return True
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return False


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists/objects nest in a decoded value; stops counting past `limit`."""
    depth = 0
    level = [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


def fingerprint(value: Any) -> str:
    """A stable digest of a JSON value (keys sorted): tells two requests' payloads apart."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
