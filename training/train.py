"""The training loop: a device-resident feature pool, one pass per epoch, resumable.

Shape of a run (:func:`fit`):

- set-up (:func:`start_run`): seeded Python / NumPy / torch; the model in ``channels_last``;
  torch threads = the cores this process may use; AdamW with linear warm-up for
  ``warmup_epochs`` then cosine decay to ``lr * min_lr_ratio``, stepped per batch;
- the training pool lives on the device as one half-precision tensor
  ``(versions * n, n_mels, frames)``: every training clip and its noisy copies, copy-major.
  An epoch (:func:`run_epoch`) draws one version of each clip (clean or a noisy copy,
  uniformly), so it costs one pass over the clips while the whole tripled pool is seen over
  the run; batches are index gathers on the device (no DataLoader);
- each batch: SpecAugment masks, mixup on a fraction of the batches (training/regularise.py),
  the forward pass under bf16 autocast where the hardware has it (training/device.py), the
  loss in fp32 (label smoothing for CE), gradient clipping at ``grad_clip``;
- the loss: ``config.loss``, after ``config.ce_epochs`` opening epochs of cross-entropy (a
  warm-up for L1, whose softmax gradient vanishes for a class that starts out losing);
- validation after every epoch; :class:`BestEpoch` keeps the best epoch by ``monitor``
  (validation macro-F1 by default: the classes are unbalanced, calm exists in RAVDESS only;
  warm-up epochs are not candidates) and stops after ``patience`` epochs without improvement,
  or after the epoch that spends ``time_budget_s``;
- after every epoch, in the run folder: ``last.pt`` (everything :func:`fit` needs to resume,
  written atomically), ``best.pt`` when the epoch is the best so far (the model with its
  ModelConfig, TrainConfig and FeatureConfig), ``history.json`` / ``history.csv`` and one line
  in ``train.log``. ``fit(..., resume=True)`` continues a killed run from ``last.pt`` and gives
  the same history as a run that was never interrupted.

Train loss and accuracy are running means over the epoch's batches (train mode: dropout,
masks and mixup on; accuracy against each clip's own label), as most training logs report them.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from app.features import FeatureConfig
from training.adversary import Adversary, group_indices, reversal_scale
from training.config import OPERATIONAL_KEYS, REMOVED_KEYS, TrainConfig
from training.device import autocast, resolve_device, resolve_precision, use_all_cores
from training.labelsets import corpus_label_sets, restrict
from training.losses import make_loss
from training.model import CnnTransformer, ModelConfig, build_model
from training.regularise import Mixup, SpecAugment

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
LOG_FILE = "train.log"


@dataclass
class LabelledFeatures:
    """Features ``(versions * n, n_mels, frames)`` and label indices ``(versions * n,)``.

    ``versions > 1`` is a training pool: rows ``v * n : (v + 1) * n`` are version ``v`` (0 the
    clean clips, then the noisy copies) of clips ``0 .. n - 1``. Float32 or float16 features.
    """

    features: np.ndarray
    labels: np.ndarray
    versions: int = 1
    groups: np.ndarray | None = None  # (n,) each clip's corpus, for TrainConfig.corpus_balance
    speakers: np.ndarray | None = None  # (n,) each clip's speaker, for TrainConfig.adversary

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.labels)} labels")
        if self.versions < 1 or len(self.labels) % self.versions:
            raise ValueError(f"{len(self.labels)} rows do not split into {self.versions} versions")
        for name in ("groups", "speakers"):
            keys = getattr(self, name)
            if keys is not None and len(keys) != self.n_clips:
                raise ValueError(f"{len(keys)} {name} for {self.n_clips} clips")

    def adversary_keys(self, adversary: str) -> np.ndarray:
        """(n,) what TrainConfig.adversary learns to name: each clip's speaker or corpus."""
        keys = self.speakers if adversary == "speaker" else self.groups
        if keys is None:
            what = "speakers" if adversary == "speaker" else "corpora (groups)"
            raise ValueError(f"a {adversary} adversary needs the training clips' {what}")
        return keys

    @property
    def n_clips(self) -> int:
        return len(self.labels) // self.versions


