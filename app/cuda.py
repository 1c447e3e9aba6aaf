"""What the CUDA libraries of this host say: why CUDA may not start, and what it runs on.

Read through ``ctypes`` from the libraries ONNX Runtime's CUDA provider loads itself (the
serving image has no PyTorch or NVML bindings): the driver API for the driver's CUDA version,
the GPU's name and compute capability; the runtime and cuDNN for theirs. Each reading that
fails is left out, never an error: this only describes, ONNX Runtime decides.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, Final

# The libraries CUDA 13 and cuDNN 9 sessions need, in the order they fail, with what to do.
_DRIVER_HINT = (
    "the NVIDIA driver is not visible here: give the container the GPU (docker run --gpus all "
    "with the NVIDIA Container Toolkit; podman --device nvidia.com/gpu=all through CDI)"
)
_RUNTIME_HINT = (
    "the CUDA 13 libraries are missing (the GPU image has them; elsewhere "
    "pip install 'onnxruntime-gpu[cuda,cudnn]')"
)
CUDA_LIBRARIES: Final[tuple[tuple[str, str], ...]] = (
    ("libcuda.so.1", _DRIVER_HINT),
    ("libcudart.so.13", _RUNTIME_HINT),
    ("libcublas.so.13", _RUNTIME_HINT),
    ("libcudnn.so.9", "cuDNN 9 is missing (the GPU image has it; elsewhere nvidia-cudnn-cu13)"),
)

# cuDeviceGetAttribute's CUdevice_attribute values (cuda.h).
_CC_MAJOR: Final[int] = 75
_CC_MINOR: Final[int] = 76

Loader = Callable[[str], Any]


def cuda_diagnosis(load: Loader = ctypes.CDLL) -> str:
    """Why CUDA may not start here, from which of its libraries load."""
    for name, hint in CUDA_LIBRARIES:
        try:
            load(name)
        except OSError:
            return f"{name} cannot be loaded: {hint}"
    return (
        "the CUDA libraries load: check that the driver is R580 or newer (CUDA 13) and the GPU's "
        "compute capability is 7.5 or more (nvidia-smi)"
    )


def _cuda_version(encoded: int) -> str:
    """CUDA's 1000 * major + 10 * minor (13000 -> "13.0")."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _cudnn_version(encoded: int) -> str:
    """cuDNN 9's 10000 * major + 100 * minor + patch (90100 -> "9.1.0")."""
    return f"{encoded // 10000}.{encoded % 10000 // 100}.{encoded % 100}"


def _driver(load: Loader, device_id: int) -> dict[str, str]:
    lib = load("libcuda.so.1")
    found: dict[str, str] = {}
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        found["driver_cuda"] = _cuda_version(version.value)
    if lib.cuInit(0) != 0:
        return found
    device = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(device), device_id) != 0:
        return found
    name = ctypes.create_string_buffer(256)
    if lib.cuDeviceGetName(name, len(name), device) == 0:
        found["gpu"] = name.value.decode("utf-8", "replace")
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if (
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device) == 0
        and lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device) == 0
    ):
        found["compute_capability"] = f"{major.value}.{minor.value}"
    return found


def _runtime(load: Loader) -> dict[str, str]:
    version = ctypes.c_int(0)
    if load("libcudart.so.13").cudaRuntimeGetVersion(ctypes.byref(version)) != 0:
        return {}
    return {"cuda_runtime": _cuda_version(version.value)}


def _cudnn(load: Loader) -> dict[str, str]:
    get_version = load("libcudnn.so.9").cudnnGetVersion
    get_version.restype = ctypes.c_size_t
    return {"cudnn": _cudnn_version(int(get_version()))}


def cuda_device(device_id: int, load: Loader = ctypes.CDLL) -> dict[str, str]:
    """The GPU ``device_id`` and the CUDA stack a CUDA session uses: ``gpu``,
    ``compute_capability``, ``driver_cuda`` (the newest CUDA the driver runs), ``cuda_runtime``
    and ``cudnn``; whatever cannot be read is missing."""
    found: dict[str, str] = {}
    for read in (lambda: _driver(load, device_id), lambda: _runtime(load), lambda: _cudnn(load)):
        try:
            found |= read()
        except (OSError, AttributeError):  # a library or a symbol that is not there
            continue
    return found
