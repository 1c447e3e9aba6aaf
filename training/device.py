"""Where and in what precision training runs: the device, bf16 autocast, threads.

``precision="auto"`` picks bf16 autocast where it pays: on CUDA GPUs of compute capability 8.0
or more (Ampere and newer; on older ones bf16 is emulated and slower than fp32, so ``auto``
means fp32 there: fp16 with a gradient scaler is not implemented), and on CPUs with native bf16
arithmetic (``avx512_bf16`` or ``amx_bf16``; on the 2-core Zen 4 development machine one
batch-64 step went from 1163 ms to 568 ms with it, channels_last in both). Elsewhere bf16 is
emulated and slower than fp32, so ``auto`` means fp32 there. Autocast only changes the matmuls
and convolutions: weights, optimiser state, batch-norm statistics, the loss and the softmax stay
fp32, and the exported ONNX model is fp32.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    return bool(cpu_flags(cpuinfo) & NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device, cpuinfo: Path = CPUINFO) -> str:
    """``fp32`` or ``bf16`` for ``precision`` (``auto``, ``fp32`` or ``bf16``) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if cuda_has_native_bf16(device) else "fp32"
    return "bf16" if cpu_has_native_bf16(cpuinfo) else "fp32"


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Compute capability 8.0 or more: bf16 tensor cores (Ampere, Ada, Hopper, Blackwell)."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"`` (a resolved precision), else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_all_cores() -> int:
    """Set torch's intra-op threads to the cores this process may use; returns that number."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    return cores