@dataclass
class FitResult:
    model: nn.Module  # the best epoch's weights, eval mode, on the training device
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def predict_logits(
    model: nn.Module, features: torch.Tensor, batch_size: int = 512, precision: str = "fp32"
) -> torch.Tensor:
    """Eval-mode logits (n, n_labels) float32 for device-resident features (n, n_mels, frames)."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(features), batch_size):
        with autocast(features.device, precision):
            chunks.append(model(features[start : start + batch_size].float()).float())
    model.train(was_training)
    return torch.cat(chunks)


def score(logits: torch.Tensor, labels: torch.Tensor, loss_name: str) -> dict[str, float]:
    """Loss, accuracy and macro-F1 of ``logits`` (n, n_labels) against ``labels`` (n,)."""
    loss = float(make_loss(loss_name)(logits, labels))
    predicted = logits.argmax(dim=-1).cpu().numpy()
    truth = labels.cpu().numpy()
    n_labels = logits.shape[-1]
    return {
        "loss": loss,
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(
            f1_score(truth, predicted, labels=range(n_labels), average="macro", zero_division=0)
        ),
    }


# ---------------------------------------------------------------- checkpoints


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary name, then rename: a kill leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    model_config: ModelConfig,
    train_config: TrainConfig,
    feature_config: FeatureConfig,
    extra: dict[str, Any] | None = None,
) -> None:
    _save_atomic(
        {
            "model": _cpu_state(model),
            "model_config": model_config.to_dict(),
            "train_config": train_config.to_dict(),
            "feature_config": feature_config.to_dict(),
            **(extra or {}),
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode, CPU) saved at ``path`` and the checkpoint's other entries."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig.from_dict(data["model_config"]))
    model.load_state_dict(data["model"])
    return model.eval(), data


# ---------------------------------------------------------------- best epoch, early stopping


@dataclass
class BestEpoch:
    """The best validation scores so far, their epoch and weights, and the patience count."""

    monitor: str
    patience: int
    scores: dict[str, float] | None = None
    epoch: int = 0
    stale: int = 0
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def better(self, new: dict[str, float]) -> bool:
        if self.scores is None:
            return True
        if new[self.monitor] != self.scores[self.monitor]:
            return new[self.monitor] > self.scores[self.monitor]
        return new["loss"] < self.scores["loss"]  # a tie on the score: lower validation loss

    def update(self, epoch: int, scores: dict[str, float], model: nn.Module) -> bool:
        """Record ``epoch``; True when it is the new best."""
        if not self.better(scores):
            self.stale += 1
            return False
        self.scores, self.epoch, self.stale = scores, epoch, 0
        self.state = copy.deepcopy(_cpu_state(model))
        return True

    @property
    def exhausted(self) -> bool:
        return self.stale >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "epoch": self.epoch,
            "stale": self.stale,
            "state": self.state,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.scores, self.epoch, self.stale = data["scores"], data["epoch"], data["stale"]
        self.state = data["state"]


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    """Everything that changes while training, and everything needed to resume it."""

    config: TrainConfig
    model_config: ModelConfig
    feature_config: FeatureConfig
    device: torch.device
    precision: str  # resolved: "fp32" or "bf16"
    model: CnnTransformer
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # batch order, versions, masks, mixup pairs
    rng: random.Random  # which batches are mixed, and their weights
    best: BestEpoch
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # over all sessions of a resumed run
    session_seconds: float = 0.0  # in this process: what --time-budget bounds
    adversary: Adversary | None = None  # TrainConfig.adversary's head (training only)
    total_steps: int = 1  # optimiser steps of the whole run: the reversal's ramp

    @property
    def progress(self) -> float:
        """Fraction of the run's optimiser steps taken."""
        return self.scheduler.last_epoch / self.total_steps

    @property
    def epoch(self) -> int:
        return len(self.history)

    def state(self) -> dict[str, Any]:
        return {
            "model": _cpu_state(self.model),
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # Dropout and the masks draw on the GPU's generators when training runs there.
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": self.rng.getstate(),
            "best": self.best.to_dict(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "train_config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "feature_config": self.feature_config.to_dict(),
            "adversary": None if self.adversary is None else _cpu_state(self.adversary),
        }

    def restore(self, data: dict[str, Any]) -> None:
        # Through from_dict: a key added since the checkpoint was written takes its default,
        # which computes what the run computed before the key existed.
        saved: dict[str, TrainConfig | ModelConfig] = {
            "train_config": TrainConfig.from_dict(data["train_config"]),
            "model_config": ModelConfig.from_dict(data["model_config"]),
        }
        for key, mine in (("train_config", self.config), ("model_config", self.model_config)):
            if _what_it_computes(saved[key].to_dict()) != _what_it_computes(mine.to_dict()):
                raise ValueError(
                    f"the checkpoint to resume was trained with another {key}; resume with the "
                    "same settings, or start afresh without --resume (or with another --runs)"
                )
        self.model.load_state_dict(data["model"])
        if self.adversary is not None:
            self.adversary.load_state_dict(data["adversary"])
        self.optimiser.load_state_dict(data["optimiser"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.generator.set_state(data["generator"])
        torch.set_rng_state(data["torch_rng"])
        if data.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(data["cuda_rng"])
        version, internal, gauss = data["python_rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.best.load(data["best"])
        self.history = list(data["history"])
        self.train_seconds = float(data["train_seconds"])


def _what_it_computes(config: dict[str, Any]) -> dict[str, Any]:
    """A config without the keys that only say how a run is carried out (another device, a new
    time budget): a resume may change those."""
    return {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS and k not in REMOVED_KEYS}


def start_run(
    model_config: ModelConfig,
    config: TrainConfig,
    feature_config: FeatureConfig,
    steps_per_epoch: int,
    adversary_groups: int = 0,
) -> Run:
    """A fresh, seeded run: model, optimiser, schedule and random sources; with
    ``config.adversary``, an adversary head over ``adversary_groups`` speakers or corpora."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if device.type == "cpu":
        use_all_cores()
    model = build_model(model_config).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    parameters = list(model.parameters())
    adversary = None
    if config.adversary != "none":
        # Its own draw of the torch RNG: the model's dropout sees the same numbers as without it.
        with torch.random.fork_rng(devices=[]):
            adversary = Adversary(model.embedding_dim, adversary_groups).to(device)
        parameters += list(adversary.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.peak_lr, weight_decay=config.weight_decay)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: warmup_cosine(step, warmup_steps, total_steps, config.min_lr_ratio),
    )
    return Run(
        config=config,
        model_config=model_config,
        feature_config=feature_config,
        device=device,
        precision=resolve_precision(config.precision, device),
        model=model,
        optimiser=optimiser,
        scheduler=scheduler,
        generator=torch.Generator(device=device).manual_seed(config.seed),
        rng=random.Random(config.seed),
        best=BestEpoch(config.monitor, config.patience),
        adversary=adversary,
        total_steps=total_steps,
    )


def draw_weights(
    groups: np.ndarray,
    balance: float,
    labels: np.ndarray | None = None,
    class_balance: float = 0.0,
) -> np.ndarray:
    """Each clip's chance of being drawn, normalised to sum to 1: ``n_group ** -balance``; with
    ``class_balance``, within each group ``n_cell ** -class_balance`` (``n_cell`` the clips of
    its group x label cell), rescaled so that every group keeps its share."""
    _, group, n_group = np.unique(groups, return_inverse=True, return_counts=True)
    weights = n_group[group].astype(np.float64) ** -balance
    if class_balance > 0:
        if labels is None or len(labels) != len(groups):
            raise ValueError("class_balance needs one label per clip")
        _, cell, n_cell = np.unique(
            np.stack([group, labels]), axis=1, return_inverse=True, return_counts=True
        )
        within = n_cell[cell.ravel()].astype(np.float64) ** -class_balance
        share = np.bincount(group, weights=within)  # each group's total, to rescale to n_group
        weights *= within * n_group[group] / share[group]
    return weights / weights.sum()


def _epoch_rows(
    n_clips: int, versions: int, run: Run, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``n_clips`` pool rows in random order, each clip's version drawn uniformly: every clip
    once, or, with ``weights``, clips drawn by weight with replacement."""
    if weights is None:
        order = torch.randperm(n_clips, device=run.device, generator=run.generator)
    else:
        order = torch.multinomial(weights, n_clips, replacement=True, generator=run.generator)
    version = torch.randint(0, versions, (n_clips,), device=run.device, generator=run.generator)
    return version * n_clips + order


def run_epoch(
    run: Run,
    x_pool: torch.Tensor,
    y_pool: torch.Tensor,
    versions: int,
    weights: torch.Tensor | None = None,
    adversary_pool: torch.Tensor | None = None,
    allowed_pool: torch.Tensor | None = None,
) -> dict:
    """One epoch of as many draws as there are training clips; returns its mean train loss and
    accuracy, and with an adversary (``adversary_pool``: each clip's group id) its loss and
    accuracy at naming the group. ``allowed_pool`` ``(n_clips, n_labels)``: each clip's label
    set, which its loss is restricted to (a mixed pair: the union of both sets)."""
    config, model = run.config, run.model
    loss_fn = make_loss(config.loss_at(run.epoch + 1), config.label_smoothing)
    masks = SpecAugment(
        config.freq_masks, config.freq_mask_width, config.time_masks, config.time_mask_width
    )
    mixup = Mixup(config.mixup_alpha, config.mixup_prob)
    model.train()
    n_clips = len(y_pool) // versions
    rows = _epoch_rows(n_clips, versions, run, weights)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.long)
    adversary_sum = torch.zeros((), device=run.device)
    adversary_correct = torch.zeros((), device=run.device, dtype=torch.long)
    # Shown in a log file too (nohup ... > x.log), every 10 s there: an epoch takes minutes,
    # and its bar alone would sit at 0 until the first one ends.
    interactive = sys.stderr.isatty()
    batches = tqdm(
        range(0, len(rows), config.batch_size),
        leave=False,
        unit="batch",
        desc=f"epoch {run.epoch + 1}",
        mininterval=0.1 if interactive else 10.0,
    )
    for start in batches:
        index = rows[start : start + config.batch_size]
        xb, yb = masks(x_pool[index].float(), run.generator), y_pool[index]
        mix = mixup.draw(len(index), run.rng, run.generator, run.device)
        if mix is not None:
            lam, pair = mix
            xb = lam * xb + (1.0 - lam) * xb[pair]
        with autocast(run.device, run.precision):
            embedding = model.embed(xb)
            logits = model.head(embedding)
            group_logits = None
            if run.adversary is not None:
                scale = reversal_scale(run.progress, config.adversary_weight)
                group_logits = run.adversary(embedding, scale)
        logits = logits.float()
        scored = logits
        if allowed_pool is not None:
            allowed = allowed_pool[index % n_clips]
            scored = restrict(logits, allowed if mix is None else allowed | allowed[pair])
        loss = loss_fn(scored, yb)
        if mix is not None:
            loss = lam * loss + (1.0 - lam) * loss_fn(scored, yb[pair])
        total = loss
        if group_logits is not None and adversary_pool is not None:
            group_logits = group_logits.float()
            gb = adversary_pool[index % n_clips]  # pool row -> its clip's group
            group_loss = nn.functional.cross_entropy(group_logits, gb)
            if mix is not None:
                other = nn.functional.cross_entropy(group_logits, gb[pair])
                group_loss = lam * group_loss + (1.0 - lam) * other
            total = loss + group_loss
            adversary_sum += group_loss.detach() * len(index)
            adversary_correct += (group_logits.argmax(dim=-1) == gb).sum()
        run.optimiser.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        run.optimiser.step()
        run.scheduler.step()
        # Accumulate on the device: a .item() per step would stall a GPU every step.
        loss_sum += loss.detach() * len(index)
        correct += (logits.argmax(dim=-1) == yb).sum()
    n = len(rows)
    scores = {"train_loss": float(loss_sum) / n, "train_accuracy": float(correct) / n}
    if run.adversary is not None:
        scores["train_adversary_loss"] = float(adversary_sum) / n
        scores["train_adversary_accuracy"] = float(adversary_correct) / n
    return scores


def _write_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    with (run_dir / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _log_line(run_dir: Path, text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with (run_dir / LOG_FILE).open("a") as f:
        f.write(f"{stamp} {text}\n")


def _end_epoch(run: Run, row: dict[str, float], val: dict[str, float], run_dir: Path) -> None:
    """Files after an epoch: best.pt when it is the best, then last.pt, history, log line."""
    epoch = int(row["epoch"])
    if run.best.epoch == epoch:
        save_checkpoint(
            run_dir / BEST_CHECKPOINT,
            run.model,
            run.model_config,
            run.config,
            run.feature_config,
            {"epoch": epoch, "val": val},
        )
    _save_atomic(run.state(), run_dir / LAST_CHECKPOINT)
    _write_history(run_dir, run.history)
    _log_line(
        run_dir,
        f"{run.config.loss_at(epoch)} epoch {epoch}/{run.config.epochs} lr {row['lr']:.2e} "
        f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
        f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} "
        f"macro-F1 {row['val_macro_f1']:.4f} | best epoch {run.best.epoch or '-'} | "
        f"{row['seconds']:.1f} s",
    )


EpochHook = Callable[[Run], None]


def fit(
    model_config: ModelConfig,
    config: TrainConfig,
    feature_config: FeatureConfig,
    train: LabelledFeatures,
    val: LabelledFeatures,
    run_dir: Path | None = None,
    resume: bool = False,
    on_epoch_end: EpochHook | None = None,
) -> FitResult:
    """Train a fresh model (or resume ``run_dir/last.pt``) on normalised features.

    Returns the best epoch's model. ``on_epoch_end`` is called after each epoch's files are
    written (the resume test kills its process there).
    """
    steps_per_epoch = math.ceil(train.n_clips / config.batch_size)
    adversary_ids, adversary_groups = None, 0
    if config.adversary != "none":
        adversary_ids, adversary_groups = group_indices(train.adversary_keys(config.adversary))
    run = start_run(model_config, config, feature_config, steps_per_epoch, adversary_groups)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        last = run_dir / LAST_CHECKPOINT
        if resume and last.exists():
            run.restore(torch.load(last, map_location="cpu", weights_only=True))
            tqdm.write(f"resuming {run_dir} after epoch {run.epoch}")
            _log_line(run_dir, f"resumed after epoch {run.epoch}")
        else:
            _log_line(
                run_dir,
                f"{config.loss}: {config.epochs} epochs of {steps_per_epoch} batches "
                f"({train.n_clips} clips) on {run.device} in {run.precision}"
                + (f", the first {config.ce_epochs} with ce" if config.ce_epochs else ""),
            )
    x_pool = torch.from_numpy(train.features).to(run.device)
    y_pool = torch.from_numpy(train.labels.astype(np.int64)).to(run.device)
    weights = None
    if config.corpus_balance > 0 or config.class_balance > 0:
        if train.groups is None:
            raise ValueError(
                "corpus_balance and class_balance need the training clips' corpora (groups)"
            )
        drawn = draw_weights(
            train.groups,
            config.corpus_balance,
            train.labels[: train.n_clips],
            config.class_balance,
        )
        weights = torch.from_numpy(drawn).to(run.device)
    adversary_pool = None
    if adversary_ids is not None:
        adversary_pool = torch.from_numpy(adversary_ids).to(run.device)
    allowed_pool = None
    if config.label_sets == "corpus" and train.groups is not None:
        # Without corpora (groups) the clips are one corpus, and the loss ranges over all.
        n_labels = model_config.n_labels
        sets = corpus_label_sets(train.groups, train.labels[: train.n_clips], n_labels)
        allowed_pool = torch.from_numpy(sets).to(run.device)
    x_val = torch.from_numpy(val.features).to(run.device)
    y_val = torch.from_numpy(val.labels.astype(np.int64)).to(run.device)
    epochs = tqdm(
        range(run.epoch + 1, config.epochs + 1), desc=f"{config.loss} epochs", unit="epoch"
    )
    for epoch in epochs:
        if run.best.exhausted or _budget_spent(run):
            break
        started = time.perf_counter()
        try:
            train_scores = run_epoch(
                run, x_pool, y_pool, train.versions, weights, adversary_pool, allowed_pool
            )
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (python -m training turns it into this)
            if run_dir is not None:
                _log_line(run_dir, f"interrupted in epoch {epoch}; {_resumable(run, run_dir)}")
            raise
        if not math.isfinite(train_scores["train_loss"]):
            raise FloatingPointError(f"training loss became {train_scores['train_loss']}")
        logits = predict_logits(run.model, x_val, config.eval_batch_size, run.precision)
        val_scores = score(logits, y_val, config.loss)
        if epoch > config.ce_epochs:  # a warm-up epoch is not yet a model of its loss
            run.best.update(epoch, val_scores, run.model)
        seconds = time.perf_counter() - started
        run.train_seconds += seconds
        run.session_seconds += seconds
        row = {"epoch": float(epoch), "lr": float(run.scheduler.get_last_lr()[0])}
        row |= train_scores
        row |= {f"val_{k}": v for k, v in val_scores.items()}
        row["seconds"] = seconds
        run.history.append(row)
        if run_dir is not None:
            _end_epoch(run, row, val_scores, run_dir)
        epochs.set_postfix(
            loss=f"{row['train_loss']:.3f}",
            val_acc=f"{row['val_accuracy']:.3f}",
            val_f1=f"{row['val_macro_f1']:.3f}",
            best=run.best.epoch,
        )
        if on_epoch_end is not None:
            on_epoch_end(run)
    if run.best.exhausted:
        tqdm.write(f"early stop: best {config.monitor} at epoch {run.best.epoch}")
    return _finish(run, run_dir)


def _resumable(run: Run, run_dir: Path) -> str:
    """What --resume would continue from, said to a user whose run was interrupted."""
    if run.epoch == 0:
        return "no epoch had finished: --resume starts from the beginning"
    return f"--resume continues after epoch {run.epoch} ({run_dir / LAST_CHECKPOINT})"


def _budget_spent(run: Run) -> bool:
    """Whether this process has trained for its ``time_budget_s``: a budget bounds one
    invocation (a host that limits commands), so ``--resume`` continues with a fresh one."""
    budget = run.config.time_budget_s
    if budget is None or run.session_seconds <= budget:
        return False
    tqdm.write(f"time budget of {budget:.0f} s spent after epoch {run.epoch}")
    return True


def _finish(run: Run, run_dir: Path | None) -> FitResult:
    if run.best.scores is None:
        raise RuntimeError(
            "no epoch after the CE warm-up was trained (a resumed run that had already "
            "finished, or a time budget spent inside the warm-up?)"
        )
    model = run.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model.load_state_dict(run.best.state)
    model.eval()
    checkpoint = run_dir / BEST_CHECKPOINT if run_dir is not None else None
    return FitResult(
        model, run.best.epoch, run.best.scores[run.config.monitor], run.history, checkpoint
    )
