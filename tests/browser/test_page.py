"""The web page in real headless Chromium: microphone streaming and upload, read from the DOM.

The fake microphone plays a WAV file written here (Chromium loops it). The app runs under
uvicorn on a free loopback port, with the tiny random test models.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


async def test_microphone_streaming_shows_live_predictions(
    base_url: str, microphone_wav: Path, tmp_path: Path
) -> None:
    async with chromium_page(
        microphone_wav, tmp_path / "profile", tmp_path / "chromium.log"
    ) as page:
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
        lines = await page.evaluate(
            "[...document.querySelectorAll('#live-timeline polyline')]"
            ".map(l => [l.dataset.label, l.getAttribute('points').trim().split(' ').length])"
        )
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
        assert page.console_errors == []
