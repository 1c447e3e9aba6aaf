"""Where and how every benchmark records its figures: the run's header, then JSON + markdown.

Each benchmark returns a dict of results and a markdown rendering of them; :func:`write`
puts both under ``benchmarks/results/`` (``<stem>.json`` and ``<stem>.md``) and prints the
markdown, so every figure quoted in the docs can be traced to a file and the command that made it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def when() -> str:
    """Now, in the words every results file uses: ``2026-11-25 18:34 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def machine() -> str:
    """This machine, in the words every results file uses: ``x86_64, 2 cores, 3.11.7``."""
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def header(module: str) -> dict[str, Any]:
    """When, on what, and the command line (as ``python -m benchmarks.<module> ...``)."""
    return {
        "when": when(),
        "machine": machine(),
        "command": " ".join([f"python -m benchmarks.{module}", *sys.argv[1:]]),
    }


def write(out: Path, results: dict[str, Any], markdown: str) -> None:
    """``out.json`` and ``out.md`` (``out`` is a path without suffix), and the markdown printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
