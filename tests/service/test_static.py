"""The page's and the docs' static files (app/api/static.py): ranges served, invalid ones
ignored."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("value", ["bytes=5-2", "bytes=abc", "pages=1-2", "bytes=", "bytes=1-2,x"])
def test_an_invalid_range_is_ignored(client: TestClient, value: str) -> None:
    whole = client.get("/static/app.js")
    reply = client.get("/static/app.js", headers={"range": value})
    assert reply.status_code == 200 and reply.content == whole.content


def test_a_valid_range_is_still_served(client: TestClient) -> None:
    reply = client.get("/static/app.js", headers={"range": "bytes=0-9"})
    assert reply.status_code == 206 and len(reply.content) == 10
