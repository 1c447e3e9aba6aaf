"""``python -m training``: data report, training, evaluation and export.

Each sub-command lives in its own ``add_*`` / ``run_*`` pair so that the pieces stay apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.features import FeatureConfig


def add_freeze_mel(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("freeze-mel", help="freeze the mel filterbank into app/assets")
    p.set_defaults(func=run_freeze_mel)


def run_freeze_mel(args: argparse.Namespace) -> int:
    from training.melbank import ASSET_PATH, freeze

    key = freeze(FeatureConfig())
    print(f"wrote {key} to {ASSET_PATH}")
    return 0


DEFAULT_DATA = Path("../shared/data/ser-corpus")  # relative to the repository root


def add_train(sub: argparse._SubParsersAction) -> None:
    from app.contract import LOSSES
    from training.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train, score, export and report (the default command)",
        description="Train the CNN-Transformer under one or all losses, score it on the test "
        "split, export ONNX models and write metrics.json and the report.",
    )
    p.add_argument("--loss", choices=[*LOSSES, "all"], default="all")
    p.add_argument("--protocol", choices=["random", "speaker"], default="random")
    p.add_argument(
        "--arch",
        choices=["sequential", "parallel", "both"],
        default="sequential",
        help="token layout (training/model.py); 'both' trains each on the same split to compare",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus folder or manifest CSV")
    p.add_argument("--out", type=Path, default=Path("models"), help="models, splits, report")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="checkpoints and histories")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="0: all CPU cores")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--limit", type=int, default=None, help="use only N clips (smoke runs)")
    p.add_argument("--folds", type=int, default=None, help="speaker protocol: first N folds")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/segments"))
    p.add_argument("--no-export", action="store_true", help="score only, write no ONNX")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from app.contract import LOSSES
    from training.config import TrainConfig
    from training.pipeline import Experiment, run_experiment

    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        amp=not args.no_amp,
        compile=args.compile,
        workers=args.workers,
        limit=args.limit,
    )
    experiment = Experiment(
        data=args.data,
        out=args.out,
        runs=args.runs,
        losses=tuple(LOSSES) if args.loss == "all" else (args.loss,),
        protocol=args.protocol,
        architectures=("sequential", "parallel") if args.arch == "both" else (args.arch,),
        train=train,
        cache_dir=args.cache_dir,
        folds=args.folds,
        export=not args.no_export,
    )
    run_experiment(experiment)
    print(f"metrics: {args.out / 'metrics.json'}; report: {args.out / 'report' / 'report.md'}")
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score an exported ONNX model on a split file's test rows",
        description="Score an ONNX model through ONNX Runtime, with the FeatureConfig stored in "
        "its metadata, on the test rows of a split file.",
    )
    p.add_argument("model", type=Path, help="an exported .onnx file")
    p.add_argument("--split", type=Path, required=True, help="a split CSV (models/splits/...)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus folder the split uses")
    p.add_argument("--part", choices=["train", "val", "test"], default="test")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/segments"))
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from training.corpora import corpus_root
    from training.evaluate import evaluate_onnx, summary

    result = evaluate_onnx(
        args.model,
        args.split,
        corpus_root(args.data),
        split=args.part,
        cache_dir=args.cache_dir,
        workers=args.workers,
    )
    m = result.metrics
    print(
        f"{args.model.name} ({result.metadata.loss}, {result.metadata.architecture}) on "
        f"{m['n']} {args.part} clips of {args.split.name}:"
    )
    for key, value in summary(m).items():
        print(f"  {key:16s} {value:.4f}")
    stored = result.metadata.metrics.get("test", {})
    if args.part == "test" and stored:
        print(
            f"  (stored at export: accuracy {stored.get('accuracy')}, "
            f"macro_f1 {stored.get('macro_f1')})"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(m, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    add_freeze_mel(sub)
    add_train(sub)
    add_evaluate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:  # no arguments: retrain everything with the defaults
        args = parser.parse_args(["train"])
    return int(args.func(args))
