"""``/docs`` works without internet: Swagger UI from the service's own assets, in headless
Chromium that can resolve no host name but loopback; "Try it out" uploads a file."""

from __future__ import annotations

from pathlib import Path

from tests.browser.devtools import BROWSER_TEST, Page, chromium_page

pytestmark = BROWSER_TEST

PREDICT = "#operations-predict-predict_v1_predict_post"


async def click(page: Page, selector: str) -> None:
    """A real mouse click at the centre of the first element matching ``selector``."""
    await page.wait_for(f"document.querySelector({selector!r}) !== null")
    x, y = await page.evaluate(
        f"(() => {{ const e = document.querySelector({selector!r});"
        " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        await page.send(
            "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
        )


async def test_docs_render_and_try_it_out_offline(
    base_url: str, microphone_wav: Path, tmp_path: Path
) -> None:
    async with chromium_page(
        microphone_wav, tmp_path / "profile", tmp_path / "chromium.log", offline=True
    ) as page:
        await page.send("Page.navigate", url=base_url + "/docs")
        await page.wait_for("document.querySelectorAll('.opblock').length >= 6", timeout_s=45)
        paths = await page.evaluate(
            "[...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)"
        )
        assert {"/v1/predict", "/predict", "/v1/models", "/healthz", "/readyz"} <= {
            p.replace("\u200b", "") for p in paths
        }

        await click(page, f"{PREDICT} .opblock-summary")
        await click(page, f"{PREDICT} .try-out__btn")
        await page.wait_for(f"document.querySelector('{PREDICT} input[type=file]') !== null")
        document = await page.send("DOM.getDocument", depth=-1)
        node = await page.send(
            "DOM.querySelector",
            nodeId=document["root"]["nodeId"],
            selector=f"{PREDICT} input[type=file]",
        )
        await page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(microphone_wav)])
        await click(page, f"{PREDICT} .execute")
        response = f"{PREDICT} .live-responses-table tr.response"
        status = f"document.querySelector('{response} .response-col_status')"
        await page.wait_for(f"{status} !== null && {status}.textContent.trim() === '200'", 45)
        body = await page.evaluate(f"document.querySelector('{response} pre').textContent")
        assert '"probabilities"' in body and '"label"' in body
        assert page.console_errors == []
        # And offline indeed: from this browser a CDN cannot be reached.
        cdn = await page.evaluate(
            "fetch('https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css')"
            ".then(() => 'reached', () => 'unreachable')"
        )
        assert cdn == "unreachable"
