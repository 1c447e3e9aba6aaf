"""Who may set the client address (X-Forwarded-For): the gateway's address in every
deployment file, never ``*`` (anything that reached a replica directly could otherwise choose
the address its stream limits count against)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DEFAULT_GATEWAY = "172.28.0.10"


def compose_default(value: str) -> str:
    """The default of a ``${NAME:-default}`` compose interpolation."""
    assert value.startswith("${") and ":-" in value, value
    return value[value.index(":-") + 2 : -1]


def test_compose_trusts_the_gateways_fixed_address_only() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    trusted = compose_default(compose["x-ser-environment"]["FORWARDED_ALLOW_IPS"])
    gateway = compose["services"]["gateway"]["networks"]["default"]["ipv4_address"]
    assert trusted == compose_default(gateway) == COMPOSE_DEFAULT_GATEWAY
    (pool,) = compose["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(trusted) in ipaddress.ip_network(compose_default(pool["subnet"]))
    for name in ("ser", "ser-gpu"):
        environment = compose["services"][name]["environment"]
        assert compose_default(environment["FORWARDED_ALLOW_IPS"]) == trusted


def test_the_image_trusts_loopback_only() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    values = [
        line.split("=", 1)[1].strip(" \\") for line in lines if "FORWARDED_ALLOW_IPS=" in line
    ]
    assert values == ["127.0.0.1", "127.0.0.1"]  # both runtime stages


@pytest.mark.parametrize("name", ["deployment.yaml", "gpu/deployment.yaml"])
def test_kubernetes_trusts_the_pod_network_only(name: str) -> None:
    manifest = yaml.safe_load((REPO / "deploy" / "k8s" / name).read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    network = ipaddress.ip_network(env["FORWARDED_ALLOW_IPS"])
    assert network.is_private and network.prefixlen >= 8
