"""Short runs that choose the training recipe, scored on the validation split only.

``python -m training ablate`` prepares the ``random`` split once (the same split file, segments
and features as ``train``), then fits one model per variant of the recipe and records its best
validation scores, overall and per corpus. The test rows are never scored here: the recipe is
chosen on validation, and the test split is scored once per released model.

Each variant is a set of TrainConfig changes from the base recipe (the command's flags). The
results go to ``<out>/ablation.json``, which the report turns into a table.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training.evaluate import accuracy_by
from training.pipeline import Experiment, prepare_split, split_files, subset
from training.train import fit, predict_logits, score

# name -> TrainConfig changes, against a base recipe with every regulariser on.
VARIANTS: dict[str, dict[str, Any]] = {
    "all": {},  # SpecAugment + mixup + label smoothing
    "no-specaugment": {"freq_masks": 0, "time_masks": 0},
    "no-mixup": {"mixup_alpha": 0.0},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "none": {"freq_masks": 0, "time_masks": 0, "mixup_alpha": 0.0, "label_smoothing": 0.0},
}


def merge_ablation(path: Path, result: dict) -> list[dict]:
    """Add ``result`` to ``path`` (replacing the same variant at the same number of epochs)."""
    rows = json.loads(path.read_text())["ablation"] if path.exists() else []
    key = (result["variant"], result["epochs"])
    rows = [r for r in rows if (r["variant"], r["epochs"]) != key] + [result]
    rows.sort(key=lambda r: (r["epochs"], list(VARIANTS).index(r["variant"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ablation": rows}, indent=1))
    return rows


def run_ablation(exp: Experiment, variants: dict[str, dict[str, Any]] = VARIANTS) -> list[dict]:
    """Fit each variant on the random split; return (and write) its validation scores."""
    from training.corpora import corpus_root, load_corpus
    from training.model import ModelConfig

    exp = replace(exp, protocol="random")
    clips = subset(load_corpus(exp.data), exp.train.limit, exp.train.seed)
    root = corpus_root(exp.data)
    [(name, fold, path)] = split_files(exp, clips, root)
    split = prepare_split(exp, root, name, fold, path)
    out_file = exp.out / "ablation.json"
    results: list[dict] = []
    for variant, changes in variants.items():
        config = exp.train.replace(loss=exp.losses[0], **changes)
        model_config = ModelConfig(
            n_mels=split.feature_config.n_mels, n_frames=split.train.features.shape[-1]
        )
        run_dir = exp.runs / "ablation" / f"{variant}-{config.epochs}ep"
        started = time.perf_counter()
        result = fit(
            model_config, config, split.feature_config, split.train, split.val, run_dir, exp.resume
        )
        x_val = torch.from_numpy(split.val.features)
        logits = predict_logits(result.model, x_val, config.eval_batch_size, "fp32")
        val = score(logits, torch.from_numpy(split.val.labels), config.loss)
        results.append(
            {
                "variant": variant,
                "changes": changes,
                "loss": config.loss,
                "epochs": config.epochs,
                "best_epoch": result.best_epoch,
                "train_seconds": round(time.perf_counter() - started, 1),
                "val": val,
                "val_accuracy_by_corpus": accuracy_by(
                    split.corpora["val"], split.val.labels, logits.argmax(-1).numpy()
                ),
                "split_sha256": split.split_sha256,
                "train_config": config.to_dict(),
            }
        )
        merge_ablation(out_file, results[-1])
        print(f"{variant}: val accuracy {val['accuracy']:.4f}, macro-F1 {val['macro_f1']:.4f}")
    return results
