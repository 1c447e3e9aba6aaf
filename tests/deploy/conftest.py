"""Shared pieces of the deployment tests: the repository's paths and the gateway template."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import pytest

REPO: Final[Path] = Path(__file__).resolve().parents[2]
GATEWAY_TEMPLATE: Final[Path] = REPO / "deploy" / "nginx" / "templates" / "default.conf.template"
# What the nginx image's entrypoint substitutes with NGINX_ENVSUBST_FILTER=GATEWAY_:
# $GATEWAY_X and ${GATEWAY_X}.
PLACEHOLDER: Final[re.Pattern[str]] = re.compile(r"\$(\{)?(GATEWAY_\w*)(?(1)\})")


def template_placeholders(text: str) -> set[str]:
    """The ``GATEWAY_*`` names a template uses."""
    return {m.group(2) for m in PLACEHOLDER.finditer(text)}


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Substitute every ``GATEWAY_*`` placeholder, as the nginx image does at start-up.

    Raises:
        KeyError: a placeholder has no value (nginx would see the literal and refuse to start).
    """
    missing = template_placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for {sorted(missing)}: set them in docker-compose.yml too")
    return PLACEHOLDER.sub(lambda m: values[m.group(2)], text)


@pytest.fixture(scope="session")
def gateway_template() -> str:
    return GATEWAY_TEMPLATE.read_text()


@pytest.fixture(scope="session")
def gateway_placeholders(gateway_template: str) -> set[str]:
    return template_placeholders(gateway_template)


@pytest.fixture(scope="session")
def render_gateway(gateway_template: str) -> Callable[[Mapping[str, str]], str]:
    """``render(values) -> nginx config text`` of the repository's gateway template."""
    return lambda values: render_template(gateway_template, values)


@pytest.fixture(scope="session")
def service_image():  # -> tests.deploy.containers.Build
    """The serving image built from the Dockerfile with podman on the stand-in base, once per
    run (tests/deploy/containers.py); skipped where podman is missing, except in CI."""
    from tests.deploy import containers

    for tool, package in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        containers.require(tool, package)
    containers.require_root()
    return containers.build_service_image()
