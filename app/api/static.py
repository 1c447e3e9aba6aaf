"""Static files (the page's and the API docs' assets) with Starlette's ``StaticFiles``, except
that a ``Range`` header that is not a valid byte range is ignored (RFC 9110, 14.2 allows it)
instead of answered with a plain-text 400: ``Range: bytes=5-2`` gets the whole file, 200."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

_RANGE_SPEC: Final[re.Pattern[str]] = re.compile(r"\s*(?:(\d+)-(\d*)|-(\d+))\s*")


def valid_byte_ranges(value: str) -> bool:
    """Whether ``value`` is a ``bytes=`` range set whose every range is well formed: digits,
    and a first position not past the last one."""
    unit, _, ranges = value.partition("=")
    if unit.strip().lower() != "bytes" or not ranges.strip():
        return False
    for spec in ranges.split(","):
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return False
        first, last = match.group(1), match.group(2)
        if first is not None and last and int(last) < int(first):
            return False
    return True


class AssetFiles(StaticFiles):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers", [])
        ranges = [value for name, value in headers if name == b"range"]
        if ranges and not all(valid_byte_ranges(v.decode("latin-1")) for v in ranges):
            scope = {**scope, "headers": [(n, v) for n, v in headers if n != b"range"]}
        await super().__call__(scope, receive, send)
