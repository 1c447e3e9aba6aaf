"""Streaming fixtures: apps on the tiny test models, with some settings changed per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(models_dir: Path) -> Iterator[ClientFactory]:
    """Start an app over the test models with some settings changed; closed after the test."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        client = TestClient(create_app(Settings(models_dir=models_dir, **settings)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()
