"""The training loop: features computed once, resident on the device, AdamW + warm-up/cosine.

Shape of a run (:func:`fit`):

- seeded (Python, NumPy, torch; the batch order comes from a seeded device generator);
- the whole training set lives on the device as one float32 tensor ``(n, n_mels, frames)``;
  batches are index gathers on the device (no DataLoader, no host-to-device copies per step);
- AdamW, linear warm-up for ``warmup_epochs`` then cosine decay to ``lr * min_lr_ratio``,
  stepped per batch; gradient clipping at ``grad_clip``;
- bf16 autocast on CUDA when ``amp`` (no loss scaling needed with bf16); plain fp32 on CPU;
- validation after every epoch; the best epoch by ``monitor`` (validation macro-F1 by default:
  the classes are unbalanced, calm exists in RAVDESS only) is kept and checkpointed with its
  ModelConfig, TrainConfig and FeatureConfig; training stops after ``patience`` epochs without
  improvement, or after the epoch that spends ``time_budget_s``;
- ``history.json`` and ``history.csv`` (one row per epoch: lr, train/val loss and accuracy,
  val macro-F1, seconds) are rewritten after each epoch.

Train loss and accuracy are running means over the epoch's batches (train mode: dropout on,
noisy copies included), as most training logs report them.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from app.features import FeatureConfig, log_mel
from training.config import TrainConfig
from training.losses import make_loss
from training.model import ModelConfig, build_model

FEATURE_CHUNK = 64  # clips per log_mel call: bounds the FFT's temporary memory


# ---------------------------------------------------------------- features, computed once


def _log_mel_chunk(args: tuple[np.ndarray, FeatureConfig]) -> np.ndarray:
    wave, config = args
    return log_mel(wave, config)


def compute_features(
    segments: np.ndarray, config: FeatureConfig, workers: int = 1, desc: str = "features"
) -> np.ndarray:
    """Log-mel features of every segment, in the config's normalisation (usually none yet).

    Args:
        segments: float32 ``(n, window_samples)``.
        config: the front-end; ``log_mel`` is the one the server runs.
        workers: processes (1 = in this process).

    Returns:
        float32 ``(n, n_mels, frames)``.
    """
    n = len(segments)
    out = np.empty((n, config.n_mels, config.n_frames(segments.shape[-1])), dtype=np.float32)
    starts = range(0, n, FEATURE_CHUNK)
    jobs = ((segments[s : s + FEATURE_CHUNK], config) for s in starts)
    with contextlib.ExitStack() as stack:
        if workers > 1 and n > FEATURE_CHUNK:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results: Iterator[np.ndarray] = pool.map(_log_mel_chunk, jobs)
        else:
            results = map(_log_mel_chunk, jobs)
        bar = tqdm(total=n, desc=desc, unit="clip", leave=False)
        for start, chunk in zip(starts, results, strict=True):
            out[start : start + len(chunk)] = chunk
            bar.update(len(chunk))
        bar.close()
    return out


def band_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and std over clips and frames: (n, n_mels, frames) -> 2 x (n_mels,)."""
    total = np.zeros(features.shape[1], dtype=np.float64)
    total_sq = np.zeros(features.shape[1], dtype=np.float64)
    for start in range(0, len(features), 256):  # float64 sums, without a float64 copy
        chunk = features[start : start + 256].astype(np.float64)
        total += chunk.sum(axis=(0, 2))
        total_sq += np.square(chunk).sum(axis=(0, 2))
    count = features.shape[0] * features.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, np.maximum(std, 1e-5)


def normalise_(features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Apply ``config``'s statistics in place, exactly as ``log_mel`` does with them."""
    if config.mean is None or config.std is None:
        raise ValueError("the FeatureConfig carries no statistics; use FeatureConfig.with_stats")
    mean = np.asarray(config.mean, dtype=np.float32)[:, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None]
    for start in range(0, len(features), 256):
        chunk = features[start : start + 256]
        np.subtract(chunk, mean, out=chunk)
        np.divide(chunk, std, out=chunk)
    return features


# ---------------------------------------------------------------- the loop


@dataclass
class LabelledFeatures:
    """Features (n, n_mels, frames) float32 and their label indices (n,) int64."""

    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.labels)} labels")


