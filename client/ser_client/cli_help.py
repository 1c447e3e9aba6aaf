"""How the command lines (``ser``, ``python -m training``) show their options' defaults.

argparse's :class:`argparse.ArgumentDefaultsHelpFormatter` appends ``(default: ...)`` to every
option, ``None`` and ``False`` included: "(default: None)" tells a reader nothing, so those
options say their default in words in their own help text instead (e.g. "default: the
server's"), and this formatter appends the value only where there is one to show.

The service's training command (``training/cli.py``) applies the same rule with a formatter
of its own: the client installs without the server and the server without the client.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option whose default is a value (not None, not False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)
