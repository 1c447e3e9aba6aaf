"""The training extra installs from the package indexes (pip's own settings) alone:
``pip install -e '.[train]'`` resolves in a fresh environment. It once named ``ser-client``,
which is on no index (and whoever published that name would have had it installed). Training
imports nothing of the client."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_train_extra_names_only_index_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [
        r.split(";")[0].split("=")[0].split(">")[0].strip()
        for r in project["optional-dependencies"]["train"]
    ]
    assert "ser-client" not in names


def test_training_imports_nothing_of_the_client() -> None:
    for path in (ROOT / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert not any(m.split(".")[0] == "ser_client" for m in modules), path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_train_extra_resolves_in_a_fresh_environment(tmp_path: Path) -> None:
    """pip resolves every requirement of ``.[train]`` without an installed environment to lean
    on (``--ignore-installed``), the way a new user's ``pip install -e '.[train]'`` does."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(tmp_path / "report.json"),
        "-e",
        f"{ROOT}[train]",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "torch" in (tmp_path / "report.json").read_text()
