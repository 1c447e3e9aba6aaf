"""The key a connection's limits count against is a normalised IP address, never a raw header
string (uvicorn puts whatever a trusted proxy's X-Forwarded-For holds in the ASGI client)."""

from __future__ import annotations

import pytest

from app.api.admission import UNKNOWN_CLIENT, client_host


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::/64"),
        ("2001:DB8::1", "2001:db8::/64"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb:cccc:dddd:eeee", "2001:db8:1:2::/64"),  # the same /64: one client
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("x" * 8000, UNKNOWN_CLIENT),
        ("198.51.100.7, 10.0.0.1", UNKNOWN_CLIENT),
        ("", UNKNOWN_CLIENT),
        ("testclient", UNKNOWN_CLIENT),
    ],
)
def test_admission_keys_are_normalised_addresses(host: str, key: str) -> None:
    assert client_host({"client": (host, 1234)}) == key


def test_a_connection_without_a_client_is_unknown() -> None:
    assert client_host({"client": None}) == UNKNOWN_CLIENT
    assert client_host({}) == UNKNOWN_CLIENT


def test_every_key_is_short() -> None:
    hosts = ["a" * 100_000, "::ffff:" + "1" * 5000, "fe80::1%" + "e" * 5000]
    assert all(len(client_host({"client": (h, 1)})) <= 64 for h in hosts)
