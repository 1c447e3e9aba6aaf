"""``python -m training``: data report, training, evaluation and export.

Each sub-command lives in its own ``add_*`` / ``run_*`` pair so that the pieces stay apart.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.features import FeatureConfig
from training.errors import UsageError, missing_extra
from training.splits import PROTOCOLS

if TYPE_CHECKING:
    from training.config import TrainConfig


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option whose default is a value: "(default: None)" tells a
    reader nothing, so those options say their default in words in their help text. The ``ser``
    client follows the same rule with its own formatter: the two distributions install without
    each other, so neither imports the other's."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_freeze_mel(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("freeze-mel", help="freeze the mel filterbank into app/assets")
    p.set_defaults(func=run_freeze_mel)


def run_freeze_mel(args: argparse.Namespace) -> int:
    from training.melbank import ASSET_PATH, freeze

    key = freeze(FeatureConfig())
    print(f"wrote {key} to {ASSET_PATH}")
    return 0


# Relative to the working directory, like --out: the commands in the README run from the repo root.
DEFAULT_DATA = Path("../shared/data/ser-corpus")


def add_train(sub: argparse._SubParsersAction) -> None:
    from app.contract import LOSSES

    p = sub.add_parser(
        "train",
        help="train, score, export and report",
        description="Train the CNN-Transformer under one or all losses, score it on the test "
        "split, export ONNX models and write metrics.json and the report.",
    )
    p.add_argument(
        "--loss",
        type=_loss_list,
        default="all",
        metavar="{" + ",".join(LOSSES) + ",all}",
        help="one loss, a comma-separated list (ce,bce) or all",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="random",
        help="random 80/10/10, speaker folds, or corpus: leave one corpus out",
    )
    p.add_argument(
        "--arch",
        choices=["sequential", "parallel", "both"],
        default="sequential",
        help="token layout (training/model.py); 'both' trains each on the same split to compare",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus folder or manifest CSV")
    _add_corpora_argument(p)
    p.add_argument("--out", type=Path, default=Path("models"), help="models, splits, report")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="checkpoints and histories")
    _add_recipe_arguments(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue each model from its run folder's last.pt (after a kill or a reboot)",
    )
    _add_fold_arguments(p)
    _add_cache_argument(p)
    _add_feature_cache_argument(p)
    p.add_argument("--no-export", action="store_true", help="score only, write no ONNX")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per model: stop after the epoch that passes this much training time "
        "(default: no limit)",
    )
    p.set_defaults(func=run_train)


def _add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The TrainConfig flags shared by ``train`` and ``ablate``."""
    from app.features import LEVEL_MODES, TRIM_FLOORS
    from training.channel import AUGMENTATIONS
    from training.config import ADVERSARIES, LABEL_SETS, RELEASE_FEATURES, TrainConfig

    d = TrainConfig()
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=d.device, help="auto: CUDA if present"
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=d.precision,
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="at most this many passes")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per step")
    p.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: 2e-3; L1: 5e-4)"
    )
    p.add_argument(
        "--ce-warmup",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="train the first EPOCHS epochs with cross-entropy, then the loss (default: L1 4, "
        "the others 0; training/config.py CE_WARMUP_EPOCHS)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="stop after this many epochs without a better one",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="weights, order and augmentation")
    p.add_argument("--workers", type=int, default=d.workers, help="0: all CPU cores")
    p.add_argument(
        "--limit", type=int, default=None, help="use only N clips (smoke runs; default: all)"
    )
    p.add_argument("--freq-masks", type=int, default=d.freq_masks, help="SpecAugment")
    p.add_argument("--time-masks", type=int, default=d.time_masks, help="SpecAugment")
    p.add_argument("--mixup-alpha", type=float, default=d.mixup_alpha, help="0: no mixup")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="CE only")
    p.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=d.snr_db,
        help="the noisy copies' SNR range, dB (the release: 15 45; before 2026-12-05: 15 30)",
    )
    p.add_argument(
        "--channel-augment",
        type=_names,
        default=",".join(d.channel_augment) or "none",
        help="noisy copies through a channel chain: a comma list of "
        f"{','.join(AUGMENTATIONS)}, or all, or none (training/channel.py)",
    )
    p.add_argument(
        "--channel-prob", type=float, default=d.channel_prob, help="each augmentation's chance"
    )
    p.add_argument(
        "--corpus-balance",
        type=float,
        default=d.corpus_balance,
        help="draw clips with weight n_corpus**-B: 0 every clip once per epoch, 1 equal corpora",
    )
    p.add_argument(
        "--class-balance",
        type=float,
        default=d.class_balance,
        help="within each corpus, draw clips with weight n_class**-B: 0 as recorded, 1 even "
        "classes (each corpus keeps its share)",
    )
    p.add_argument(
        "--label-sets",
        choices=list(LABEL_SETS),
        default=d.label_sets,
        help="the classes each clip's loss ranges over: those its corpus has (corpus) or all 8",
    )
    p.add_argument(
        "--adversary",
        choices=list(ADVERSARIES),
        default=d.adversary,
        help="gradient-reversal head that learns to name the training speaker or corpus",
    )
    p.add_argument(
        "--adversary-weight", type=float, default=d.adversary_weight, help="reversal strength"
    )
    p.add_argument(
        "--level",
        choices=list(LEVEL_MODES),
        default=RELEASE_FEATURES.level,
        help="the front-end's level stage: window (each window scaled to one speech level, "
        "the release) or none (features follow the recording's level, as before 2026-12-04)",
    )
    p.add_argument(
        "--trim-floor",
        choices=list(TRIM_FLOORS),
        default=RELEASE_FEATURES.trim_floor,
        help="the silence trim's floor: relative (the same trim at any recording level, the "
        "release) or absolute (librosa's -100 dB, as before 2026-12-05)",
    )


