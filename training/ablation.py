"""Short runs that choose the training recipe, scored on the validation split only.

``python -m training ablate`` prepares a protocol's split files (the same files, segments and
features as ``train``), then fits one model per variant of the recipe and records its best
validation scores, overall and per corpus. The recipe is chosen on validation, and the test
split is scored once per released model, so the test rows are not scored here, with one
exception that chooses nothing: on the ``corpus`` protocol, ``--score-held-out`` also scores
each fold's held-out corpus. A corpus fold's validation rows are a tenth of its training corpora,
so they cannot show whether a change carries to a recording setup the model never heard; the
held-out corpus is the only view of that, and it judges a robustness change after the fact.

Three families of variants, each a set of changes from the base recipe (the command's flags):

- :data:`RECIPE_VARIANTS`, the regularisers, on the ``random`` split;
- :data:`ROBUSTNESS_VARIANTS`, one channel augmentation each (:mod:`training.channel`), all of
  them, or per-window input normalisation (``ModelConfig.input_norm``), meant for the
  ``speaker`` folds, whose validation speakers are unseen in training, and the ``corpus`` folds;
- :data:`LEVEL_VARIANTS`, the level stage and the gain augmentation taken out of the release
  recipe one at a time and together, on the same folds.

The results go to ``<out>/ablation.json``, one row per (corpus selection, protocol, fold, base
recipe, variant, epochs), which the report turns into tables, one set per selection (fold 0 of
the paper's three corpora and fold 0 of all seven hold out different corpora). The base recipe
is recorded with each row because the release recipe changed on 2026-12-04 (level stage,
level + clip augmentation): a variant is only ever compared with the baseline of its own base.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.features import FeatureConfig
from training.channel import AUGMENTATIONS
from training.config import TrainConfig
from training.splits import PAPER_CORPORA, selection_name

if TYPE_CHECKING:  # the pipeline imports torch, the report matplotlib: seconds for --help
    from training.pipeline import Experiment, SplitData


@dataclass(frozen=True)
class Variant:
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig changes
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig changes
    features: dict[str, Any] = field(default_factory=dict)  # FeatureConfig changes


def base_name(features: FeatureConfig, train: TrainConfig) -> str:
    """The part of a base recipe the level ablation changes, as a row records it. The trim
    floor is named only when it is not the absolute one, which every row before 2026-12-05
    had, so those rows keep their base."""
    name = f"level {features.level}, augment {'+'.join(train.channel_augment) or 'none'}"
    return name if features.trim_floor == "absolute" else f"{name}, trim {features.trim_floor}"


# The label smoothing the recipe ablation compares against (the release has none since then).
SMOOTHING = {"label_smoothing": 0.1}
# Against the base recipe (SpecAugment and mixup on), each variant naming its label smoothing.
RECIPE_VARIANTS: dict[str, Variant] = {
    "all": Variant(SMOOTHING),  # SpecAugment + mixup + label smoothing
    "no-specaugment": Variant({"freq_masks": 0, "time_masks": 0, **SMOOTHING}),
    "no-mixup": Variant({"mixup_alpha": 0.0, **SMOOTHING}),
    "no-label-smoothing": Variant({"label_smoothing": 0.0}),  # the release recipe
    "none": Variant({"freq_masks": 0, "time_masks": 0, "mixup_alpha": 0.0, "label_smoothing": 0.0}),
}
# Against the release recipe: global normalisation; since 2026-12-04 the level stage and the
# level + clip chain (rows recorded before then: no level stage, no channel augmentation).
ROBUSTNESS_VARIANTS: dict[str, Variant] = {
    "baseline": Variant(),
    "label-smoothing": Variant(SMOOTHING),  # the recipe of 2026-11-24
    "instance-norm": Variant(model={"input_norm": "instance"}),  # shares baseline's pool
    **{name: Variant({"channel_augment": (name,)}) for name in AUGMENTATIONS},
    "channel-all": Variant({"channel_augment": tuple(AUGMENTATIONS)}),
    # Draw the small corpora more often (TrainConfig.corpus_balance); shares baseline's pool.
    "balance-sqrt": Variant({"corpus_balance": 0.5}),
    "balance-equal": Variant({"corpus_balance": 1.0}),
    # Each corpus's classes drawn evenly (TrainConfig.class_balance), and the plain loss over
    # all eight classes instead of each corpus's label set (training/labelsets.py).
    "class-balance": Variant({"class_balance": 1.0}),
    "all-labels": Variant({"label_sets": "all"}),
    # A gradient-reversal head against the training speakers / corpora (training/adversary.py);
    # shares baseline's pool.
    "adversary-speaker": Variant({"adversary": "speaker"}),
    "adversary-corpus": Variant({"adversary": "corpus"}),
}
# Against the release recipe (level stage + level and clip augmentation): the 2 x 2 of issue 24.
LEVEL_VARIANTS: dict[str, Variant] = {
    "no-level-stage": Variant(features={"level": "none"}),
    "no-gain-augment": Variant({"channel_augment": ()}),
    "neither": Variant({"channel_augment": ()}, features={"level": "none"}),
}
VARIANTS: dict[str, Variant] = {**RECIPE_VARIANTS, **ROBUSTNESS_VARIANTS, **LEVEL_VARIANTS}


def default_variants(protocol: str) -> list[str]:
    return list(RECIPE_VARIANTS if protocol == "random" else ROBUSTNESS_VARIANTS)


def _key(row: dict) -> tuple[str, str, int, str, str, int]:
    from training.report import row_base, row_selection

    # Rows written before the protocols existed were all on the random split.
    return (
        row_selection(row),
        row.get("protocol", "random"),
        row.get("fold", 0),
        row_base(row),
        row["variant"],
        row["epochs"],
    )


def _order(row: dict) -> tuple:
    from training.report import LEGACY_BASE

    selection, protocol, fold, base, variant, epochs = _key(row)
    order = list(VARIANTS)
    return (
        selection != selection_name(PAPER_CORPORA),
        selection,
        protocol != "random",
        protocol,
        base != LEGACY_BASE,
        fold,
        epochs,
        order.index(variant),
    )


def merge_ablation(path: Path, result: dict) -> list[dict]:
    """Add ``result`` to ``path``, replacing the row of the same corpus selection, protocol,
    fold, base recipe, variant and number of epochs."""
    rows = json.loads(path.read_text())["ablation"] if path.exists() else []
    rows = [r for r in rows if _key(r) != _key(result)] + [result]
    rows.sort(key=_order)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ablation": rows}, indent=1))
    return rows


def _pool_key(exp: Experiment) -> tuple:
    """The settings that change a split's training pool (so a variant needs a new one)."""
    t = exp.train
    return (
        t.noisy_copies,
        t.snr_db,
        t.channel_augment,
        t.channel_prob,
        t.seed,
        t.limit,
        exp.features,
    )


