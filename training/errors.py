"""Errors in what a user asked ``python -m training`` to do (a split that does not fit the
clips, a corpus or fold that does not exist): the command prints the message on one line and
exits 2, as argparse does for a bad flag, instead of a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A run that cannot be done as asked; the message says what to change."""