def _add_corpora_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--corpora",
        type=_corpus_list,
        default=None,
        help="comma list of the corpora to use (default: every corpus in --data); "
        "ravdess,savee,tess is the paper's data, split by the committed models/splits/random.csv",
    )


def _corpus_list(text: str) -> tuple[str, ...]:
    names = tuple(sorted({n.strip() for n in text.split(",") if n.strip()}))
    if not names:
        raise argparse.ArgumentTypeError("name one corpus or more, e.g. ravdess,savee,tess")
    return names


def _add_fold_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        help="speaker / corpus protocol: first N folds (default: all)",
    )
    p.add_argument(
        "--fold",
        type=int,
        action="append",
        help="speaker / corpus protocol: only fold K (repeatable), e.g. to run folds one by one "
        "(default: every fold --folds allows)",
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from training.config import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        ce_warmup_epochs=args.ce_warmup,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        limit=args.limit,
        freq_masks=args.freq_masks,
        time_masks=args.time_masks,
        mixup_alpha=args.mixup_alpha,
        label_smoothing=args.label_smoothing,
        snr_db=(args.snr_db[0], args.snr_db[1]),
        channel_augment=args.channel_augment,
        channel_prob=args.channel_prob,
        corpus_balance=args.corpus_balance,
        class_balance=args.class_balance,
        label_sets=args.label_sets,
        adversary=args.adversary,
        adversary_weight=args.adversary_weight,
        time_budget_s=getattr(args, "time_budget", None),
    )


def _names(text: str) -> tuple[str, ...]:
    """``--channel-augment``: a comma list of augmentation names, ``all`` or ``none``."""
    from training.channel import AUGMENTATIONS, check_names

    if text in ("all", "none"):
        return tuple(AUGMENTATIONS) if text == "all" else ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    try:
        check_names(names)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return names


def _loss_list(text: str) -> str | tuple[str, ...]:
    from app.contract import LOSSES

    if text == "all":
        return text
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",")))
    unknown = [n for n in names if n not in LOSSES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown loss(es) {unknown}; use {', '.join(LOSSES)}, a comma list of them, or all"
        )
    return names


