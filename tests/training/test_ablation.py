"""The ablation's bookkeeping: results merged by (variant, epochs) and rendered as a table."""

from __future__ import annotations

from pathlib import Path

from training.ablation import VARIANTS, merge_ablation
from training.report import ablation_table


def _result(variant: str, epochs: int, accuracy: float) -> dict:
    return {
        "variant": variant,
        "changes": VARIANTS[variant],
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
