"""Training-step throughput: fp32 against the CPU fast path, both token layouts, one run.

Each configuration trains through the project's own epoch function
(:func:`training.train.run_epoch`: SpecAugment, mixup, forward, fp32 loss, backward, clipping,
AdamW and the schedule) on a pool of random features the size of real ones (128 mels x 348
frames). The configurations are interleaved round by round, so a slow moment of a shared
machine hits them all alike, and each one's figure is its median over the rounds:

- ``fp32``: float32, contiguous (NCHW) memory;
- ``fp32 + channels_last``: the CNN in channels_last memory;
- ``bf16 + channels_last``: the fast path, bf16 autocast (what ``--precision auto`` picks on a
  CPU with native bf16, or on CUDA).

Usage::

    python -m benchmarks.bench_train [--batches 4] [--rounds 3] [--batch-size 64]

Run it on an idle machine. Results go to ``benchmarks/results/train.json`` and ``train.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from app.features import FeatureConfig
from benchmarks.record import RESULTS, header, write
from training.config import TrainConfig
from training.device import cpu_flags, resolve_device, resolve_precision
from training.model import ModelConfig
from training.train import LabelledFeatures, run_epoch, start_run

MODES: dict[str, dict[str, object]] = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "fp32 + channels_last": {"precision": "fp32", "channels_last": True},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
}
LAYOUTS = ("sequential", "parallel")


def random_pool(n_clips: int, n_frames: int) -> LabelledFeatures:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_clips, 128, n_frames)).astype(np.float16)
    return LabelledFeatures(x, (np.arange(n_clips) % 8).astype(np.int64))


def clips_per_second(
    layout: str, mode: str, pool: LabelledFeatures, batch_size: int, device: str = "cpu"
) -> float:
    """One epoch over ``pool`` in a fresh run of this configuration; returns clips per second."""
    config = TrainConfig(batch_size=batch_size, device=device, **MODES[mode])  # type: ignore[arg-type]
    model_config = ModelConfig(architecture=layout, n_frames=pool.features.shape[-1])  # type: ignore[arg-type]
    run = start_run(model_config, config, FeatureConfig(), steps_per_epoch=len(pool.labels))
    x = torch.from_numpy(pool.features).to(run.device)
    y = torch.from_numpy(pool.labels).to(run.device)
    run_epoch(run, x[:batch_size], y[:batch_size], versions=1)  # warm-up: allocations, kernels
    _synchronise(run.device)
    started = time.perf_counter()
    run_epoch(run, x, y, versions=1)
    _synchronise(run.device)
    return len(pool.labels) / (time.perf_counter() - started)


def _synchronise(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that the clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def markdown(results: dict) -> str:
    lines = [
        f"# Training-step benchmark ({results['when']}, {results['machine']})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Batch {results['batch_size']}, {results['batches']} batches per measurement, median "
        f"of {results['rounds']} interleaved rounds; torch {results['torch']}, "
        f"{results['threads']} threads; native bf16: {results['native_bf16']} "
        f"(`--precision auto` picks {results['auto_precision']}).",
        "",
        "| layout | " + " | ".join(f"{m} clips/s" for m in MODES) + " | fast path / fp32 |",
        "|---|" + "---|" * (len(MODES) + 1),
    ]
    for layout, row in results["layouts"].items():
        cells = " | ".join(f"{row[m]:.1f}" for m in MODES)
        lines.append(f"| {layout} | {cells} | **{row['speedup']:.2f}x** |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=4, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=FeatureConfig().window_frames)
    parser.add_argument("--out", type=Path, default=RESULTS / "train")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where the steps run"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)

    pool = random_pool(args.batches * args.batch_size, args.frames)
    samples: dict[tuple[str, str], list[float]] = {(la, m): [] for la in LAYOUTS for m in MODES}
    for round_ in range(args.rounds):
        for layout, mode in samples:
            speed = clips_per_second(layout, mode, pool, args.batch_size, args.device)
            samples[layout, mode].append(speed)
            print(f"round {round_ + 1}: {layout:10s} {mode:22s} {samples[layout, mode][-1]:7.1f}")
    layouts = {}
    for layout in LAYOUTS:
        row = {m: statistics.median(samples[layout, m]) for m in MODES}
        row["speedup"] = row["bf16 + channels_last"] / row["fp32"]
        layouts[layout] = row
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    results = {
        **header("bench_train"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "native_bf16": ", ".join(flags) or "no",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "auto_precision": resolve_precision("auto", device),
        "batch_size": args.batch_size,
        "batches": args.batches,
        "rounds": args.rounds,
        "samples": {f"{la} / {m}": v for (la, m), v in samples.items()},
        "layouts": layouts,
    }
    write(args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