def _say_where(args: argparse.Namespace) -> None:
    """Before an hour of training: what it reads, and which folders it writes (and replaces)."""
    split = "random" if args.protocol == "random" else f"{args.protocol}-fold<k>"
    folder = _selection_folder(args.data, args.corpora)
    split = f"{folder}/{split}" if folder else split
    exported = "no ONNX (--no-export)" if args.no_export else "ser-<loss>.onnx"
    print(
        f"training on {args.data}\n"
        f"  writes {args.out}/: {exported}, splits/, metrics.json, report/ (replacing them)\n"
        f"  writes {args.runs}/{split}/ser-<loss>/: checkpoints, history, train.log",
        flush=True,
    )


def _selection_folder(data: Path, corpora: tuple[str, ...] | None) -> str:
    """The run and split folder of the corpus selection (training.splits.selection_folder);
    ``<corpora>`` when the data cannot be listed here (the run itself will say why)."""
    from training.corpora import CorpusError, load_corpus
    from training.splits import selection_folder

    if corpora is None:
        try:
            corpora = tuple(sorted({clip.dataset for clip in load_corpus(data)}))
        except (CorpusError, OSError):
            return "[<corpora>]"
    return selection_folder(corpora)


def run_train(args: argparse.Namespace) -> int:
    from app.contract import LOSSES
    from training.pipeline import Experiment, run_experiment

    train = _train_config(args)
    experiment = Experiment(
        data=args.data,
        out=args.out,
        runs=args.runs,
        losses=tuple(LOSSES) if args.loss == "all" else args.loss,
        protocol=args.protocol,
        architectures=("sequential", "parallel") if args.arch == "both" else (args.arch,),
        train=train,
        features=FeatureConfig(level=args.level, trim_floor=args.trim_floor),
        cache_dir=args.cache_dir,
        feature_cache=args.feature_cache,
        corpora=args.corpora,
        folds=args.folds,
        only_folds=tuple(args.fold) if args.fold else None,
        export=not args.no_export,
        resume=args.resume,
    )
    _say_where(args)
    run_experiment(experiment)
    print(f"metrics: {args.out / 'metrics.json'}; report: {args.out / 'report' / 'report.md'}")
    return 0


def add_ablate(sub: argparse._SubParsersAction) -> None:
    from training.ablation import VARIANTS

    p = sub.add_parser(
        "ablate",
        help="short runs of recipe variants, scored on the validation split only",
        description="Fit one model per recipe variant (training/ablation.py) on each fold of a "
        "protocol and write their validation scores to <out>/ablation.json. The test rows are "
        "not scored. Default variants: the regularisers on the random split, the channel "
        "augmentations and input normalisation on the speaker and corpus folds. The level "
        "variants (no-level-stage, no-gain-augment, neither) take the level stage and the gain "
        "augmentation out of the release recipe; run them with --variant.",
    )
    p.add_argument(
        "--loss", choices=["ce", "bce", "smoothl1", "l1"], default="ce", help="the variants' loss"
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="random", help="the split family")
    _add_fold_arguments(p)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus folder or manifest CSV")
    _add_corpora_argument(p)
    p.add_argument("--out", type=Path, default=Path("models"), help="split files, ablation.json")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="checkpoints and histories")
    _add_cache_argument(p)
    _add_feature_cache_argument(p)
    p.add_argument("--resume", action="store_true", help="continue variants from last.pt")
    p.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help="run only this variant (repeatable; default: the protocol's family)",
    )
    p.add_argument(
        "--score-held-out",
        action="store_true",
        help="corpus protocol: also score each fold's held-out corpus (it judges transfer, "
        "which the folds' in-domain validation rows cannot; it chooses nothing)",
    )
    _add_recipe_arguments(p)
    p.set_defaults(func=run_ablate)