@dataclass
class FitResult:
    model: nn.Module  # the best epoch's weights, eval mode, on the training device
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


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


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(
    model: nn.Module, features: torch.Tensor, batch_size: int = 512, amp: bool = False
) -> torch.Tensor:
    """Eval-mode logits (n, n_labels) float32 for device-resident features (n, n_mels, frames)."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(features), batch_size):
        with _autocast(features.device, amp):
            chunks.append(model(features[start : start + batch_size]).float())
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


def save_checkpoint(
    path: Path,
    model: nn.Module,
    model_config: ModelConfig,
    train_config: TrainConfig,
    feature_config: FeatureConfig,
    extra: dict[str, Any] | None = None,
) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "model": state,
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


def _write_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    with (run_dir / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _improved(new: dict[str, float], best: dict[str, float] | None, monitor: str) -> bool:
    if best is None:
        return True
    if new[monitor] != best[monitor]:
        return new[monitor] > best[monitor]
    return new["loss"] < best["loss"]  # a tie on the score: the lower validation loss wins


def fit(
    model_config: ModelConfig,
    config: TrainConfig,
    feature_config: FeatureConfig,
    train: LabelledFeatures,
    val: LabelledFeatures,
    run_dir: Path | None = None,
) -> FitResult:
    """Train a fresh model on normalised features and return the best epoch's model."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = build_model(model_config).to(device)
    step_model: nn.Module = model
    if config.compile and device.type == "cuda":
        step_model = torch.compile(model)  # type: ignore[assignment]
    x_train = torch.from_numpy(train.features).to(device)
    y_train = torch.from_numpy(train.labels.astype(np.int64)).to(device)
    x_val = torch.from_numpy(val.features).to(device)
    y_val = torch.from_numpy(val.labels.astype(np.int64)).to(device)
    loss_fn = make_loss(config.loss)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: warmup_cosine(step, warmup_steps, total_steps, config.min_lr_ratio),
    )
    generator = torch.Generator(device=device).manual_seed(config.seed)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_epoch, stale = 0, 0
    checkpoint = run_dir / "best.pt" if run_dir is not None else None
    epochs = tqdm(range(1, config.epochs + 1), desc=f"{config.loss} epochs", unit="epoch")
    fit_started = time.perf_counter()
    for epoch in epochs:
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), device=device, generator=generator)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in tqdm(
            range(0, len(order), config.batch_size), leave=False, unit="batch", disable=None
        ):
            index = order[start : start + config.batch_size]
            xb, yb = x_train[index], y_train[index]
            with _autocast(device, config.amp):
                logits = step_model(xb)
            loss = loss_fn(logits.float(), yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            scheduler.step()
            # Accumulate on the device: a .item() per step would stall the GPU every step.
            loss_sum += loss.detach() * len(index)
            correct += (logits.argmax(dim=-1) == yb).sum()
        val_scores = score(
            predict_logits(model, x_val, config.eval_batch_size, config.amp), y_val, config.loss
        )
        row = {
            "epoch": float(epoch),
            "lr": float(scheduler.get_last_lr()[0]),
            "train_loss": float(loss_sum) / len(x_train),
            "train_accuracy": float(correct) / len(x_train),
            "val_loss": val_scores["loss"],
            "val_accuracy": val_scores["accuracy"],
            "val_macro_f1": val_scores["macro_f1"],
            "seconds": time.perf_counter() - started,
        }
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training loss became {row['train_loss']} at epoch {epoch}")
        history.append(row)
        if _improved(val_scores, best, config.monitor):
            best, best_epoch, stale = val_scores, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    model,
                    model_config,
                    config,
                    feature_config,
                    {"epoch": epoch, "val": val_scores},
                )
        else:
            stale += 1
        if run_dir is not None:
            _write_history(run_dir, history)
        epochs.set_postfix(
            loss=f"{row['train_loss']:.3f}",
            val_acc=f"{row['val_accuracy']:.3f}",
            val_f1=f"{row['val_macro_f1']:.3f}",
            best=best_epoch,
        )
        if stale >= config.patience:
            tqdm.write(f"early stop at epoch {epoch}: best {config.monitor} at epoch {best_epoch}")
            break
        if config.time_budget_s is not None and time.perf_counter() - fit_started > (
            config.time_budget_s
        ):
            tqdm.write(f"time budget of {config.time_budget_s:.0f} s spent after epoch {epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    assert best is not None
    return FitResult(model, best_epoch, best[config.monitor], history, checkpoint)