# What a row keeps of its held-out corpus's scores (training.evaluate.classification_metrics):
# its UAR, macro-F1, arousal and valence UAR are in by_corpus, over the classes that corpus has
# and training taught; the overall macro averages would count classes it lacks as zero.
HELD_OUT_KEYS = ("n", "accuracy", "by_corpus")


def run_ablation(
    exp: Experiment, variants: dict[str, Variant], score_held_out: bool = False
) -> list[dict]:
    """Fit each variant on each of the protocol's folds; return (and write) its validation
    scores, and with ``score_held_out`` (``corpus`` protocol only) the held-out corpus's.
    Variants that share a training pool share its preparation."""
    if score_held_out and exp.protocol != "corpus":
        raise ValueError("only the corpus protocol has a held-out corpus to score")
    from training.model import ModelConfig
    from training.pipeline import experiment_clips, part_scores, prepare_split, split_files
    from training.train import fit

    clips, root = experiment_clips(exp)
    selection = selection_name([clip.dataset for clip in clips])
    out_file = exp.out / "ablation.json"
    base = base_name(exp.features, exp.train)
    results: list[dict] = []
    for name, fold, path in split_files(exp, clips, root):
        prepared: tuple[tuple, SplitData] | None = None
        for variant_name, variant in variants.items():
            config = exp.train.replace(loss=exp.losses[0], **variant.train)
            variant_exp = replace(
                exp, train=config, features=replace(exp.features, **variant.features)
            )
            if prepared is None or prepared[0] != _pool_key(variant_exp):
                prepared = None  # free the previous pool before building the next
                prepared = (
                    _pool_key(variant_exp),
                    prepare_split(variant_exp, root, name, fold, path),
                )
            split = prepared[1]
            model_config = ModelConfig(
                n_mels=split.feature_config.n_mels,
                n_frames=split.train.features.shape[-1],
                **variant.model,
            )
            run_dir = exp.runs / "ablation" / name / f"{variant_name}-{config.epochs}ep"
            started = time.perf_counter()
            result = fit(
                model_config,
                config,
                split.feature_config,
                split.train,
                split.val,
                run_dir,
                exp.resume,
            )
            val = part_scores(
                result, split.val, config, False, split.corpora.get("val"), split.train.labels
            )
            held_out = (
                part_scores(
                    result, split.test, config, True, split.corpora.get("test"), split.train.labels
                )
                if score_held_out
                else None
            )
            results.append(
                {
                    "selection": selection,
                    "protocol": exp.protocol,
                    "fold": fold,
                    "base": base,
                    "variant": variant_name,
                    "changes": {
                        k: list(v) if isinstance(v, tuple) else v for k, v in variant.train.items()
                    },
                    "model_changes": variant.model,
                    "feature_changes": variant.features,
                    "loss": config.loss,
                    "epochs": config.epochs,
                    "best_epoch": result.best_epoch,
                    "train_seconds": round(time.perf_counter() - started, 1),
                    "val": {k: val[k] for k in ("loss", "accuracy", "macro_f1")},
                    "val_accuracy_by_corpus": val.get("accuracy_by_corpus", {}),
                    "val_by_corpus": val.get("by_corpus", {}),
                    **(
                        {}
                        if held_out is None
                        else {"held_out": {k: held_out[k] for k in HELD_OUT_KEYS}}
                    ),
                    "split_file": path.name,
                    "split_sha256": split.split_sha256,
                    "train_config": config.to_dict(),
                    "model_config": model_config.to_dict(),
                }
            )
            merge_ablation(out_file, results[-1])
            line = f"val accuracy {val['accuracy']:.4f}, macro-F1 {val['macro_f1']:.4f}"
            if held_out is not None:
                # The corpus's own UAR, over the classes it has that training taught (the
                # report's); the overall one would count calm, which no other corpus has.
                ((corpus, part),) = held_out["by_corpus"].items()
                line += (
                    f"; held-out {corpus} UAR {part['uar']:.4f}, "
                    f"arousal UAR {part['arousal_uar']:.4f}"
                )
            print(f"{name} {variant_name}: {line}", flush=True)
    return results
