"""The client installs on its own: a wheel built from client/, installed into a fresh virtual
environment with its declared dependencies only, runs ``ser`` and imports nothing of the server.

The wheel and the environment are made as a user would (pip, python -m venv). Where pip is set
up with package indexes on this machine's disk (``file://``, as on the development and CI
machines here), the test uses those alone and needs no network; elsewhere pip's own settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENT = Path(__file__).resolve().parents[2] / "client"
# What a user of the client must not get: the server's packages and its heavy dependencies.
SERVER_MODULES = ("app", "training", "fastapi", "starlette", "uvicorn", "onnxruntime", "torch")
# Run in the fresh environment: what importing the client loaded, and what is importable at all.
PROBE = f"""
import importlib.util, json, sys
import ser_client, ser_client.cli
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({SERVER_MODULES!r}))
findable = [name for name in ("app", "training") if importlib.util.find_spec(name)]
print(json.dumps({{"loaded": loaded, "findable": findable, "file": ser_client.__file__}}))
"""


@cache
def local_indexes() -> list[str]:
    """pip options naming only the ``file://`` package indexes that pip is configured with."""
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    urls: list[str] = []
    for line in shown.splitlines():  # e.g. global.extra-index-url='file:///a/simple file:///b'
        key, _, value = line.partition("=")
        if key.endswith("index-url"):
            urls += [
                u for u in value.strip("'\"").split() if u.startswith("file://") and u not in urls
            ]
    if not urls:
        return []
    return ["--index-url", urls[0], *(f"--extra-index-url={url}" for url in urls[1:])]


def pip(*args: str, python: Path | None = None) -> None:
    target = ["--python", str(python)] if python else []
    command = [sys.executable, "-m", "pip", *target, *args, *local_indexes()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"


def test_the_client_installs_and_runs_without_the_server(tmp_path: Path) -> None:
    # Build from a copy, so that the build leaves nothing (build/, *.egg-info) in the clone.
    source = tmp_path / "client"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "dist"), str(source))
    [wheel] = (tmp_path / "dist").glob("ser_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        dist_info = next(name for name in top if name.endswith(".dist-info"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert top == {"ser_client", dist_info}  # no app, no training, no tests
    assert "ser = ser_client.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip("install", "--quiet", str(wheel), python=python)

    # Away from the clone (no app/ in the working directory) and with nothing on PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    helped = subprocess.run(
        [venv / "bin" / "ser", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "predict" in helped.stdout and "stream" in helped.stdout
    probed = subprocess.run(
        [python, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert probed.returncode == 0, probed.stderr
    found = json.loads(probed.stdout)
    assert found["loaded"] == [], f"importing ser_client loaded {found['loaded']}"
    assert found["findable"] == [], f"the client's environment has {found['findable']}"
    assert Path(found["file"]).is_relative_to(venv)  # the installed copy, not the clone's