def run_ablate(args: argparse.Namespace) -> int:
    from training.ablation import VARIANTS, default_variants, run_ablation
    from training.pipeline import Experiment

    experiment = Experiment(
        data=args.data,
        out=args.out,
        runs=args.runs,
        losses=(args.loss,),
        protocol=args.protocol,
        train=_train_config(args),
        features=FeatureConfig(level=args.level, trim_floor=args.trim_floor),
        cache_dir=args.cache_dir,
        feature_cache=args.feature_cache,
        corpora=args.corpora,
        folds=args.folds,
        only_folds=tuple(args.fold) if args.fold else None,
        resume=args.resume,
    )
    if args.score_held_out and args.protocol != "corpus":
        print("--score-held-out needs --protocol corpus", file=sys.stderr)
        return 2
    names = args.variant or default_variants(args.protocol)
    run_ablation(experiment, {name: VARIANTS[name] for name in names}, args.score_held_out)
    print(f"ablation: {args.out / 'ablation.json'}")
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="rewrite the report from metrics.json and ablation.json",
        description="Rewrite <out>/report/ (report.md and figures) from <out>/metrics.json and "
        "<out>/ablation.json, e.g. after an ablation run; trains nothing.",
    )
    p.add_argument("--out", type=Path, default=Path("models"), help="folder with metrics.json")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from training.report import rewrite_report

    print(f"wrote {rewrite_report(args.out)}")
    return 0


def _add_feature_cache_argument(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--feature-cache",
        type=Path,
        default=Path(".cache/features"),
        help="each split's features (noisy copies included), reused by another loss or a rerun "
        "of the same split, front-end and augmentation (3.4 GB for the seven-corpus split)",
    )
    group.add_argument(
        "--no-feature-cache",
        dest="feature_cache",
        action="store_const",
        const=None,
        help="compute the features and keep nothing",
    )


def _add_cache_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".cache/segments"),
        help="decoded and resampled clips, reused between runs",
    )


