"""Origins, hosts and the browser security headers (app/api/security.py)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from app.api.security import PAGE_POLICY, origin_allowed, same_origin
from tests.service.conftest import ClientFactory

START = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://localhost:8000", "localhost:8000", True),
        ("http://LOCALHOST:8000", "localhost:8000", True),
        ("https://ser.example", "ser.example", True),  # 443 on both sides
        ("https://ser.example", "ser.example:443", True),
        ("http://ser.example", "ser.example:80", True),
        ("http://localhost:3000", "localhost:8000", False),  # another service on the host
        ("https://evil.example", "localhost:8000", False),
        ("http://localhost.evil.example:8000", "localhost:8000", False),
        ("null", "localhost:8000", False),  # a sandboxed frame or a file: page
        ("file://", "localhost", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://localhost:99999", "localhost:99999", False),  # not a port
    ],
)
def test_same_origin_compares_host_and_port(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


def test_tools_without_an_origin_and_configured_origins_are_allowed() -> None:
    assert origin_allowed(None, "localhost:8000", frozenset())
    allowed = frozenset({"https://app.example"})
    assert origin_allowed("https://app.example/", "ser.internal:8000", allowed)
    assert not origin_allowed("https://evil.example", "ser.internal:8000", allowed)


def denial(client: TestClient, headers: dict[str, str]) -> WebSocketDenialResponse:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/ws/stream", headers=headers),
    ):
        pass
    return refused.value


def test_a_foreign_origin_cannot_stream(client: TestClient) -> None:
    refused = denial(client, {"origin": "https://evil.example"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "origin_not_allowed" and "SER_ALLOWED_ORIGINS" in error["message"]


@pytest.mark.parametrize("origin", [None, "http://testserver"])
def test_the_own_page_and_tools_stream(client: TestClient, origin: str | None) -> None:
    headers = {} if origin is None else {"origin": origin}
    with client.websocket_connect("/ws/stream", headers=headers) as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"


def test_a_configured_origin_streams(make_client: ClientFactory) -> None:
    client = make_client(allowed_origins="https://app.example, https://other.example")
    with client.websocket_connect("/ws/stream", headers={"origin": "https://app.example"}) as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
    assert denial(client, {"origin": "https://evil.example"}).status_code == 403


def test_hosts_outside_the_allowed_list_are_refused(make_client: ClientFactory) -> None:
    client = make_client(allowed_hosts="ser.example,localhost")
    assert client.get("/healthz", headers={"host": "ser.example:8000"}).status_code == 200
    refused = client.get("/v1/models", headers={"host": "rebound.evil.example"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_host"
    ws_refused = denial(client, {"host": "rebound.evil.example"})
    assert ws_refused.status_code == 400 and ws_refused.json()["error"]["code"] == "invalid_host"


def test_every_response_says_nosniff_and_html_cannot_be_framed(client: TestClient) -> None:
    assert client.get("/healthz").headers["x-content-type-options"] == "nosniff"
    assert client.get("/nowhere").headers["x-content-type-options"] == "nosniff"
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-security-policy"] == PAGE_POLICY
    assert "frame-ancestors 'none'" in PAGE_POLICY and "'unsafe-inline'" not in PAGE_POLICY


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_docs_policy_allows_exactly_their_inline_scripts(client: TestClient, path: str) -> None:
    reply = client.get(path)
    policy = reply.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", reply.text, re.DOTALL)
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert policy.count("'sha256-") == len(scripts)
    assert "frame-ancestors 'none'" in policy
