"""Check a GPU host once: ``python -m benchmarks.gpu_check`` before serving or training on it.

What it checks, in order, and prints as it goes:

1. the CUDA execution provider is in this onnxruntime build (not hidden by the CPU wheel), and
   what the CUDA libraries say: the GPU, its compute capability, the CUDA and cuDNN versions;
2. each released model runs on CUDA (the session's active provider, not a silent CPU
   fall-back), and its probabilities on real corpus clips (or synthetic speech, without the
   corpus) equal the CPU's within ``--tolerance``;
3. every batch size the server uses (1 to ``SER_MAX_BATCH_SIZE``) runs, with its latency on
   both providers (median of ``--repeats`` runs after a warm-up run);
4. one training epoch's steps on CUDA through the project's own ``run_epoch``
   (:mod:`benchmarks.bench_train`), when torch sees a GPU.

Where there is no GPU it says which part is missing and exits 2. ``--providers cpu`` runs the
same comparison of CPU against CPU, with no GPU: the test suite runs it that way, so the
script itself keeps working until a GPU host runs it for real.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.contract import ModelMetadata
from app.cuda import cuda_device, cuda_diagnosis
from app.engine import CUDA_PROVIDER, ProviderError, open_session, run_session
from app.settings import REPO_MODELS_DIR, Settings
from app.windows import featurise, training_segment

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ser-corpus"
EXIT_NO_GPU = 2


@dataclass(frozen=True)
class ModelCheck:
    name: str
    provider: str
    max_difference: float
    latency_ms: dict[int, tuple[float, float]]  # batch size -> (reference, checked) median ms


def clips(count: int, rate: int) -> list[np.ndarray]:
    """``count`` corpus clips (RAVDESS, in path order) where the corpus is, else synthetic
    voiced sounds: what a comparison of two providers needs is realistic spectra."""
    files = sorted((CORPUS / "ravdess").rglob("*.opus"))[:count] if CORPUS.is_dir() else []
    if files:
        import soundfile as sf

        return [sf.read(str(f), dtype="float32")[0] for f in files]
    rng = np.random.default_rng(0)
    t = np.arange(int(3.5 * rate)) / rate
    return [
        (0.1 * np.sin(2 * np.pi * (110 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(
            np.float32
        )
        + 0.005 * rng.standard_normal(t.size).astype(np.float32)
        for i in range(count)
    ]


def median_ms(session: ort.InferenceSession, batch: np.ndarray, repeats: int) -> float:
    run_session(session, batch)  # warm-up: this shape's first run prepares it
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_session(session, batch)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def check_model(
    path: Path, checked: tuple[str, ...], features_of: list[np.ndarray], settings: Settings,
    repeats: int,
) -> ModelCheck:  # fmt: skip
    reference, _ = open_session(path, ("cpu",), settings.intra_op_threads, 1)
    session, provider = open_session(path, checked, settings.intra_op_threads, 1)
    meta = ModelMetadata.from_onnx_props(reference.get_modelmeta().custom_metadata_map)
    config = meta.feature_config
    features = featurise([training_segment(w, config)[0] for w in features_of], config)
    expected = meta.probabilities(run_session(reference, features))
    got = meta.probabilities(run_session(session, features))
    latency = {}
    for n in range(1, settings.max_batch_size + 1):
        batch = np.repeat(features[:1], n, axis=0)
        latency[n] = (median_ms(reference, batch, repeats), median_ms(session, batch, repeats))
    return ModelCheck(path.name, provider, float(np.abs(expected - got).max()), latency)


def train_epoch_on_cuda() -> str:
    import torch

    from benchmarks.bench_train import clips_per_second, random_pool

    if not torch.cuda.is_available():
        return "torch sees no CUDA device: training would run on the CPU"
    pool = random_pool(4 * 64, 348)
    speed = clips_per_second("sequential", "bf16 + channels_last", pool, 64, "cuda")
    name = torch.cuda.get_device_name(0)
    return f"one epoch's steps on {name}: {speed:.0f} clips/s (bf16 + channels_last)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO_MODELS_DIR)
    parser.add_argument(
        "--providers", default="cuda", help="what to check against the CPU (cpu: no GPU needed)"
    )
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest probability gap")
    parser.add_argument("--no-training", action="store_true", help="skip the training epoch")
    args = parser.parse_args(argv)
    checked = tuple(args.providers.split(","))
    if "cuda" in checked and CUDA_PROVIDER not in ort.get_available_providers():
        print(
            f"no CUDA execution provider in onnxruntime {ort.__version__} "
            f"(it has {', '.join(ort.get_available_providers())}): install "
            "requirements/serve-gpu.txt, without the CPU onnxruntime wheel"
        )
        return EXIT_NO_GPU
    settings = Settings(models_dir=args.models)
    if "cuda" in checked:
        device = cuda_device(settings.cuda_device_id)
        print("CUDA: " + (", ".join(f"{k} {v}" for k, v in device.items()) or "nothing readable"))
    waves = clips(args.clips, 16_000)
    failed = False
    for path in sorted(args.models.glob("*.onnx")):
        try:
            result = check_model(path, checked, waves, settings, args.repeats)
        except ProviderError as e:
            print(f"{path.name}: {e}")
            return EXIT_NO_GPU
        ok = result.max_difference <= args.tolerance and result.provider == checked[0]
        failed = failed or not ok
        print(
            f"{result.name}: runs on {result.provider}; largest probability gap to the CPU "
            f"{result.max_difference:.2e} ({'ok' if ok else 'NOT OK'}, tolerance "
            f"{args.tolerance:g})"
        )
        print("  batch  cpu ms  " + f"{result.provider} ms")
        for n, (cpu_ms, its_ms) in result.latency_ms.items():
            print(f"  {n:5d}  {cpu_ms:6.2f}  {its_ms:6.2f}")
    if "cuda" in checked and not args.no_training:
        print(train_epoch_on_cuda())
    if failed:
        print(f"a model differs from the CPU or did not run on {checked[0]}; {cuda_diagnosis()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
