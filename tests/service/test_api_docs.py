"""docs/api.md says what the server does: the raw-body content types, the example's version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from app.api.predict import AUDIO_TYPES

ROOT = Path(__file__).resolve().parents[2]
API_DOC = (ROOT / "docs" / "api.md").read_text()


def test_every_accepted_content_type_is_listed() -> None:
    endpoint = next(
        line for line in API_DOC.splitlines() if line.startswith("| `POST /v1/predict`")
    )
    listed = {t for t in re.findall(r"`([a-z]+/[a-z0-9.+-]+)`", endpoint) if not t.endswith(".py")}
    assert listed == set(AUDIO_TYPES)


def test_the_response_example_has_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.findall(r'"version": "([^"]+)"', API_DOC) == [version]
