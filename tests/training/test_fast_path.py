"""The CPU fast path's choices and the batch regularisers (SpecAugment, mixup, smoothing)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from training.device import autocast, cpu_flags, resolve_precision
from training.losses import make_loss
from training.regularise import Mixup, SpecAugment

CPU = torch.device("cpu")


def _cpuinfo(folder: Path, flags: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_auto_precision_follows_the_cpu_flags(tmp_path: Path) -> None:
    zen4 = _cpuinfo(tmp_path / "zen4", "avx512f avx512_bf16")
    older = _cpuinfo(tmp_path / "older", "avx2")
    assert "avx512_bf16" in cpu_flags(zen4)
    assert resolve_precision("auto", CPU, zen4) == "bf16"
    assert resolve_precision("auto", CPU, older) == "fp32"
    assert resolve_precision("auto", CPU, tmp_path / "missing") == "fp32"
    assert resolve_precision("fp32", CPU, zen4) == "fp32"  # an explicit choice wins
    assert resolve_precision("bf16", CPU, older) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize(
    ("capability", "precision"),
    [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")],
    ids=["V100", "T4", "A100", "L4", "H100"],
)
def test_auto_precision_on_cuda_follows_the_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], precision: str
) -> None:
    """bf16 only where the GPU has bf16 tensor cores (8.0+); emulated below, so fp32."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", torch.device("cuda")) == precision
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"  # still selectable


def test_bf16_autocast_changes_matmuls_not_the_loss() -> None:
    layer = torch.nn.Linear(8, 8)
    with autocast(CPU, "bf16"):
        out = layer(torch.randn(4, 8))
    assert out.dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # weights stay fp32
    with autocast(CPU, "fp32"):
        assert layer(torch.randn(4, 8)).dtype == torch.float32


def test_spec_augment_masks_bands_and_spans_within_their_widths() -> None:
    x = torch.ones(32, 128, 348)
    masks = SpecAugment(freq_masks=2, freq_width=16, time_masks=2, time_width=40)
    out = masks(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    zero = out == 0
    rows = zero.all(dim=2)  # a masked mel band is zero over every frame
    cols = zero.all(dim=1)  # a masked span is zero over every mel band
    assert (rows.sum(dim=1) <= 2 * 16).all() and (cols.sum(dim=1) <= 2 * 40).all()
    assert rows.any() and cols.any()
    # Everything zeroed is explained by a band or a span: no stray cells.
    assert torch.equal(zero, rows[:, :, None] | cols[:, None, :])
    again = masks(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded


def test_spec_augment_off_is_the_identity() -> None:
    x = torch.randn(2, 16, 20)
    assert SpecAugment(0, 16, 0, 40)(x, torch.Generator()) is x


def test_mixup_draws_a_weight_and_pairs_on_the_asked_fraction() -> None:
    mixup = Mixup(alpha=0.4, prob=0.5)
    rng, generator = random.Random(1), torch.Generator().manual_seed(1)
    draws = [mixup.draw(16, rng, generator, CPU) for _ in range(400)]
    mixed = [d for d in draws if d is not None]
    assert 150 < len(mixed) < 250
    for lam, pair in mixed:
        assert 0.0 <= lam <= 1.0
        assert sorted(pair.tolist()) == list(range(16))
    assert Mixup(alpha=0.0).draw(16, rng, generator, CPU) is None


def test_label_smoothing_is_for_ce_only() -> None:
    logits, targets = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    plain, smoothed = make_loss("ce")(logits, targets), make_loss("ce", 0.1)(logits, targets)
    assert smoothed > plain  # a confident right answer costs more when targets are smoothed
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
    assert torch.isclose(smoothed, expected)
    bce = make_loss("bce")(logits, targets)
    assert torch.equal(make_loss("bce", 0.1)(logits, targets), bce)
