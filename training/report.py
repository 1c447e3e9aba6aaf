"""Figures and the markdown report: our results beside the paper's Tables 1 and 2.

A *run record* is the dict that :mod:`training.pipeline` writes for each trained model into
``metrics.json`` (``{"runs": [record, ...]}``)::

    {"protocol": "random" | "speaker" | "corpus", "fold": int, "loss": "ce",
     "architecture": "sequential", "best_epoch": int, "split_file": str, "split_sha256": str,
     "train": {"loss", "accuracy"}, "val": {"loss", "accuracy", "macro_f1"},
     "test": classification_metrics(...) + {"loss"}, "history": [per-epoch rows]}

Train and validation figures are scored in eval mode on the whole set (train: the clean
training clips, without their noisy copies) with the best epoch's weights. The speaker protocol
has one record per fold; its tables give the mean and the standard deviation over folds, and its
confusion matrix sums the folds. The ``corpus`` protocol (leave one corpus out) has one record per
held-out corpus, tabled by :func:`held_out_corpus_table`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from app.labels import LABELS
from training.calibrate import N_BINS, N_RESAMPLES
from training.evaluate import affect_uars
from training.splits import PAPER_CORPORA, selection_folder, selection_name

AFFECT_NOTE = (
    "The 8-way decision mapped to binary arousal (high: angry, happy, fearful, surprised, "
    "disgust; low: neutral, calm, sad; clips labelled disgust left out) and to valence "
    "(negative, neutral, positive), app/affect.py; UAR of each."
)
GAIN_NOTE = (
    "`python -m training gain-check`: every test clip scaled, clipped and quantised as a "
    "16-bit WAV would hold it, then through the server's trim, window and features. "
    "Accuracy at each gain, and in brackets the share of clips whose label differs from "
    "the 0 dB label."
)
LOSS_TITLES = {
    "l1": "L1",
    "smoothl1": "Smooth L1",
    "bce": "Binary cross-entropy",
    "ce": "Cross-entropy",
}
PAPER_ORDER = ("l1", "smoothl1", "bce", "ce")

# The paper's Table 1: loss and accuracy (%) on train / validation / test.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float, float]]] = {
    "l1": {"loss": (0.120, 0.142, 0.124), "accuracy": (28.12, 43.31, 44.14)},
    "smoothl1": {"loss": (0.003, 0.023, 0.021), "accuracy": (100.0, 72.61, 73.85)},
    "bce": {"loss": (0.002, 0.215, 0.198), "accuracy": (100.0, 76.01, 77.62)},
    "ce": {"loss": (0.003, 1.283, 1.153), "accuracy": (100.0, 73.46, 74.90)},
}
# The paper's Table 2: test precision / recall / F1.
PAPER_TABLE2: dict[str, tuple[float, float, float]] = {
    "l1": (0.6357, 0.3954, 0.4233),
    "smoothl1": (0.6102, 0.6109, 0.6069),
    "bce": (0.6275, 0.6255, 0.6238),
    "ce": (0.6198, 0.6130, 0.6077),
}

Record = dict[str, Any]


# ---------------------------------------------------------------- figures


def plot_confusion(
    confusion: np.ndarray, path: str | os.PathLike[str], title: str = "", normalise: bool = True
) -> None:
    """One confusion matrix (rows: true, columns: predicted) as a PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    _draw_confusion(ax, np.asarray(confusion), title, normalise)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _draw_confusion(ax: Any, confusion: np.ndarray, title: str, normalise: bool) -> None:
    counts = confusion.astype(float)
    rows = counts.sum(axis=1, keepdims=True)
    shown = (
        np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalise else counts
    )
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    ticks = range(len(LABELS))
    ax.set_xticks(ticks, LABELS, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, LABELS, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in ticks:
        for j in ticks:
            if counts[i, j]:
                colour = "white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black"
                ax.text(
                    j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7, color=colour
                )


def _draw_curves(
    ax: Any, history: list[dict[str, float]], key: str, title: str, best_epoch: int | None = None
) -> None:
    epochs = [row["epoch"] for row in history]
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    scale = 100.0 if key == "accuracy" else 1.0
    ax.plot(epochs, [row[f"train_{key}"] * scale for row in history], label="train")
    ax.plot(epochs, [row[f"val_{key}"] * scale for row in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)" if key == "accuracy" else "loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(
    history: list[dict[str, float]],
    path: str | os.PathLike[str],
    title: str = "",
    best_epoch: int | None = None,
) -> None:
    """Loss and accuracy per epoch (train and validation) side by side, as a PNG."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    _draw_curves(left, history, "loss", f"{title} loss", best_epoch)
    _draw_curves(right, history, "accuracy", f"{title} accuracy", best_epoch)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _grid(records: dict[str, Record], path: Path, draw: Any) -> None:
    """A 2 x 2 figure, one panel per loss in the paper's order (a) L1 ... (d) CE."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 10), dpi=110)
    for ax, loss, letter in zip(axes.flat, PAPER_ORDER, "abcd", strict=True):
        if loss in records:
            draw(ax, records[loss], f"({letter}) {LOSS_TITLES[loss]}")
        else:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def paper_figures(records: dict[str, Record], out_dir: Path, prefix: str) -> list[Path]:
    """Figures 2-4 of the paper (confusion matrices, loss curves, accuracy curves) for our runs."""
    paths = [
        out_dir / f"{prefix}-fig{n}-{name}.png"
        for n, name in ((2, "confusion"), (3, "loss"), (4, "accuracy"))
    ]
    _grid(
        records,
        paths[0],
        lambda ax, r, t: _draw_confusion(ax, np.asarray(r["test"]["confusion"]), t, True),
    )
    _grid(
        records,
        paths[1],
        lambda ax, r, t: _draw_curves(ax, r["history"], "loss", t, r.get("best_epoch")),
    )
    _grid(
        records,
        paths[2],
        lambda ax, r, t: _draw_curves(ax, r["history"], "accuracy", t, r.get("best_epoch")),
    )
    return paths


# ---------------------------------------------------------------- tables


def _values(records: list[Record], part: str, key: str, scale: float = 1.0) -> np.ndarray:
    return np.array([float(r[part][key]) * scale for r in records])


def _cell(values: np.ndarray, digits: int) -> str:
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def table1(groups: dict[str, list[Record]]) -> str:
    """Loss and accuracy on train / val / test, ours beside the paper's."""
    lines = [
        "| Loss | Loss train / val / test (paper) | Loss train / val / test (ours) "
        "| Accuracy % train / val / test (paper) | Accuracy % train / val / test (ours) |",
        "|---|---|---|---|---|",
    ]
    for loss in PAPER_ORDER:
        runs = groups.get(loss, [])
        paper = PAPER_TABLE1[loss]
        ours_loss = " / ".join(_cell(_values(runs, p, "loss"), 3) for p in ("train", "val", "test"))
        ours_acc = " / ".join(
            _cell(_values(runs, p, "accuracy", 100.0), 2) for p in ("train", "val", "test")
        )
        lines.append(
            f"| {LOSS_TITLES[loss]} | {' / '.join(f'{v:.3f}' for v in paper['loss'])} "
            f"| {ours_loss} | {' / '.join(f'{v:.2f}' for v in paper['accuracy'])} | {ours_acc} |"
        )
    return "\n".join(lines)


def table2(groups: dict[str, list[Record]]) -> str:
    """Test macro precision / recall / F1, ours beside the paper's, plus our UAR."""
    lines = [
        "| Loss | Precision (paper) | Precision (ours) | Recall (paper) | Recall = UAR (ours) "
        "| F1 (paper) | F1 (ours) |",
        "|---|---|---|---|---|---|---|",
    ]
    for loss in PAPER_ORDER:
        runs = groups.get(loss, [])
        p, r, f = PAPER_TABLE2[loss]
        ours = [
            _cell(_values(runs, "test", k), 4)
            for k in ("macro_precision", "macro_recall", "macro_f1")
        ]
        lines.append(
            f"| {LOSS_TITLES[loss]} | {p:.4f} | {ours[0]} | {r:.4f} | {ours[1]} "
            f"| {f:.4f} | {ours[2]} |"
        )
    return "\n".join(lines)


def per_class_table(groups: dict[str, list[Record]]) -> str:
    """Test F1 per emotion and loss (mean over folds)."""
    losses = [loss for loss in PAPER_ORDER if groups.get(loss)]
    lines = [
        "| Emotion | " + " | ".join(LOSS_TITLES[x] for x in losses) + " |",
        "|---" * (len(losses) + 1) + "|",
    ]
    for label in LABELS:
        cells = [
            f"{np.mean([r['test']['per_class'][label]['f1-score'] for r in groups[loss]]):.3f}"
            for loss in losses
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def architecture_table(records: list[Record]) -> str:
    """Test accuracy / macro-F1 per architecture for every (protocol, loss) trained with both."""
    by_key: dict[tuple[str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_key[(r["protocol"], r["loss"])][r["architecture"]].append(r)
    lines = [
        "| Protocol | Loss | Architecture | Val accuracy % | Val macro-F1 | Test accuracy % "
        "| Test macro-F1 | Best epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (protocol, loss), archs in sorted(by_key.items()):
        if len(archs) < 2:
            continue
        for arch, runs in sorted(archs.items()):
            lines.append(
                f"| {protocol} | {LOSS_TITLES[loss]} | {arch} "
                f"| {_cell(_values(runs, 'val', 'accuracy', 100.0), 2)} "
                f"| {_cell(_values(runs, 'val', 'macro_f1'), 4)} "
                f"| {_cell(_values(runs, 'test', 'accuracy', 100.0), 2)} "
                f"| {_cell(_values(runs, 'test', 'macro_f1'), 4)} "
                f"| {', '.join(str(r['best_epoch']) for r in runs)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


# ablation.json rows written before each row recorded its base recipe (training/ablation.py)
# were all trained on this one.
LEGACY_BASE = "level none, augment none"


def row_base(row: Record) -> str:
    return row.get("base", LEGACY_BASE)


def row_selection(row: Record) -> str:
    """The corpus selection an ablation row trained on; rows written before it was recorded
    were all on the paper's three corpora."""
    return row.get("selection", selection_name(PAPER_CORPORA))


def _ablation_rows(path: Path, protocol: str, selection: str | None = None) -> list[Record]:
    """``path``'s rows of ``protocol`` (and of ``selection``; None: the paper's three)."""
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["ablation"]
    selection = selection or selection_name(PAPER_CORPORA)
    return [
        r for r in rows if r.get("protocol", "random") == protocol and row_selection(r) == selection
    ]


def ablation_selections(path: Path, protocol: str) -> list[str]:
    """The corpus selections with ``protocol`` rows in ``path``: the paper's three first."""
    if not path.exists():
        return []
    paper = selection_name(PAPER_CORPORA)
    rows = json.loads(path.read_text())["ablation"]
    found = {row_selection(r) for r in rows if r.get("protocol", "random") == protocol}
    return sorted(found, key=lambda name: (name != paper, name))


def ablation_table(path: Path) -> str:
    """The markdown table of the ``random`` rows of ``ablation.json`` (the regulariser
    variants, :mod:`training.ablation`); "" when there are none."""
    rows = _ablation_rows(path, "random")
    if not rows:
        return ""
    corpora = sorted({c for r in rows for c in r["val_accuracy_by_corpus"]})
    head = "| variant | best epoch | val accuracy | val macro-F1 | "
    # No minutes column: these short runs shared the CPU with other work, so their times say
    # little; the release's training cost is in its own table.
    head += " | ".join(f"val {c}" for c in corpora) + " |"
    lines = [head, "|" + "---|" * (4 + len(corpora))]
    for r in rows:
        by_corpus = " | ".join(
            f"{r['val_accuracy_by_corpus'].get(c, float('nan')):.3f}" for c in corpora
        )
        lines.append(
            f"| {r['variant']} | {r['best_epoch']}/{r['epochs']} | {r['val']['accuracy']:.4f} | "
            f"{r['val']['macro_f1']:.4f} | {by_corpus} |"
        )
    return "\n".join(lines)


def _pair_key(row: Record) -> tuple[str, int, int]:
    return (row_base(row), row["fold"], row["epochs"])


def _baselines(rows: list[Record]) -> dict[tuple[str, int, int], Record]:
    """Each (base recipe, fold, epochs)'s ``baseline`` row: the one its variants are paired with."""
    return {_pair_key(r): r for r in rows if r["variant"] == "baseline"}


def _paired_over_folds(
    rows: list[Record],
) -> dict[tuple[str, str, int], list[tuple[Record, Record]]]:
    """(base recipe, variant, epochs) -> its (row, same fold's baseline) pairs, for each one
    run on 2 or more folds (a baseline is paired with itself)."""
    baselines = _baselines(rows)
    runs: dict[tuple[str, str, int], list[tuple[Record, Record]]] = {}
    for r in rows:
        base = baselines.get(_pair_key(r))
        if base is not None:
            runs.setdefault((row_base(r), r["variant"], r["epochs"]), []).append((r, base))
    return {key: pairs for key, pairs in runs.items() if len(pairs) >= 2}


def robustness_table(path: Path, protocol: str, selection: str | None = None) -> str:
    """The ``protocol`` (speaker / corpus) rows of ``ablation.json`` on ``selection`` (None: the
    paper's three corpora): per fold and variant, validation accuracy, macro-F1 and each
    corpus's UAR, with the change from the same fold's ``baseline`` in brackets; "" when there
    are none."""
    rows = _ablation_rows(path, protocol, selection)
    if not rows:
        return ""
    corpora = sorted({c for r in rows for c in r["val_by_corpus"]})
    baselines = _baselines(rows)

    def cell(value: float | None, ref: float | None, scale: float, digits: int) -> str:
        if value is None:
            return ""
        text = f"{value * scale:.{digits}f}"
        return text if ref is None else f"{text} ({(value - ref) * scale:+.{digits}f})"

    def uar(row: Record | None, corpus: str) -> float | None:
        return None if row is None else row["val_by_corpus"].get(corpus, {}).get("uar")

    head = "| base recipe | fold | variant | best epoch | val accuracy % | val macro-F1 | "
    head += " | ".join(f"val UAR {c}" for c in corpora) + " |"
    lines = [head, "|" + "---|" * (6 + len(corpora))]
    for r in rows:
        base = baselines.get(_pair_key(r))
        base = None if base is r else base
        cells = [
            cell(r["val"]["accuracy"], None if base is None else base["val"]["accuracy"], 100, 2),
            cell(r["val"]["macro_f1"], None if base is None else base["val"]["macro_f1"], 1, 4),
        ] + [cell(uar(r, c), uar(base, c), 1.0, 3) for c in corpora]
        lines.append(
            f"| {row_base(r)} | {r['fold']} | {r['variant']} | {r['best_epoch']}/{r['epochs']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def robustness_summary(path: Path, protocol: str, selection: str | None = None) -> str:
    """Each variant of the ``protocol`` rows over the folds it ran on, with the fold's baseline:
    mean +- sd of validation accuracy, macro-F1 and each corpus's UAR, and in brackets the mean
    +- sd of the paired change from the baseline on the same folds. Variants run on fewer than
    2 folds are left to :func:`robustness_table`; "" when none has 2.
    """
    rows = [r for r in _ablation_rows(path, protocol, selection) if "val_by_corpus" in r]
    runs = _paired_over_folds(rows)
    if not runs:
        return ""
    corpora = sorted({c for r in rows for c in r["val_by_corpus"]})

    def spread(values: list[float], scale: float, digits: int, sign: str = "") -> str:
        sd = float(np.std(values, ddof=1))
        return f"{np.mean(values) * scale:{sign}.{digits}f} +- {sd * scale:.{digits}f}"

    def cell(pairs: list[tuple[Record, Record]], value: Any, scale: float, digits: int) -> str:
        values = [value(r) for r, _ in pairs]
        if any(v is None for v in values):
            return ""
        text = spread(values, scale, digits)
        if pairs[0][0] is pairs[0][1]:  # the baseline itself
            return text
        changes = [value(r) - value(b) for r, b in pairs]
        return f"{text} ({spread(changes, scale, digits, '+')})"

    head = "| base recipe | variant | epochs | folds | val accuracy % | val macro-F1 | "
    head += " | ".join(f"val UAR {c}" for c in corpora) + " |"
    lines = [head, "|" + "---|" * (6 + len(corpora))]
    order = list(dict.fromkeys(r["variant"] for r in rows))
    bases = list(dict.fromkeys(row_base(r) for r in rows))
    for (recipe, variant, epochs), pairs in sorted(
        runs.items(),
        key=lambda kv: (bases.index(kv[0][0]), kv[0][2], order.index(kv[0][1])),
    ):
        cells = [
            cell(pairs, lambda r: r["val"]["accuracy"], 100, 2),
            cell(pairs, lambda r: r["val"]["macro_f1"], 1, 4),
        ] + [
            cell(pairs, lambda r, c=c: r["val_by_corpus"].get(c, {}).get("uar"), 1, 3)
            for c in corpora
        ]
        folds = ",".join(str(r["fold"]) for r, _ in pairs)
        lines.append(f"| {recipe} | {variant} | {epochs} | {folds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


HELD_OUT_SCORES = (("uar", "UAR"), ("arousal_uar", "arousal UAR"), ("valence_uar", "valence UAR"))


def held_out_ablation_table(path: Path, selection: str | None = None) -> str:
    """The ``corpus`` rows of ``ablation.json`` scored on their held-out corpus
    (``ablate --score-held-out``): per fold and variant, that corpus's 8-way UAR and the arousal
    and valence UAR of the decision, with the change from the same fold's ``baseline`` in
    brackets; then, for each variant run on 2 or more folds, the mean over them and the mean +-
    sd of the paired change. "" when no row was scored so."""
    rows = [r for r in _ablation_rows(path, "corpus", selection) if "held_out" in r]
    if not rows:
        return ""
    baselines = _baselines(rows)

    def score(row: Record, key: str) -> float:
        (part,) = row["held_out"]["by_corpus"].values()
        return float(part[key])

    head = "| base recipe | fold | held-out corpus | variant | val accuracy % | "
    head += " | ".join(title for _, title in HELD_OUT_SCORES) + " |"
    lines = [head, "|" + "---|" * (5 + len(HELD_OUT_SCORES))]
    for r in rows:
        base = baselines.get(_pair_key(r))
        cells = []
        for key, _ in HELD_OUT_SCORES:
            text = f"{score(r, key):.3f}"
            if base is not None and base is not r:
                text += f" ({score(r, key) - score(base, key):+.3f})"
            cells.append(text)
        (corpus,) = r["held_out"]["by_corpus"]
        lines.append(
            f"| {row_base(r)} | {r['fold']} | {corpus} | {r['variant']} | "
            f"{100 * r['val']['accuracy']:.2f} | " + " | ".join(cells) + " |"
        )
    means = _paired_over_folds(rows)
    if not means:
        return "\n".join(lines)
    lines += [
        "",
        "| base recipe | variant | epochs | folds | "
        + " | ".join(f"mean {title}" for _, title in HELD_OUT_SCORES)
        + " |",
        "|" + "---|" * (4 + len(HELD_OUT_SCORES)),
    ]
    for (recipe, variant, epochs), runs in means.items():
        cells = []
        for key, _ in HELD_OUT_SCORES:
            text = f"{np.mean([score(r, key) for r, _ in runs]):.3f}"
            if runs[0][0] is not runs[0][1]:
                changes = [score(r, key) - score(b, key) for r, b in runs]
                text += f" ({np.mean(changes):+.3f} +- {np.std(changes, ddof=1):.3f})"
            cells.append(text)
        folds = ",".join(str(r["fold"]) for r, _ in runs)
        lines.append(f"| {recipe} | {variant} | {epochs} | {folds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corpus_table(groups: dict[str, list[Record]]) -> str:
    """Test accuracy on each corpus's part of the test split, per loss."""
    corpora = sorted(
        {
            c
            for runs in groups.values()
            for r in runs
            for c in r["test"].get("accuracy_by_corpus", {})
        }
    )
    if not corpora:
        return ""
    lines = [
        "| Loss | " + " | ".join(f"{c} %" for c in corpora) + " |",
        "|---|" + "---|" * len(corpora),
    ]
    for loss in PAPER_ORDER:
        if loss not in groups:
            continue
        cells = [
            _cell(
                np.array(
                    [
                        100.0 * r["test"].get("accuracy_by_corpus", {}).get(c, np.nan)
                        for r in groups[loss]
                    ]
                ),
                2,
            )
            for c in corpora
        ]
        lines.append(f"| {LOSS_TITLES[loss]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _part_values(runs: list[Record], corpus: str, key: str, scale: float = 1.0) -> np.ndarray:
    return np.array(
        [
            scale * r["test"]["by_corpus"][corpus][key]
            for r in runs
            if corpus in r["test"].get("by_corpus", {})
        ]
    )


def corpus_detail_table(runs: list[Record]) -> str:
    """Accuracy, macro-F1 and UAR on each corpus's test clips, mean ± sd over the folds."""
    corpora = sorted({c for r in runs for c in r["test"].get("by_corpus", {})})
    if not corpora:
        return ""
    lines = [
        "| Test clips of | Accuracy % | Macro-F1 | UAR | Folds |",
        "|---|---|---|---|---|",
    ]
    overall = (
        _cell(_values(runs, "test", "accuracy", 100.0), 2),
        _cell(_values(runs, "test", "macro_f1"), 4),
        _cell(_values(runs, "test", "uar"), 4),
    )
    lines.append(f"| all | {' | '.join(overall)} | {len(runs)} |")
    for corpus in corpora:
        cells = (
            _cell(_part_values(runs, corpus, "accuracy", 100.0), 2),
            _cell(_part_values(runs, corpus, "macro_f1"), 4),
            _cell(_part_values(runs, corpus, "uar"), 4),
        )
        lines.append(
            f"| {corpus} | {' | '.join(cells)} | {len(_part_values(runs, corpus, 'uar'))} |"
        )
    return "\n".join(lines)


def held_out_corpus_table(runs: list[Record]) -> str:
    """Leave one corpus out: per held-out corpus, its UAR, accuracy and macro-F1 (8-way argmax;
    averages over the classes the corpus has and the training corpora taught)."""
    lines = [
        "| Held-out corpus | Trained on | Clips | UAR | Accuracy % | Macro-F1 | UAR over "
        "| Arousal UAR | Valence UAR | Level stage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: r["fold"]):
        (corpus, part), *_ = r["test"]["by_corpus"].items()
        trained_on = sorted(set(r["val"].get("by_corpus", {})))
        affect = affect_uars(r["test"]["confusion"])
        lines.append(
            f"| {corpus} | {' + '.join(trained_on) or '-'} | {part['n']} | {part['uar']:.4f} "
            f"| {100 * part['accuracy']:.2f} | {part['macro_f1']:.4f} "
            f"| {len(part['classes'])} classes | {_score(affect['arousal_uar'])} "
            f"| {_score(affect['valence_uar'])} | {level_stage(r)} |"
        )
    return "\n".join(lines)


def level_stage(record: Record) -> str:
    """The front-end level stage a run trained with ("none" before it existed)."""
    return str(record.get("feature_config", {}).get("level", "none"))


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def affect_table(groups: dict[str, list[Record]]) -> str:
    """Test arousal (binary) and valence (3-class) UAR of the decision, per loss."""
    lines = ["| Loss | Arousal UAR | Valence UAR | Level stage |", "|---|---|---|---|"]
    for loss in PAPER_ORDER:
        runs = groups.get(loss, [])
        if not runs:
            continue
        affect = [affect_uars(r["test"]["confusion"]) for r in runs]
        cells = [
            _cell(np.array([a[k] for a in affect if a[k] is not None]), 4)
            for k in ("arousal_uar", "valence_uar")
        ]
        stages = ", ".join(sorted({level_stage(r) for r in runs}))
        lines.append(f"| {LOSS_TITLES[loss]} | {cells[0]} | {cells[1]} | {stages} |")
    return "\n".join(lines)


def gain_table(path: Path) -> str:
    """The gain-invariance figures of ``gain.json`` (training/gaincheck.py), if present."""
    if not path.exists():
        return ""
    from training.gaincheck import table

    return table(list(json.loads(path.read_text())["models"].values()))


def cost_table(records: list[Record]) -> str:
    """How each model was trained: epochs, best epoch, minutes, device and precision."""
    lines = [
        "| Protocol | Architecture | Loss | Epochs run (best) | Training minutes "
        "| Device, precision |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(
        records,
        key=lambda r: (r["protocol"], r["architecture"], r["fold"], PAPER_ORDER.index(r["loss"])),
    ):
        fold = f" fold {r['fold']}" if r["protocol"] != "random" else ""
        epochs = r.get("epochs_run", len(r.get("history", [])))
        minutes = f"{r['train_seconds'] / 60:.1f}" if "train_seconds" in r else "-"
        lines.append(
            f"| {r['protocol']}{fold} | {r['architecture']} | {LOSS_TITLES[r['loss']]} "
            f"| {epochs} ({r['best_epoch']}) | {minutes} "
            f"| {r.get('device', '-')}, {r.get('precision', 'fp32')} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the report


def selection_of(record: Record) -> str:
    """The corpus selection a record belongs to (``training.splits.selection_name``): the
    corpora it trained on and the one a corpus fold held out for its test, so that the seven
    folds over seven corpora are one protocol of one selection, not seven selections of six.
    Records from before there was a choice (no ``corpora``) are of the paper's three."""
    trained = record.get("corpora")
    if not trained:
        return selection_name(list(PAPER_CORPORA))
    tested = record.get("test", {}).get("by_corpus", {})
    return selection_name(sorted(set(trained) | set(tested)))


def _selections(records: list[Record]) -> list[tuple[str, str, list[Record]]]:
    """(heading suffix, figure prefix, records) per corpus selection: the paper's three first
    (as the report was before there were others, like a manifest's own ``custom`` corpus),
    then the others by name."""
    paper = selection_name(PAPER_CORPORA)
    names = sorted({selection_of(r) for r in records}, key=lambda n: (n != paper, n))
    out = []
    for name in names:
        mine = [r for r in records if selection_of(r) == name]
        suffix = _selection_suffix(name)
        out.append((suffix, f"{len(name.split('+'))}corpora-" if suffix else "", mine))
    return out


def _by_loss(records: list[Record], protocol: str, architecture: str) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r["protocol"] == protocol and r["architecture"] == architecture:
            groups[r["loss"]].append(r)
    for runs in groups.values():
        runs.sort(key=lambda r: r.get("fold", 0))
    return groups


def summed_record(runs: list[Record]) -> Record:
    """One record standing for a protocol's folds: confusion summed; curves of the first fold."""
    first = dict(runs[0])
    first["test"] = dict(first["test"])
    first["test"]["confusion"] = np.sum(
        [np.asarray(r["test"]["confusion"]) for r in runs], axis=0
    ).tolist()
    return first


def rewrite_report(models_dir: Path) -> Path:
    """Write ``<models_dir>/report/`` from the ``metrics.json``, ``ablation.json`` and
    ``calibration.json`` there (the last two when present); returns report.md's path."""
    records = json.loads((models_dir / "metrics.json").read_text())["runs"]
    calibration_path = models_dir / "calibration.json"
    calibration = (
        json.loads(calibration_path.read_text())["calibration"] if calibration_path.exists() else []
    )
    ablation = models_dir / "ablation.json"
    robustness = {}
    for p in ("speaker", "corpus"):
        for selection in ablation_selections(ablation, p):
            tables = (
                robustness_table(ablation, p, selection),
                _summary_note(robustness_summary(ablation, p, selection)),
                _held_out_ablation_note(
                    held_out_ablation_table(ablation, selection) if p == "corpus" else ""
                ),
            )
            robustness[f"`{p}` folds{_selection_suffix(selection)}"] = "\n\n".join(
                t for t in tables if t
            )
    return write_report(
        records,
        models_dir / "report",
        ablation_table(ablation),
        calibration,
        {heading: table for heading, table in robustness.items() if table},
        gain_table(models_dir / "gain.json"),
    )


def _selection_suffix(selection: str) -> str:
    """A heading's mention of a corpus selection: none for the paper's three (or some of them),
    as before there were others; ", N corpora (a, b, ...)" for any other."""
    corpora = selection.split("+")
    if not selection_folder(corpora):
        return ""
    return f", {len(corpora)} corpora ({', '.join(corpora)})"


def _ece_cell(measured: Record) -> str:
    # Records written before 2026-12-06 carry no bootstrap spread.
    spread = measured.get("ece_sd")
    return f"{measured['ece']:.4f}" + (f" ± {spread:.4f}" if spread is not None else "")


def calibration_table(calibration: list[Record]) -> str:
    """Temperature, validation ECE and test ECE (± its bootstrap standard deviation) / NLL
    before and after, per calibrated model."""
    lines = [
        "| Model | Split | Temperature | Val ECE before / after | Test ECE before "
        "| Test ECE after | Test NLL before | Test NLL after | Mean confidence before / after "
        "| Test accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in calibration:
        before, after, val = r["test"]["before"], r["test"]["after"], r["val"]
        lines.append(
            f"| {r['model']} | `{r['split_file']}` | {r['temperature']:.3f} "
            f"| {val['ece_before']:.4f} / {val['ece_after']:.4f} "
            f"| {_ece_cell(before)} | {_ece_cell(after)} "
            f"| {before['nll']:.4f} | {after['nll']:.4f} "
            f"| {before['mean_confidence']:.3f} / {after['mean_confidence']:.3f} "
            f"| {100 * after['accuracy']:.2f} % |"
        )
    return "\n".join(lines)


def plot_reliability(record: Record, path: Path) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for key, style in (("before", "o--"), ("after", "s-")):
        bins = [b for b in record["test"][key]["bins"] if b["n"]]
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            style,
            label=f"{key} (ECE {record['test'][key]['ece']:.3f})",
        )
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{record['model']}: T = {record['temperature']:.2f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _protocol_sections(records: list[Record], out: Path, suffix: str, tag: str) -> list[str]:
    """The corpus, random and speaker sections of one corpus selection's records, with their
    figures (file names start with ``tag``)."""
    sections: list[str] = []
    for arch in sorted({r["architecture"] for r in records if r["protocol"] == "corpus"}):
        groups = _by_loss(records, "corpus", arch)
        for loss, runs in sorted(groups.items()):
            sections.append(
                f"## Protocol `corpus` (leave one corpus out), {LOSS_TITLES[loss]}, `{arch}`"
                f"{suffix}\n"
            )
            sections.append(f"Split file(s): {_split_files({loss: runs})}\n")
            sections.append(_held_out_note() + "\n\n" + held_out_corpus_table(runs) + "\n")
    for protocol in ("random", "speaker"):
        archs = {r["architecture"] for r in records if r["protocol"] == protocol}
        for arch in sorted(archs, key=lambda a: (a != "sequential", a)):
            groups = _by_loss(records, protocol, arch)
            if not groups:
                continue
            n_folds = max(len(runs) for runs in groups.values())
            folds = f", mean ± std over {n_folds} folds" if n_folds > 1 else ""
            prefix = f"{tag}{protocol}-{arch}"
            sections.append(f"## Protocol `{protocol}`, architecture `{arch}`{suffix}{folds}\n")
            sections.append(f"Split file(s): {_split_files(groups)}\n")
            sections.append("### Table 1: loss and accuracy\n\n" + table1(groups) + "\n")
            sections.append(
                "### Table 2: test precision, recall, F1 (macro)\n\n" + table2(groups) + "\n"
            )
            sections.append("### Test F1 per emotion\n\n" + per_class_table(groups) + "\n")
            sections.append(
                "### Arousal and valence of the decision (test UAR)\n\n"
                + AFFECT_NOTE
                + "\n\n"
                + affect_table(groups)
                + "\n"
            )
            by_corpus = corpus_table(groups)
            if by_corpus:
                sections.append("### Test accuracy per corpus\n\n" + by_corpus + "\n")
            if protocol == "speaker":
                for loss, runs in groups.items():
                    detail = corpus_detail_table(runs)
                    if detail:
                        sections.append(
                            f"### {LOSS_TITLES[loss]}: unseen speakers per corpus "
                            "(TESS: unseen words)\n\n" + detail + "\n"
                        )
            merged = {loss: summed_record(runs) for loss, runs in groups.items()}
            figures = paper_figures(merged, out, prefix)
            for loss, record in merged.items():
                plot_confusion(
                    np.asarray(record["test"]["confusion"]),
                    out / f"{prefix}-{loss}-confusion.png",
                    f"{prefix} {loss}",
                )
                plot_curves(
                    record["history"],
                    out / f"{prefix}-{loss}-curves.png",
                    f"{prefix} {loss}",
                    record.get("best_epoch"),
                )
            sections.append(
                "Figures (as the paper's Figures 2-4): "
                + ", ".join(f"[{p.name}]({p.name})" for p in figures)
                + "; per loss: `"
                + f"{prefix}-<loss>-confusion.png`, `{prefix}-<loss>-curves.png`.\n"
            )
    return sections


def write_report(
    records: list[Record],
    out_dir: str | os.PathLike[str],
    ablation: str = "",
    calibration: list[Record] | None = None,
    robustness: dict[str, str] | None = None,
    gains: str = "",
) -> Path:
    """Write ``report.md`` plus per-run and paper-style figures into ``out_dir``; returns it.

    ``ablation``: the markdown table of the recipe ablation (:func:`ablation_table`), if any;
    ``calibration``: the records of ``calibration.json`` (:mod:`training.calibrate`), if any;
    ``robustness``: heading (the protocol's folds, and the corpus selection where it is not the
    paper's) -> the tables of its robustness ablation (:func:`robustness_table`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# Results\n", _protocol_notes()]
    for suffix, tag, chosen in _selections(records):
        sections += _protocol_sections(chosen, out, suffix, tag)
    comparison = architecture_table(records)
    if comparison:
        sections.append("## Sequential vs parallel layout\n\n" + comparison + "\n")
    if ablation:
        sections.append(
            "## Recipe ablation (validation split only)\n\nShort CE runs on the `random` "
            "split, one variant of the regularisation each, scored on the validation rows "
            "(the test rows are not scored); `python -m training ablate`. `all` is SpecAugment + "
            "mixup + label smoothing, `no-<x>` is `all` without `<x>`, `none` has no "
            "regulariser.\n\n" + ablation + "\n"
        )
    for heading, table in (robustness or {}).items():
        sections.append(
            f"## Robustness ablation, {heading}\n\n" + ROBUSTNESS_NOTE + "\n\n" + table + "\n"
        )
    if calibration:
        for record in calibration:
            plot_reliability(record, out / f"calibration-{record['model']}.png")
        sections.append(
            "## Calibration (temperature scaling)\n\n"
            "Each released model's temperature T was fitted on the validation rows of its own "
            "split file (the table's second column; negative log-likelihood) and is stored in the "
            "model's metadata; "
            "the server serves softmax(scores / T). Measured on the test rows: expected "
            f"calibration error over {N_BINS} equal-width confidence bins (± its standard "
            f"deviation over {N_RESAMPLES} bootstrap draws of the test rows: how far another "
            "draw of as many clips would move it), and NLL; `python -m training calibrate`.\n\n"
            + calibration_table(calibration)
            + "\n\nReliability diagrams: "
            + ", ".join(
                f"[calibration-{r['model']}.png](calibration-{r['model']}.png)" for r in calibration
            )
            + ".\n"
        )
    if gains:
        sections.append("## Gain invariance (test split)\n\n" + GAIN_NOTE + "\n\n" + gains + "\n")
    sections.append("## Training cost\n\n" + cost_table(records) + "\n")
    path = out / "report.md"
    path.write_text("\n".join(sections))
    return path


def _split_files(groups: dict[str, list[Record]]) -> str:
    files = sorted(
        {(r["split_file"], r["split_sha256"][:12]) for runs in groups.values() for r in runs}
    )
    return ", ".join(f"`{name}` (sha256 {sha}…)" for name, sha in files)


ROBUSTNESS_NOTE = (
    "Short CE runs (`python -m training ablate --protocol <p> --folds N --epochs E`), one "
    "change each against the baseline, chosen and scored on the fold's validation rows: on a "
    "`speaker` fold those are speakers the model never heard; on a `corpus` fold they are a "
    "tenth of the training corpora. A channel augmentation (`training/channel.py`) is applied "
    "with probability 0.5 to each noisy copy; `channel-all` chains all six; `instance-norm` "
    "normalises each window's mel bands over time inside the model; `balance-sqrt` and "
    "`balance-equal` draw each clip with weight n_corpus^-0.5 or n_corpus^-1 (`--corpus-balance`), "
    "so the smaller corpora fill more of each epoch; `class-balance` draws each corpus's "
    "classes evenly within that corpus's share (`--class-balance 1`); `all-labels` trains the "
    "plain loss over all eight classes instead of each corpus's label set; `adversary-speaker` "
    "and `adversary-corpus` "
    "train a gradient-reversal head that learns to name the training speaker or corpus "
    "(`--adversary`, `training/adversary.py`); `no-level-stage`, `no-gain-augment` and "
    "`neither` take the level stage, the `level` + `clip` augmentations, or both out of the "
    "release recipe. The first column is each row's base recipe: `level none, augment none` "
    "at 12 epochs is the recipe of 2026-11-24 (label smoothing 0.1, baseline included), at 24 "
    "epochs the release recipe of 2026-12-02 (`label-smoothing`: the former one); `level "
    "window, augment level+clip, trim relative` is the release recipe of 2026-12-05 (each "
    "row's `train_config` records its recipe). In brackets: the change from the `baseline` "
    "of the same base recipe, fold and length. UAR is over the classes the corpus's "
    "validation rows have."
)


def _summary_note(table: str) -> str:
    if not table:
        return ""
    return (
        "Over the folds each variant ran on: mean +- sd, and in brackets the mean +- sd of the "
        "paired change from the same folds' `baseline`.\n\n" + table
    )


def _held_out_ablation_note(table: str) -> str:
    if not table:
        return ""
    return (
        "The corpus-fold rows run with `--score-held-out` (`python -m training ablate "
        "--protocol corpus --score-held-out`), scored on the corpus each fold held out: what "
        "validation cannot show, whether a change carries to a recording setup the model never "
        "heard. "
        "These scores judge a change after the fact; they choose nothing. UAR over the classes "
        "the held-out corpus has and the training corpora taught; arousal and valence UAR of "
        "the 8-way decision.\n\n" + table
    )


def _held_out_note() -> str:
    return (
        "Each row is one model trained on the other corpora (validation: a stratified tenth of "
        "them) and tested on every clip of the held-out one, with the 8-way decision. UAR and "
        "macro-F1 average over the classes that corpus has and the training corpora taught: "
        "`calm` exists only in RAVDESS, so with RAVDESS held out its calm clips count in the "
        "accuracy (always wrong) but not in the UAR."
    )


def _protocol_notes() -> str:
    return (
        "Paper figures are from its Tables 1 and 2 (random 80/10/10 split of RAVDESS + SAVEE + "
        "TESS, the training set tripled with Gaussian noise). Ours: train and validation loss "
        "and accuracy are measured in eval mode with the best epoch's weights (train: the "
        "training clips without their noisy copies); test metrics are macro averages over the "
        "8 classes; UAR = macro "
        "recall. Losses are on different scales per loss function and only comparable within a "
        "row.\n"
    )
