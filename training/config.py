"""Training hyper-parameters: one dataclass, saved in every checkpoint and run folder.

No torch here, so the CLI can build and print a config without importing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from app.contract import LOSSES, Loss
from app.features import FeatureConfig

# The front-end of every model trained from here on: each window heard at one speech level
# (app/features.py, the level stage; models exported before 2026-12-04 carry level "none"),
# cut from a silence trim that does not depend on the recording's level (app/segment.py;
# models exported before 2026-12-05 carry trim_floor "absolute").
RELEASE_FEATURES = FeatureConfig(level="window", trim_floor="relative")

Precision = Literal["auto", "fp32", "bf16"]

# Peak learning rate per loss when TrainConfig.lr is None. L1 on the softmax gives vanishing
# gradients once a clip's true-class probability is near 0: at 2e-3 the released recipe's L1
# run collapsed to one class within 4 epochs (validation accuracy 28 % -> 14 %), at 5e-4 it
# trains (see the model card).
PEAK_LR: dict[str, float] = {"ce": 2e-3, "bce": 2e-3, "smoothl1": 2e-3, "l1": 5e-4}
# Epochs of cross-entropy that open a run before its own loss takes over, per loss when
# TrainConfig.ce_warmup_epochs is None. L1 on the softmax gives a class whose clips start with
# a near-zero probability almost no gradient, so a class that loses the early competition
# stays lost (seven corpora, 2026-12-06: L1 never predicted four of the eight classes); a
# few epochs of cross-entropy first give every class a foothold. L1 on seven corpora, 24
# epochs, the same split and seed: validation accuracy 46.23 % / macro-F1 0.2787 without a
# warm-up, 68.86 % / 0.6171 after 4 epochs of CE (2026-12-07, the model card).
CE_WARMUP_EPOCHS: dict[str, int] = {"ce": 0, "bce": 0, "smoothl1": 0, "l1": 4}
Monitor = Literal["macro_f1", "accuracy"]
Device = Literal["auto", "cpu", "cuda"]
AdversaryKind = Literal["none", "speaker", "corpus"]
LabelSets = Literal["all", "corpus"]
LABEL_SETS: tuple[str, ...] = ("all", "corpus")
ADVERSARIES: tuple[str, ...] = ("none", "speaker", "corpus")


class TrainConfigError(ValueError):
    """Training settings that cannot work together."""


# Keys older checkpoints and records carry that TrainConfig no longer has: "compile" (a flag
# that was stored but never acted on).
REMOVED_KEYS: frozenset[str] = frozenset({"compile"})
# How a run is carried out, not what it computes: a resumed run may change them (another
# device, more workers, a new time budget) and still continue the same training.
OPERATIONAL_KEYS: frozenset[str] = frozenset(
    {"device", "workers", "time_budget_s", "eval_batch_size"}
)


@dataclass(frozen=True)
class TrainConfig:
    loss: Loss = "ce"
    # 32: on all seven corpora CE's, BCE's and SmoothL1's validation still rose at 24 (model card).
    epochs: int = 32
    batch_size: int = 64
    lr: float | None = None  # peak learning rate after the warm-up; None: PEAK_LR[loss]
    min_lr_ratio: float = 0.01  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    # The first this many epochs train with cross-entropy, the rest with ``loss``; those
    # epochs are not candidates for the best checkpoint (the model kept is one trained under
    # its loss). None: CE_WARMUP_EPOCHS[loss], at most epochs - 1.
    ce_warmup_epochs: int | None = None
    grad_clip: float = 1.0  # max global gradient norm
    patience: int = 12  # epochs without a better validation score before stopping
    monitor: Monitor = "macro_f1"  # validation score for early stopping and the best checkpoint
    seed: int = 42
    device: Device = "auto"
    # bf16 autocast on CUDA and on CPUs with native bf16 (training/device.py); fp32 elsewhere.
    precision: Precision = "auto"
    channels_last: bool = True  # the CNN's memory layout: 1.6x faster steps on the CPU
    workers: int = 0  # processes for decoding and features; 0 = all CPU cores
    noisy_copies: int = 2  # Gaussian-noise copies per training clip (the paper triples)
    # Up to 45 dB since 2026-12-05 (15-30 before): white noise 37-47 dB below the speech, as a
    # quiet take's 16-bit floor has it, changed 5-7 % of the level-stage model's labels
    # (models/README.md), so the copies now reach down to such faint floors.
    snr_db: tuple[float, float] = (15.0, 45.0)
    # Channel / speaker augmentation of the noisy copies (training/channel.py): names from
    # speed, eq, reverb, telephone, codec, gain, level, clip; each applied with probability
    # channel_prob. The release (since 2026-12-04, with the level stage) uses level and clip:
    # what a hot microphone and a limiter do to the waveform survives the level stage.
    channel_augment: tuple[str, ...] = ("level", "clip")
    channel_prob: float = 0.5
    # How an epoch draws its clips: each training clip is drawn with weight n_corpus ** -balance,
    # n_corpus its corpus's number of training clips. 0 takes every clip once per epoch (the
    # release); 1 gives each corpus an equal share of the epoch, drawn with replacement, so the
    # small corpora (SAVEE: 4 speakers) are not outweighed by TESS.
    corpus_balance: float = 0.0
    # Within each corpus, draw a clip with weight n_cell ** -class_balance, n_cell its corpus x
    # emotion cell's training clips, each corpus keeping its share: per-corpus class weights as
    # drawing weights (in expectation the class-weighted loss, for each of the four losses).
    # 0 (the release) leaves each corpus's class mix as recorded; 1 evens it.
    class_balance: float = 0.0
    # The classes each training clip's loss ranges over (training/labelsets.py): "corpus", the
    # classes its corpus has (since 2026-12-06: a corpus without neutral teaches nothing about
    # neutral), or "all" eight, as every model before.
    label_sets: LabelSets = "corpus"
    # Adversarial training (training/adversary.py): a gradient-reversal head learns to name
    # each clip's training speaker (or corpus) from the embedding while the model learns to
    # make that impossible; adversary_weight is the reversal's strength once ramped up.
    adversary: AdversaryKind = "none"
    adversary_weight: float = 0.3
    # Regularisation (training/regularise.py); the defaults come from the ablation in the report.
    freq_masks: int = 2  # SpecAugment frequency masks per clip
    freq_mask_width: int = 16  # mels, the most one mask covers
    time_masks: int = 2  # SpecAugment time masks per clip
    time_mask_width: int = 40  # frames (10 ms each), the most one mask covers
    mixup_alpha: float = 0.4  # Beta(alpha, alpha) mixing weight; 0 turns mixup off
    mixup_prob: float = 0.5  # fraction of batches that are mixed
    # CE only; the other losses compare with the one-hot target. Off since the 24-epoch run
    # without it beat the smoothed recipe on every validation figure, calibration included:
    # smoothing capped the confidence of clips it got right (the model card's ablation).
    label_smoothing: float = 0.0
    eval_batch_size: int = 512
    limit: int | None = None  # keep only this many clips (smoke runs)
    # Stop after the epoch that passes this many seconds of training (the best epoch is kept):
    # a guard for hosts that kill long commands (the GPU machine allows 10 minutes a command).
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise TrainConfigError(f"loss {self.loss!r} is not one of {LOSSES}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise TrainConfigError("epochs, batch_size and patience must be at least 1")
        if (self.lr is not None and not self.lr > 0) or not 0 <= self.min_lr_ratio <= 1:
            raise TrainConfigError("need lr > 0 (or None) and 0 <= min_lr_ratio <= 1")
        if self.ce_warmup_epochs is not None and not 0 <= self.ce_warmup_epochs < self.epochs:
            raise TrainConfigError("ce_warmup_epochs must be in [0, epochs)")
        if self.monitor not in ("macro_f1", "accuracy"):
            raise TrainConfigError("monitor must be 'macro_f1' or 'accuracy'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TrainConfigError("device must be 'auto', 'cpu' or 'cuda'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise TrainConfigError("precision must be 'auto', 'fp32' or 'bf16'")
        if min(self.freq_masks, self.freq_mask_width, self.time_masks, self.time_mask_width) < 0:
            raise TrainConfigError("SpecAugment mask counts and widths must be >= 0")
        if self.mixup_alpha < 0 or not 0 <= self.mixup_prob <= 1:
            raise TrainConfigError("need mixup_alpha >= 0 and 0 <= mixup_prob <= 1")
        if not 0 <= self.label_smoothing < 1:
            raise TrainConfigError("label_smoothing must be in [0, 1)")
        if not 0 <= self.channel_prob <= 1:
            raise TrainConfigError("channel_prob must be in [0, 1]")
        if not 0 <= self.corpus_balance <= 1:
            raise TrainConfigError("corpus_balance must be in [0, 1]")
        if not 0 <= self.class_balance <= 1:
            raise TrainConfigError("class_balance must be in [0, 1]")
        if self.label_sets not in LABEL_SETS:
            raise TrainConfigError(f"label_sets {self.label_sets!r} is not one of {LABEL_SETS}")
        if self.adversary not in ADVERSARIES:
            raise TrainConfigError(f"adversary {self.adversary!r} is not one of {ADVERSARIES}")
        if not self.adversary_weight >= 0:
            raise TrainConfigError("adversary_weight must be >= 0")
        from training.channel import check_names

        try:
            check_names(self.channel_augment)
        except ValueError as e:
            raise TrainConfigError(str(e)) from e
        if self.limit is not None and self.limit < 1:
            raise TrainConfigError("limit must be a positive number of clips")

    @property
    def peak_lr(self) -> float:
        """The learning rate after the warm-up: ``lr``, or the loss's default."""
        return PEAK_LR[self.loss] if self.lr is None else self.lr

    @property
    def ce_epochs(self) -> int:
        """The opening epochs trained with cross-entropy: ``ce_warmup_epochs``, or the loss's
        default, which leaves at least the last epoch to the loss (a short smoke run)."""
        if self.ce_warmup_epochs is None:
            return min(CE_WARMUP_EPOCHS[self.loss], self.epochs - 1)
        return self.ce_warmup_epochs

    def loss_at(self, epoch: int) -> Loss:
        """The loss epoch ``epoch`` (1-based) trains with."""
        return "ce" if epoch <= self.ce_epochs else self.loss

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["snr_db"] = list(self.snr_db)
        out["channel_augment"] = list(self.channel_augment)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in REMOVED_KEYS}
        unknown = set(data) - known
        if unknown:
            raise TrainConfigError(f"unknown TrainConfig keys: {sorted(unknown)}")
        values = dict(data)
        # Records written before the CE warm-up existed trained under their loss throughout.
        values.setdefault("ce_warmup_epochs", 0)
        if "snr_db" in values:
            low, high = values["snr_db"]
            values["snr_db"] = (float(low), float(high))
        if "channel_augment" in values:
            values["channel_augment"] = tuple(values["channel_augment"])
        return cls(**values)
