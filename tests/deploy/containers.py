"""Podman, the stand-in base images and the serving image, for the container tests.

The images are built for real, from the repository's ``Dockerfile``, with podman on this
project's machines, where no registry can be reached: ``deploy/standin/build-bases.sh`` makes the
stand-in bases from a Debian bookworm root (debootstrap), then the serving image is built on
them, once without the layer cache (as a clean machine builds it) and once more with it.
Every podman command runs with ``deploy/standin/containers.conf`` (runc, the rlimits this kernel
accepts, no systemd).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import yaml

from tests.deploy.conftest import REPO

STANDIN: Final[Path] = REPO / "deploy" / "standin"
DEBIAN_IMAGE: Final[str] = "localhost/ser-standin/debian:bookworm"
PYTHON_IMAGE: Final[str] = "localhost/ser-standin/python:3.11-bookworm"
GATEWAY_IMAGE: Final[str] = "localhost/ser-standin/nginx:bookworm"
SERVICE_IMAGE: Final[str] = "localhost/ser-service:standin"  # deploy/standin/compose.yml runs it
# The Dockerfile's CPU target, as docker-compose.yml builds it.
TARGET: Final[str] = "runtime"
# pip in the build trusts the host's certificate bundle (this machine reaches PyPI through its
# own TLS set-up); it is mounted for the build only, with deploy/standin/pip.conf pointing at it.
HOST_CA_BUNDLE: Final[Path] = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
BUILD_TIMEOUT_S: Final[float] = 900.0
# Seconds docker compose (and podman) wait after SIGTERM before SIGKILL; docker-compose.yml sets
# no stop_grace_period, so the default.
COMPOSE_GRACE_PERIOD_S: Final[float] = 10.0
COMPOSE_FILES: Final[tuple[Path, ...]] = (
    REPO / "docker-compose.yml",
    STANDIN / "compose.yml",
)


def environment() -> dict[str, str]:
    """The environment of every podman command: this repository's containers.conf."""
    return {**os.environ, "CONTAINERS_CONF": str(STANDIN / "containers.conf")}


def require(tool: str, package: str) -> str:
    """The path of ``tool``; in CI a missing tool fails (``.ci/run`` installs it), elsewhere the
    test is skipped."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: .ci/run installs {package}")
        pytest.skip(f"{tool} is not installed (apt-get install {package}); see docs/deployment.md")
    return found


def require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the container tests run podman and debootstrap as root")
        pytest.skip("the container tests run podman and debootstrap as root")


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    """``podman ARGS``, text output captured; raises with podman's own words when it fails."""
    done = subprocess.run(
        ["podman", *args],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def inspect(name: str, template: str, kind: str = "container") -> str:
    """``podman KIND inspect --format TEMPLATE NAME``, KIND ``container`` or ``image``."""
    return podman(kind, "inspect", "--format", template, name).stdout.strip()


@dataclass(frozen=True)
class Build:
    """What building the serving image took and gave."""

    bases_s: float | None  # the stand-in bases, or None when they were already there
    cold_s: float  # the serving image without podman's layer cache
    cached_s: float  # the same build again, from the cache
    size_bytes: int

    def summary(self) -> str:
        bases = f"{self.bases_s:.0f} s" if self.bases_s is not None else "reused"
        return (
            f"serving image {self.size_bytes / 1e6:.0f} MB; stand-in bases {bases}; "
            f"build without cache {self.cold_s:.0f} s, with cache {self.cached_s:.1f} s"
        )


def build_bases() -> float | None:
    """Run ``deploy/standin/build-bases.sh`` unless its images are all there; its seconds."""
    have = [podman("image", "exists", i, check=False).returncode == 0 for i in _bases()]
    if all(have):
        return None
    started = time.monotonic()
    done = subprocess.run(
        [str(STANDIN / "build-bases.sh")],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return time.monotonic() - started


def _bases() -> tuple[str, ...]:
    return (DEBIAN_IMAGE, PYTHON_IMAGE, GATEWAY_IMAGE)


def build_command(no_cache: bool) -> list[str]:
    """The ``podman build`` of the serving image (docs/deployment.md shows the same command)."""
    command = ["build", "--format", "docker", "--target", TARGET]
    command += ["--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}", "-t", SERVICE_IMAGE]
    if HOST_CA_BUNDLE.is_file():
        command += ["-v", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
        command += ["-v", f"{STANDIN / 'pip.conf'}:/etc/pip.conf:ro"]
    if no_cache:
        command.append("--no-cache")
    return [*command, str(REPO)]


def build_service_image() -> Build:
    """The stand-in bases (if missing), then the serving image, cold and cached.

    The untagged images these builds leave (the builder stage, the serving image of a previous
    run) are removed afterwards, about 1.2 GB a run; other untagged images are left alone."""
    bases_s = build_bases()
    untagged_before = _untagged()
    timings = []
    for no_cache in (True, False):
        started = time.monotonic()
        podman(*build_command(no_cache), timeout=BUILD_TIMEOUT_S)
        timings.append(time.monotonic() - started)
    left = _untagged() - untagged_before
    if left:
        podman("rmi", *sorted(left), check=False)
    size = int(inspect(SERVICE_IMAGE, "{{.Size}}", "image"))
    return Build(bases_s, timings[0], timings[1], size)


def _untagged() -> set[str]:
    listed = podman("images", "--quiet", "--no-trunc", "--filter", "dangling=true")
    return set(listed.stdout.split())


def compose_service(name: str) -> dict[str, Any]:
    """A service of docker-compose.yml, anchors and merge keys resolved."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return dict(services[name])


def run_args_like_compose(service: Mapping[str, Any]) -> list[str]:
    """``podman run`` options that give a container what compose gives ``service``: its
    environment, read-only root with only its tmpfs mounts writable, CPU and memory limits.

    ``--read-only-tmpfs=false``: podman's ``--read-only`` alone also mounts a writable /run,
    /tmp and /var/tmp, which Docker's ``read_only`` does not."""
    args: list[str] = []
    for key, value in service.get("environment", {}).items():
        args += ["-e", f"{key}={value}"]
    if service.get("read_only"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    for mount in service.get("tmpfs", []):
        args += ["--tmpfs", mount]
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    if "cpus" in limits:
        args += ["--cpus", str(limits["cpus"])]
    if "memory" in limits:
        args += ["--memory", str(limits["memory"]).lower()]
    return args


def published_port(container: str, port: int) -> int:
    """The host port on 127.0.0.1 that ``port`` of ``container`` is published on."""
    address = podman("port", container, str(port)).stdout.strip()
    host, _, published = address.rpartition(":")
    assert host == "127.0.0.1", f"published on {host}, not loopback only"
    return int(published)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``check`` until it is true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(OSError, httpx.HTTPError, RuntimeError):
            if check():
                return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def logs(container: str) -> str:
    done = podman("logs", container, check=False)
    return done.stdout + done.stderr
