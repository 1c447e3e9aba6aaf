"""The GPU serving pins are the CPU serving pins with onnxruntime swapped for onnxruntime-gpu."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]

CPU_PINS = REPO / "requirements" / "serve.txt"
GPU_PINS = REPO / "requirements" / "serve-gpu.txt"


def pins(path: Path) -> dict[str, Requirement]:
    """Requirement per normalised project name, comments and blank lines left out."""
    found: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            assert name not in found, f"{path.name} pins {name} twice"
            found[name] = requirement
    return found


def test_gpu_pins_match_cpu_pins_except_onnxruntime() -> None:
    cpu, gpu = pins(CPU_PINS), pins(GPU_PINS)
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    # Never both: the two wheels install the same `onnxruntime` package and clash.
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    shared_cpu = {name: str(r) for name, r in cpu.items() if name != "onnxruntime"}
    shared_gpu = {name: str(r) for name, r in gpu.items() if name != "onnxruntime-gpu"}
    assert shared_gpu == shared_cpu, "edit requirements/serve-gpu.txt along with serve.txt"


def test_every_serving_pin_is_exact() -> None:
    for path in (CPU_PINS, GPU_PINS):
        for name, requirement in pins(path).items():
            specifiers = list(requirement.specifier)
            assert len(specifiers) == 1 and specifiers[0].operator == "==", (path.name, name)


def test_cpu_and_gpu_images_run_the_same_onnxruntime_release() -> None:
    # The CPU pin follows the newest onnxruntime-gpu wheel (1.31.1 when this was written), so
    # both images execute the same graph optimisations and operator versions.
    cpu = next(iter(pins(CPU_PINS)["onnxruntime"].specifier)).version
    gpu = next(iter(pins(GPU_PINS)["onnxruntime-gpu"].specifier)).version
    assert cpu == gpu


def test_no_extra_installs_both_onnxruntime_wheels() -> None:
    """The package depends on onnxruntime: an extra adding onnxruntime-gpu would put both
    wheels in one environment, where the CPU one hides CUDA."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for name, requirements in project.get("optional-dependencies", {}).items():
        assert not any(r.startswith("onnxruntime-gpu") for r in requirements), name
