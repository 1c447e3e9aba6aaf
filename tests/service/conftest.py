"""Service fixtures: an app on the two tiny models of ``models_dir``, and model-folder makers."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from fastapi.testclient import TestClient

from app.contract import METADATA_KEY, ModelMetadata
from app.main import create_app
from app.settings import Settings
from app.workpool import WorkLane

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(models_dir: Path) -> Iterator[ClientFactory]:
    """``make_client(**settings)``: a started TestClient (lifespan run) on its own app."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(**{"models_dir": models_dir, **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    """The service on the ``ce`` and ``bce`` test models, started and ready."""
    with TestClient(create_app(Settings(models_dir=models_dir))) as test_client:
        yield test_client


def rewrite_metadata(path: Path, **changes: Any) -> None:
    """Replace fields of the ModelMetadata stored in the ONNX file at ``path``."""
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    metadata = dataclasses.replace(ModelMetadata.from_onnx_props(props), **changes)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {METADATA_KEY: metadata.to_json()})
    onnx.save(proto, str(path))


@pytest.fixture
def model_folder(models_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """``model_folder("ce", "bce")``: a fresh folder holding copies of those test models."""

    def make(*keys: str) -> Path:
        folder = tmp_path / "models"
        folder.mkdir(exist_ok=True)
        for key in keys:
            shutil.copy(models_dir / f"{key}.onnx", folder / f"{key}.onnx")
        return folder

    return make


def occupy(client: TestClient, lane: WorkLane, gate: threading.Event) -> None:
    """Fill ``lane`` (threads and queue) with jobs that wait for ``gate``."""
    for _ in range(lane.capacity):
        client.portal.start_task_soon(lane.run, gate.wait, 30.0)
    for _ in range(200):
        if lane.jobs == lane.capacity:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the lane did not fill")
