"""The web page in real headless Chromium: microphone streaming and upload, read from the DOM.

The fake microphone plays a WAV file written here (Chromium loops it). The app runs under
uvicorn on a free loopback port, with the tiny random test models.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.labels import LABELS
from tests.browser.devtools import BROWSER_TEST, Page, chromium_page

pytestmark = BROWSER_TEST

# Set to keep the streaming screenshot (the README's picture comes from this test).
SCREENSHOT_COPY = os.environ.get("SER_SCREENSHOT_COPY")


async def open_page(page: Page, url: str) -> None:
    await page.send("Page.navigate", url=url)
    await page.wait_for(
        "document.readyState === 'complete' && document.querySelectorAll('.bar-row').length > 0"
    )


async def click(page: Page, element_id: str) -> None:
    """A real mouse click (press and release) at the centre of the element."""
    x, y = await page.evaluate(
        f"(() => {{ const r = document.getElementById('{element_id}').getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        await page.send(
            "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
        )


def text_of(element_id: str) -> str:
    return f"document.getElementById('{element_id}').textContent.trim()"


def affect_shown(element_id: str) -> str:
    """{dimension: [the exact value held, the text shown]} of an arousal/valence group."""
    return (
        f"Object.fromEntries([...document.querySelectorAll('#{element_id} .affect-row')]"
        ".map(r => { const v = r.querySelector('.affect-value');"
        " return [r.dataset.dimension, [v.dataset.value, v.textContent.trim()]]; }))"
    )


def assert_shows(shown: dict[str, list[str]], arousal: float, valence: float) -> None:
    """The page shows the server's scores: exactly held, and written with a sign, 2 decimals."""
    assert list(shown) == ["arousal", "valence"]
    for (value, text), expected in zip(shown.values(), (arousal, valence), strict=True):
        assert float(value) == expected
        assert text[0] in "+-" and float(text) == pytest.approx(expected, abs=0.0051)


def polylines(element_id: str) -> str:
    return (
        f"[...document.querySelectorAll('#{element_id} polyline')]"
        ".map(l => [l.dataset.label, l.getAttribute('points').trim().split(' ').length])"
    )


async def test_microphone_streaming_shows_live_predictions(
    base_url: str, microphone_wav: Path, tmp_path: Path
) -> None:
    async with chromium_page(
        microphone_wav, tmp_path / "profile", tmp_path / "chromium.log"
    ) as page:
        await page.send("Network.enable")  # to read what the server sent the page
        await open_page(page, base_url + "/")
        await click(page, "start-button")
        # 3.5 s for the first window, then one every 0.5 s of audio.
        await page.wait_for(
            "Number(document.getElementById('live-result').dataset.predictions || 0) >= 3",
            timeout_s=45,
        )
        label = await page.evaluate(text_of("live-label"))
        speech = await page.evaluate("document.getElementById('speech-indicator').dataset.speech")
        bars = await page.evaluate(
            "[...document.querySelectorAll('#live-bars .bar-track')]"
            ".map(b => Number(b.getAttribute('aria-valuenow')))"
        )
        status = await page.evaluate(text_of("live-status"))
        # Emotion over time: a point per speech window on each of the 8 lines.
        await page.wait_for(
            "Number(document.getElementById('live-timeline').dataset.points || 0) >= 3"
        )
        lines = await page.evaluate(polylines("live-timeline"))
        screenshot = await page.screenshot(tmp_path / "streaming.png")
        if SCREENSHOT_COPY:
            shutil.copyfile(screenshot, SCREENSHOT_COPY)

        assert label in LABELS
        assert speech == "true"
        assert len(bars) == 8 and sum(bars) == pytest.approx(100, abs=1.0)
        assert "Streaming to" in status and "Hz" in status
        assert [label for label, _ in lines] == list(LABELS)
        assert all(points >= 3 for _, points in lines)
        assert screenshot.stat().st_size > 10_000

        await click(page, "stop-button")
        await page.wait_for("!document.getElementById('summary').hidden", timeout_s=15)
        summary = await page.evaluate(text_of("summary-text"))
        await page.wait_for(f"{text_of('live-status')} === 'Stopped.'", timeout_s=10)
        assert "streamed" in summary and "overall" in summary
        assert page.console_errors == []

        # Arousal and valence: the smoothed ones of the last window and the summary's, as the
        # server sent them; each speech window a point on both lines of the second timeline.
        messages = [json.loads(text) for text in page.websocket_received]
        predictions = [m for m in messages if m["type"] == "prediction"]
        [session] = [m for m in messages if m["type"] == "summary"]
        last = [m for m in predictions if m["smoothed"] is not None][-1]
        live = await page.evaluate(affect_shown("live-affect"))
        assert_shows(live, last["smoothed_arousal"], last["smoothed_valence"])
        assert_shows(
            await page.evaluate(affect_shown("summary-affect")),
            session["arousal"],
            session["valence"],
        )
        speech_windows = sum(m["speech"] for m in predictions)
        assert session["speech_windows"] == speech_windows >= 3
        affect_lines = await page.evaluate(polylines("live-affect-timeline"))
        assert affect_lines == [["arousal", speech_windows], ["valence", speech_windows]]


async def test_uploading_a_file_shows_its_probabilities(
    base_url: str, microphone_wav: Path, tmp_path: Path
) -> None:
    async with chromium_page(
        microphone_wav, tmp_path / "profile", tmp_path / "chromium.log"
    ) as page:
        await open_page(page, base_url + "/")
        document = await page.send("DOM.getDocument")
        node = await page.send(
            "DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file"
        )
        await page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(microphone_wav)])
        await click(page, "upload-button")
        await page.wait_for("!document.getElementById('upload-result').hidden", timeout_s=30)
        label = await page.evaluate(text_of("upload-label"))
        values = await page.evaluate(
            "[...document.querySelectorAll('#upload-bars .bar-value')].map(v => v.textContent)"
        )
        assert label in LABELS
        assert len(values) == 8 and all(v.endswith("%") for v in values)
        assert sum(float(v[:-1]) for v in values) == pytest.approx(100, abs=1.0)
        assert "microphone.wav" in await page.evaluate(text_of("upload-status"))
        # 6 s of audio: several windows, so the timeline is shown with a point for each.
        timeline = await page.evaluate(
            "[document.getElementById('upload-timeline').hidden,"
            " Number(document.getElementById('upload-timeline').dataset.points)]"
        )
        assert timeline[0] is False and timeline[1] >= 3
        # Arousal and valence: the clip's, as /predict answers for the same file, and each
        # window's on the second timeline.
        body = served_prediction(base_url, microphone_wav)
        assert_shows(
            await page.evaluate(affect_shown("upload-affect")), body["arousal"], body["valence"]
        )
        hidden = await page.evaluate("document.getElementById('upload-affect-timeline').hidden")
        windows = len(body["segments"])
        assert hidden is False and timeline[1] == windows
        affect_lines = await page.evaluate(polylines("upload-affect-timeline"))
        assert affect_lines == [["arousal", windows], ["valence", windows]]
        assert page.console_errors == []


def served_prediction(base_url: str, path: Path) -> dict[str, Any]:
    files = {"file": (path.name, path.read_bytes(), "audio/wav")}
    response = httpx.post(base_url + "/predict", files=files, timeout=60, trust_env=False)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