def _add_released_arguments(p: argparse.ArgumentParser) -> None:
    """The models, folder, split and corpus of the commands that score released models."""
    p.add_argument(
        "models", type=Path, nargs="*", help="exported .onnx files (default: <out>/ser-*.onnx)"
    )
    p.add_argument("--out", type=Path, default=Path("models"), help="the released models")
    p.add_argument(
        "--split",
        type=Path,
        default=None,
        help="default: calibrate, each model's own split (its metadata's split_file); "
        "gain-check, <out>/splits/random.csv (the paper's test clips)",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus folder the split uses")


def _released(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The models (default: every released one) and the split file a command scores on."""
    models = args.models or sorted(args.out.glob("ser-*.onnx"))
    return models, args.split or args.out / "splits" / "random.csv"


def own_split(model: Path, out: Path) -> Path:
    """The split file a released model was trained and scored on (its metadata says, relative
    to ``out``); ``out/splits/random.csv`` for a model whose metadata does not."""
    from training.export import read_metadata

    named = read_metadata(model).metrics.get("split_file")
    return out / named if isinstance(named, str) else out / "splits" / "random.csv"


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit each released model's temperature on the validation split",
        description="For each model (default: every ser-*.onnx in --out), fit the temperature "
        "that minimises the validation rows' negative log-likelihood of its own split, store it "
        "in the model's metadata, measure test ECE and NLL before and after into "
        "<out>/calibration.json, and rewrite the report.",
    )
    _add_released_arguments(p)
    _add_cache_argument(p)
    p.add_argument(
        "--also-test",
        type=Path,
        action="append",
        default=[],
        metavar="SPLIT",
        help="also measure this split file's test rows with the fitted temperature (repeatable; "
        "e.g. models/splits/random.csv, the paper's clips)",
    )
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from training.calibrate import calibrate_model, merge_calibration
    from training.report import rewrite_report

    models, _ = _released(args)
    records = []
    for model in models:
        split = args.split or own_split(model, args.out)
        record = calibrate_model(
            model, split, args.data, cache_dir=args.cache_dir, also_test=args.also_test
        )
        before, after = record["test"]["before"], record["test"]["after"]
        print(
            f"{model}: T = {record['temperature']:.3f}; test ECE {before['ece']:.4f} -> "
            f"{after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}"
        )
        for name, other in record.get("also", {}).items():
            print(
                f"  {name} test rows: ECE {other['before']['ece']:.4f} -> "
                f"{other['after']['ece']:.4f} (± {other['after']['ece_sd']:.4f})"
            )
        records.append(record)
    merge_calibration(args.out / "calibration.json", records)
    if (args.out / "metrics.json").exists():
        print(f"wrote {rewrite_report(args.out)}")
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
    p.add_argument(
        "--part", choices=["train", "val", "test"], default="test", help="the split's rows to score"
    )
    _add_cache_argument(p)
    p.add_argument("--workers", type=int, default=0, help="decoding processes; 0: all CPU cores")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the metrics here (default: printed only)",
    )
    p.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="FILE",
        help="merge the scores into FILE with the model's sha256 (the released models: "
        "models/evaluations.json, which the docs quote; default: not recorded)",
    )
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from training.corpora import corpus_root
    from training.evaluate import evaluate_onnx, record_evaluation, summary

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
    for corpus, value in m.get("accuracy_by_corpus", {}).items():
        print(f"  accuracy {corpus:7s} {value:.4f}")
    stored = result.metadata.metrics.get("test", {})
    if args.part == "test" and stored:
        print(
            f"  (stored at export: accuracy {stored.get('accuracy')}, "
            f"macro_f1 {stored.get('macro_f1')})"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(m, indent=1))
    if args.record is not None:
        key = record_evaluation(args.record, args.model, args.split, args.part, m)
        print(f"recorded: {args.record} ({key})")
    return 0


def add_gain_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gain-check",
        help="score models on the test split at -30..+10 dB and peak-normalised",
        description="Score each model on a split's test rows with every clip scaled by -30, "
        "-20, -10, 0, +10 dB or peak-normalised (clipped and quantised as a 16-bit WAV), "
        "through the server's own trim, window and features; print accuracy and the share of "
        "labels that change against 0 dB, and merge the figures into <out>/gain.json.",
    )
    _add_released_arguments(p)
    p.add_argument(
        "--part", choices=["train", "val", "test"], default="test", help="the split's rows to score"
    )
    p.add_argument("--workers", type=int, default=0, help="decoding processes; 0: all CPU cores")
    p.set_defaults(func=run_gain_check)


def run_gain_check(args: argparse.Namespace) -> int:
    from training.corpora import corpus_root
    from training.gaincheck import gain_check, table, write_results

    models, split = _released(args)
    root = corpus_root(args.data)
    results = [gain_check(m, split, root, args.part, args.workers) for m in models]
    print(f"{args.part} rows of {split}: accuracy (labels changed against 0 dB)")
    print(table(results))
    if args.part == "test":
        write_results(args.out / "gain.json", results)
        if (args.out / "metrics.json").exists():
            from training.report import rewrite_report

            print(f"report: {rewrite_report(args.out)}")
    return 0


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="count clips per corpus x emotion and write the split files",
        description="Find the corpora under --data (published layouts or a manifest), print "
        "clips per corpus x emotion and the split sizes of every protocol, and write "
        "random.csv, speaker-fold<k>.csv and corpus-fold<k>.csv to --out. Reads file names and "
        "bytes only; decodes no audio.",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus folder or manifest CSV")
    p.add_argument("--out", type=Path, default=Path("runs/splits"), help="where the splits go")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the training one)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_data)


def run_data(args: argparse.Namespace) -> int:
    import json

    from training.corpora import CorpusError, corpus_root, emotion_counts, load_corpus
    from training.splits import DEFAULT_SEED, split_sha256, split_sizes, write_all_splits

    try:
        clips = load_corpus(args.data)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seed = DEFAULT_SEED if args.seed is None else args.seed
    written = write_all_splits(clips, corpus_root(args.data), args.out, seed=seed)
    counts = emotion_counts(clips)
    sizes = {stem: split_sizes(rows) for stem, rows in written.items()}
    hashes = {stem: split_sha256(args.out / f"{stem}.csv") for stem in written}
    if not args.json:
        print(_data_report_text(str(args.data), counts, seed, sizes, hashes))
        return 0
    splits = {
        stem: {"file": str(args.out / f"{stem}.csv"), "sha256": hashes[stem], "sizes": sizes[stem]}
        for stem in written
    }
    report = {"data": str(args.data), "clips": len(clips), "counts": counts, "seed": seed}
    print(json.dumps({**report, "splits": splits}, indent=1))
    return 0


def _data_report_text(
    data: str,
    counts: dict[str, dict[str, int]],
    seed: int,
    sizes: dict[str, dict[str, dict[str, int]]],
    hashes: dict[str, str],
) -> str:
    from app.labels import LABELS

    totals = [sum(c[label] for c in counts.values()) for label in LABELS]
    head = f"{'corpus':<10}" + "".join(f"{label:>10}" for label in LABELS) + f"{'total':>8}"
    lines = [f"{data}: {sum(totals)} clips", "", head]
    for dataset, per_label in counts.items():
        cells = "".join(f"{per_label[label]:>10}" for label in LABELS)
        lines.append(f"{dataset:<10}{cells}{sum(per_label.values()):>8}")
    lines.append(f"{'total':<10}" + "".join(f"{n:>10}" for n in totals) + f"{sum(totals):>8}")
    corpora = list(counts)
    lines += ["", f"splits (seed {seed}), clips per split: all ({' / '.join(corpora)})"]
    split_cells = {
        stem: [
            f"{per_dataset['all'][part]} ({'/'.join(str(per_dataset[d][part]) for d in corpora)})"
            for part in ("train", "val", "test")
        ]
        for stem, per_dataset in sizes.items()
    }
    width = max([len(c) for row in split_cells.values() for c in row] + [5]) + 2
    name_width = max(len(stem) for stem in split_cells) + 6
    head = "".join(part.rjust(width) for part in ("train", "val", "test"))
    lines.append(f"{'file':<{name_width}}{head}  sha256")
    for stem, row in split_cells.items():
        text = "".join(cell.rjust(width) for cell in row)
        lines.append(f"{stem + '.csv':<{name_width}}{text}  {hashes[stem][:12]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Data report, training, evaluation and export of the models.",
        epilog="Nothing runs without a command; `train` replaces the models in --out.",
        formatter_class=DefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_freeze_mel(sub)
    add_train(sub)
    add_evaluate(sub)
    add_ablate(sub)
    add_report(sub)
    add_calibrate(sub)
    add_gain_check(sub)
    add_data(sub)
    for command in sub.choices.values():  # every --help shows the defaults
        command.formatter_class = DefaultsHelpFormatter
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args_in = list(sys.argv[1:] if argv is None else argv)
    # Nothing runs without a sub-command: training takes an hour and replaces models/, so it
    # starts only when `train` asks for it (flags alone, e.g. --resume, name no command).
    if not args_in or (args_in[0].startswith("-") and args_in[0] not in ("-h", "--help")):
        parser.print_help()
        example = " ".join(["python -m training train", *args_in])
        print(f"\nnothing done: name a command first, e.g. {example}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_in)
    signal.signal(signal.SIGTERM, _interrupt)  # a container stop or kill: as Ctrl-C
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            f"python -m training {args_in[0]}: interrupted. Each model's train.log (under "
            "--runs) says where it stopped; the same command with --resume continues after "
            "the last finished epoch.",
            file=sys.stderr,
        )
        return 130
    except UsageError as e:
        print(f"python -m training {args_in[0]}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(missing_extra(e), file=sys.stderr)
        return 2
