"""Errors in what a user asked ``python -m training`` to do (a split that does not fit the
clips, a corpus or fold that does not exist) and in where it was run (a Python without the
training extra): the command prints one line saying what to change and exits 2, as argparse
does for a bad flag, instead of a traceback."""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """A run that cannot be done as asked; the message says what to change."""


def missing_extra(error: ModuleNotFoundError) -> str:
    """What to do when this Python lacks a package of the training extra."""
    return (
        f"python -m training needs {error.name or 'a package'}, which this Python "
        f"({sys.executable}) lacks: install the training extra in a virtual environment "
        "(pip install -e '.[train]'), or run the one `make test` makes (.venv/bin/python)"
    )
