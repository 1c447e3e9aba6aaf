"""The ablation's bookkeeping: results merged by (protocol, fold, base recipe, variant, epochs)
and rendered as tables, and the variant families."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from training.ablation import (
    LEVEL_VARIANTS,
    RECIPE_VARIANTS,
    ROBUSTNESS_VARIANTS,
    VARIANTS,
    base_name,
    default_variants,
    merge_ablation,
)
from training.channel import AUGMENTATIONS
from training.config import RELEASE_FEATURES, TrainConfig
from training.model import ModelConfig
from training.report import (
    ablation_table,
    held_out_ablation_table,
    robustness_summary,
    robustness_table,
)


def _result(variant: str, epochs: int, accuracy: float) -> dict:
    return {
        "variant": variant,
        "changes": VARIANTS[variant].train,
        "epochs": epochs,
        "best_epoch": epochs - 1,
        "train_seconds": 60.0 * epochs,
        "val": {"loss": 1.0, "accuracy": accuracy, "macro_f1": accuracy - 0.01},
        "val_accuracy_by_corpus": {"ravdess": 0.5, "tess": 1.0},
    }


def test_results_merge_by_variant_and_length(tmp_path: Path) -> None:
    path = tmp_path / "ablation.json"
    merge_ablation(path, _result("none", 8, 0.80))
    merge_ablation(path, _result("all", 8, 0.78))
    merge_ablation(path, _result("all", 24, 0.84))
    rows = merge_ablation(path, _result("none", 8, 0.81))  # a rerun replaces its row
    assert [(r["variant"], r["epochs"]) for r in rows] == [("all", 8), ("none", 8), ("all", 24)]
    assert rows[1]["val"]["accuracy"] == 0.81

    table = ablation_table(path).splitlines()
    assert table[0].startswith("| variant | best epoch | val accuracy | val macro-F1 |")
    assert "val ravdess" in table[0] and "val tess" in table[0]
    assert table[2].startswith("| all | 7/8 | 0.7800 | 0.7700 | 0.500 | 1.000 |")
    assert len(table) == 5
    assert ablation_table(tmp_path / "missing.json") == ""


def _robust(fold: int, variant: str, accuracy: float, uar: float) -> dict:
    return {
        "protocol": "speaker",
        "fold": fold,
        "variant": variant,
        "epochs": 12,
        "best_epoch": 11,
        "val": {"loss": 1.0, "accuracy": accuracy, "macro_f1": accuracy},
        "val_accuracy_by_corpus": {},
        "val_by_corpus": {"ravdess": {"uar": uar}, "tess": {"uar": 1.0}},
    }


def test_protocol_rows_are_kept_apart_and_compared_with_their_baseline(tmp_path: Path) -> None:
    path = tmp_path / "ablation.json"
    merge_ablation(path, _result("all", 8, 0.78))  # a random-split row, written before folds
    merge_ablation(path, _robust(1, "baseline", 0.70, 0.50))
    merge_ablation(path, _robust(0, "speed", 0.74, 0.56))
    rows = merge_ablation(path, _robust(0, "baseline", 0.72, 0.52))
    assert [(r.get("protocol", "random"), r.get("fold", 0), r["variant"]) for r in rows] == [
        ("random", 0, "all"),
        ("speaker", 0, "baseline"),
        ("speaker", 0, "speed"),
        ("speaker", 1, "baseline"),
    ]
    assert len(ablation_table(path).splitlines()) == 3  # the random row only
    table = robustness_table(path, "speaker").splitlines()
    assert "val UAR ravdess" in table[0] and "val UAR tess" in table[0]
    legacy = "| level none, augment none | 0 |"
    assert table[2] == f"{legacy} baseline | 11/12 | 72.00 | 0.7200 | 0.520 | 1.000 |"
    assert table[3] == (
        f"{legacy} speed | 11/12 | 74.00 (+2.00) | 0.7400 (+0.0200) | 0.560 (+0.040) | "
        "1.000 (+0.000) |"
    )
    assert robustness_table(path, "corpus") == ""


def test_the_summary_averages_each_variant_over_its_folds_against_their_baselines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ablation.json"
    merge_ablation(path, _robust(0, "baseline", 0.70, 0.50))
    merge_ablation(path, _robust(0, "speed", 0.74, 0.56))
    assert robustness_summary(path, "speaker") == ""  # one fold: the per-fold table says it all
    merge_ablation(path, _robust(1, "baseline", 0.80, 0.60))
    merge_ablation(path, _robust(1, "speed", 0.80, 0.62))
    merge_ablation(path, _robust(1, "gain", 0.90, 0.70))  # one fold only: left out
    table = robustness_summary(path, "speaker").splitlines()
    assert len(table) == 4
    legacy = "| level none, augment none |"
    assert table[2].startswith(f"{legacy} baseline | 12 | 0,1 | 75.00 +- 7.07 | 0.7500 +- 0.0707 |")
    # speed: accuracy 74 and 80 (mean 77, sd 4.24), paired changes +4 and 0 (+2 +- 2.83)
    assert table[3].startswith(f"{legacy} speed | 12 | 0,1 | 77.00 +- 4.24 (+2.00 +- 2.83) |")
    assert "0.590 +- 0.042 (+0.040 +- 0.028)" in table[3]  # UAR ravdess: +0.06 and +0.02


def test_a_variant_is_paired_only_with_the_baseline_of_its_own_base_recipe(tmp_path: Path) -> None:
    path = tmp_path / "ablation.json"
    release = base_name(RELEASE_FEATURES, TrainConfig())
    assert release == "level window, augment level+clip, trim relative"
    # The rows of 2026-12-04 (level stage, librosa's trim floor) keep the base they recorded.
    absolute = replace(RELEASE_FEATURES, trim_floor="absolute")
    assert base_name(absolute, TrainConfig()) == "level window, augment level+clip"
    for fold, shift in ((0, 0.0), (1, 0.1)):
        merge_ablation(path, _robust(fold, "baseline", 0.70 + shift, 0.50))  # written before
        merge_ablation(path, _robust(fold, "speed", 0.60 + shift, 0.40))
        merge_ablation(path, {**_robust(fold, "baseline", 0.80 + shift, 0.60), "base": release})
        merge_ablation(
            path, {**_robust(fold, "no-level-stage", 0.75 + shift, 0.50), "base": release}
        )
    rows = json.loads(path.read_text())["ablation"]
    assert len(rows) == 8  # the two baselines of a fold are kept apart
    table = robustness_table(path, "speaker")
    assert "| level none, augment none | 0 | speed | 11/12 | 60.00 (-10.00) |" in table
    assert f"| {release} | 0 | no-level-stage | 11/12 | 75.00 (-5.00) |" in table
    summary = robustness_summary(path, "speaker")
    assert f"| {release} | no-level-stage | 12 | 0,1 | 80.00 +- 7.07 (-5.00 +- 0.00) |" in summary
    assert "| level none, augment none | speed | 12 | 0,1 | 65.00 +- 7.07 (-10.00 +- 0.00) |" in (
        summary
    )


def test_the_level_variants_take_the_stage_and_the_gain_augmentation_out_of_the_release() -> None:
    def recipe(name: str) -> tuple[str, tuple[str, ...]]:
        variant = LEVEL_VARIANTS[name]
        features = replace(RELEASE_FEATURES, **variant.features)
        return features.level, TrainConfig().replace(**variant.train).channel_augment

    assert recipe("no-level-stage") == ("none", ("level", "clip"))
    assert recipe("no-gain-augment") == ("window", ())
    assert recipe("neither") == ("none", ())
    assert (RELEASE_FEATURES.level, TrainConfig().channel_augment) == ("window", ("level", "clip"))


def test_robustness_variants_are_valid_single_changes() -> None:
    assert default_variants("random") == [
        "all",
        "no-specaugment",
        "no-mixup",
        "no-label-smoothing",
        "none",
    ]
    # The recipe variants keep their meaning now that the release has no label smoothing:
    # each names its smoothing, and the smoothing-free variant is the release recipe.
    smoothing = {
        n: TrainConfig().replace(**v.train).label_smoothing for n, v in RECIPE_VARIANTS.items()
    }
    assert smoothing == {
        "all": 0.1,
        "no-specaugment": 0.1,
        "no-mixup": 0.1,
        "no-label-smoothing": 0.0,
        "none": 0.0,
    }
    assert TrainConfig().replace(**RECIPE_VARIANTS["no-label-smoothing"].train) == TrainConfig()
    assert default_variants("speaker")[0] == "baseline"
    for name in AUGMENTATIONS:
        assert ROBUSTNESS_VARIANTS[name].train == {"channel_augment": (name,)}
    for variant in ROBUSTNESS_VARIANTS.values():
        TrainConfig().replace(**variant.train)  # each one builds a valid recipe
        ModelConfig(**variant.model)
    assert ROBUSTNESS_VARIANTS["instance-norm"].model == {"input_norm": "instance"}


def _held_out(fold: int, variant: str, uar: float, arousal: float) -> dict:
    corpus = ("ravdess", "savee", "tess")[fold]
    part = {"n": 100, "uar": uar, "arousal_uar": arousal, "valence_uar": 0.4}
    return {
        **_robust(fold, variant, 0.9, 0.8),
        "protocol": "corpus",
        "held_out": {"n": 100, "accuracy": 0.3, "by_corpus": {corpus: part}},
    }


def test_held_out_corpus_scores_are_paired_with_the_same_folds_baseline(tmp_path: Path) -> None:
    path = tmp_path / "ablation.json"
    merge_ablation(path, {**_robust(0, "baseline", 0.9, 0.8), "protocol": "corpus"})  # unscored
    assert held_out_ablation_table(path) == ""
    merge_ablation(path, _held_out(0, "baseline", 0.30, 0.70))
    merge_ablation(path, _held_out(0, "neither", 0.34, 0.65))
    table = held_out_ablation_table(path).splitlines()
    assert table[0].startswith("| base recipe | fold | held-out corpus | variant |")
    assert (
        table[2]
        == "| level none, augment none | 0 | ravdess | baseline | 90.00 | 0.300 | 0.700 | 0.400 |"
    )
    assert (
        "| 0 | ravdess | neither | 90.00 | 0.340 (+0.040) | 0.650 (-0.050) | 0.400 (+0.000) |"
        in (table[3])
    )
    assert len(table) == 4  # one fold: no means
    merge_ablation(path, _held_out(1, "baseline", 0.20, 0.60))
    merge_ablation(path, _held_out(1, "neither", 0.30, 0.75))
    table = held_out_ablation_table(path).splitlines()
    means = table[table.index("") + 1 :]
    assert means[0].startswith("| base recipe | variant | epochs | folds | mean UAR |")
    assert means[2].startswith("| level none, augment none | baseline | 12 | 0,1 | 0.250 | 0.650 |")
    # neither: UAR changes +0.04 and +0.10 (mean +0.07, sd 0.042); arousal -0.05 and +0.15
    assert means[3] == (
        "| level none, augment none | neither | 12 | 0,1 | 0.320 (+0.070 +- 0.042) "
        "| 0.700 (+0.050 +- 0.141) | 0.400 (+0.000 +- 0.000) |"
    )


def test_each_corpus_selection_keeps_its_own_folds_and_tables(tmp_path: Path) -> None:
    """Fold 0 of the paper's three corpora holds out RAVDESS, fold 0 of seven holds out ASED:
    rows of the two are kept apart, and each selection's tables pair only its own rows."""
    from training.report import ablation_selections

    path = tmp_path / "ablation.json"
    seven = "ased+emotiontts+nemo+ravdess+savee+tess+turev"
    merge_ablation(path, _held_out(0, "baseline", 0.30, 0.70))  # no selection: the paper's
    merge_ablation(path, _held_out(0, "neither", 0.34, 0.65))
    merge_ablation(path, {**_held_out(0, "baseline", 0.50, 0.80), "selection": seven})
    rows = merge_ablation(path, {**_held_out(0, "neither", 0.40, 0.90), "selection": seven})
    assert len(rows) == 4  # the same protocol, fold, variant and length, twice
    assert [r.get("selection") for r in rows] == [None, None, seven, seven]
    assert ablation_selections(path, "corpus") == ["ravdess+savee+tess", seven]
    assert ablation_selections(path, "speaker") == []

    paper = held_out_ablation_table(path).splitlines()
    assert "| neither | 90.00 | 0.340 (+0.040) | 0.650 (-0.050) |" in paper[3]
    mine = held_out_ablation_table(path, seven).splitlines()
    assert len(mine) == 4
    assert "| neither | 90.00 | 0.400 (-0.100) | 0.900 (+0.100) |" in mine[3]
    assert robustness_table(path, "corpus", seven).count("| neither |") == 1
