"""``python -m training``: data report, training, evaluation and export.

Each sub-command lives in its own ``add_*`` / ``run_*`` pair so that the pieces stay apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.features import FeatureConfig


def add_freeze_mel(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("freeze-mel", help="freeze the mel filterbank into app/assets")
    p.set_defaults(func=run_freeze_mel)


def run_freeze_mel(args: argparse.Namespace) -> int:
    from training.melbank import ASSET_PATH, freeze

    key = freeze(FeatureConfig())
    print(f"wrote {key} to {ASSET_PATH}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    add_freeze_mel(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))
