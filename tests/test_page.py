"""The web page at ``/`` in a real browser: Debian's chromium, driven by playwright, against a
live server (real HTTP) on the shipped models.

Needs /usr/bin/chromium (Debian package `chromium`; `playwright install` is never run, the
browser is the system's) and the Python package playwright (the test extra). Without them
the tests are skipped, unless SR_REQUIRE_BROWSER=1 (CI), where they fail. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from service.config import Settings

from .helpers import REPO_ROOT, SHIPPED_STORE, LiveServer, image_bytes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
# Waits in ms: the first upscale pays for cold caches on a loaded 2-core machine.
FIRST_UPSCALE_MS = 30_000
WAIT_MS = 10_000
INPUT_SIZE = (40, 30)


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (Debian package chromium)"
    return None


MISSING = _missing()
REQUIRED = os.environ.get("SR_REQUIRE_BROWSER") == "1"
needs_browser = pytest.mark.skipif(
    MISSING is not None and not REQUIRED, reason=f"{MISSING}; SR_REQUIRE_BROWSER=1 fails instead"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if MISSING is not None:
        pytest.fail(f"SR_REQUIRE_BROWSER=1 but {MISSING}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(Settings(model_store=SHIPPED_STORE, device="cpu", calibrate=False)) as live:
        yield live


@contextmanager
def open_page(browser: Browser, url: str, **context: Any) -> Iterator[Page]:
    """A fresh context (its own sessionStorage) on ``url``; uncaught script errors fail the test."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The page runs under its own Content-Security-Policy; anything it blocks is a bug.
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(url + "/")
    try:
        yield page
    finally:
        ctx.close()
    assert errors == []


@pytest.fixture
def desktop(browser: Browser, server: LiveServer) -> Iterator[Page]:
    with open_page(browser, server.url, viewport={"width": 1280, "height": 900}) as page:
        yield page


def wait_for_methods(page: Page) -> None:
    # Selectors, not wait_for_function: its string predicates need eval, which the page's CSP
    # (rightly) refuses.
    page.wait_for_selector("#method option[value=espcn]", state="attached")
    assert page.input_value("#method") == "espcn"  # the default once the list is in


def png_file(data: bytes, name: str = "pattern.png") -> dict[str, Any]:
    return {"name": name, "mimeType": "image/png", "buffer": data}


def upload(
    page: Page, data: bytes, outcome: str = "done", timeout_ms: float = FIRST_UPSCALE_MS,
    name: str = "pattern.png",
) -> None:
    """Pick ``data`` in the file input and wait until the run ends in ``outcome`` (done|error)."""
    # The state may already read `outcome` from before: wait for this upload's answer first.
    with page.expect_response(lambda r: "/v1/upscale" in r.url, timeout=timeout_ms):
        page.set_input_files("#file", files=[png_file(data, name)])
    page.wait_for_selector(f"#app[data-state={outcome}]", timeout=timeout_ms)


def image_sizes(page: Page) -> dict[str, list[int]]:
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#stage img')]"
        ".map(i => [i.id, [i.naturalWidth, i.naturalHeight]]))"
    )


def broken_images_shown(page: Page) -> list[str]:
    """Images on screen that the browser could not draw (the broken-image icon)."""
    return page.evaluate(
        "() => [...document.images].filter(i => i.checkVisibility() && !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.id)"
    )


def no_horizontal_overflow(page: Page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def divider_state(page: Page) -> dict[str, float]:
    """Where the divider is on screen, and where the result's clip starts on screen."""
    return page.evaluate("""() => {
        const d = document.querySelector('#divider').getBoundingClientRect();
        const s = document.querySelector('#stage').getBoundingClientRect();
        const clip = document.querySelector('#result').style.clipPath.match(/inset\\(0(?:px)? 0(?:px)? 0(?:px)? ([\\d.]+)px\\)/);
        return {centre: d.left + d.width / 2, clip: s.left + Number(clip[1]),
                value: Number(document.querySelector('#divider').getAttribute('aria-valuenow'))};
    }""")


def test_the_page_and_its_assets_are_served_and_not_in_the_schema(server: LiveServer) -> None:
    index = httpx.get(server.url + "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["content-security-policy"]
    for asset, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{server.url}/static/{asset}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    # Only the page's own assets: index.html is in the folder but not an asset.
    missing = httpx.get(server.url + "/static/index.html")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    # Nothing on the page comes from elsewhere: it works offline.
    assert not re.search(r"(src|href)=\"(https?:)?//", index.text)
    assert "/" not in httpx.get(server.url + "/openapi.json").json()["paths"]


@needs_browser
def test_upscale_compare_zoom_download_and_an_invalid_image(desktop: Page, server: LiveServer) -> None:
    page = desktop
    # The method list comes from GET /v1/methods, plus auto.
    wait_for_methods(page)
    offered = httpx.get(server.url + "/v1/methods").json()["methods"]
    options = page.eval_on_selector_all("#method option", "os => os.map(o => o.value)")
    assert options == ["auto"] + [m["name"] for m in offered]
    page.select_option("#scale", "3")

    upload(page, image_bytes(size=INPUT_SIZE))
    r = 3
    w, h = INPUT_SIZE[0] * r, INPUT_SIZE[1] * r
    assert image_sizes(page) == {"under": [w, h], "result": [w, h]}
    assert page.is_visible("#viewer") and not page.is_visible("#error")
    assert broken_images_shown(page) == []

    # What ran, with which weights, and the server's stages.
    espcn = next(m for m in offered if m["name"] == "espcn")
    assert page.text_content("#info-method") == "espcn"
    assert page.text_content("#info-model") == espcn["models"]["3"]
    assert (page.text_content("#info-size") or "").startswith(f"40x30 → {w}x{h} (x3)")
    timing = page.eval_on_selector_all(
        "#timing li", "lis => lis.map(li => [li.children[0].textContent, li.children[2].textContent])"
    )
    names = [name for name, _ in timing]
    assert {"read", "decode", "infer", "encode", "total"} <= set(names) and names[-1] == "total"
    assert all(re.fullmatch(r"\d+\.\d\d ms", value) for _, value in timing)

    # The divider: a mouse drag moves it and the result's clip with it; so do the arrow keys.
    before = divider_state(page)
    assert abs(before["centre"] - before["clip"]) < 2
    box = page.locator("#divider").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 200, y, steps=5)
    page.mouse.up()
    dragged = divider_state(page)
    assert abs(dragged["centre"] - (before["centre"] - 200)) < 3
    assert abs(dragged["centre"] - dragged["clip"]) < 2 and dragged["value"] < before["value"]
    page.focus("#divider")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    keyed = divider_state(page)
    assert keyed["value"] == pytest.approx(dragged["value"] + 10, abs=1) and keyed["centre"] > dragged["centre"]

    # The image underneath: nearest or bicubic of the same input, same size.
    bicubic_src = page.get_attribute("#under", "src")
    page.select_option("#compare", "nearest")
    page.evaluate("document.querySelector('#under').decode()")
    assert page.get_attribute("#under", "src") != bicubic_src
    assert image_sizes(page)["under"] == [w, h]
    assert page.text_content("#legend-under") == "nearest"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)

    # Zoom to 16 screen pixels per pixel: sharp squares, and the view scrolls and pans.
    page.select_option("#zoom", "16")
    assert page.evaluate("document.querySelector('#stage').offsetWidth") == w * 16
    assert page.evaluate("getComputedStyle(document.querySelector('#result')).imageRendering") == "pixelated"
    assert page.evaluate("(v => v.scrollWidth > v.clientWidth)(document.querySelector('#viewport'))")
    scroll = page.evaluate("document.querySelector('#viewport').scrollLeft")
    view = page.locator("#viewport").bounding_box()
    assert view is not None
    px, py = view["x"] + view["width"] * 0.85, view["y"] + view["height"] / 2
    page.mouse.move(px, py)
    page.mouse.down()
    page.mouse.move(px - 150, py, steps=5)
    page.mouse.up()
    assert page.evaluate("document.querySelector('#viewport').scrollLeft") == pytest.approx(scroll + 150, abs=2)
    panned = divider_state(page)
    assert abs(panned["centre"] - panned["clip"]) < 2  # the clip follows the image under the divider
    page.select_option("#zoom", "fit")

    # The download: the result's bytes, named after the input, the scale and the method.
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "pattern-x3-espcn.png"
    with Image.open(download.value.path()) as saved:
        assert saved.size == (w, h)

    # auto: the latency budget field appears and is sent as max_latency_ms.
    page.select_option("#method", "auto")
    assert page.is_visible("#budget-field")
    with page.expect_request(lambda req: "method=auto" in req.url and "max_latency_ms" in req.url) as sent:
        page.fill("#budget", "5000")
        page.press("#budget", "Tab")
    assert "max_latency_ms=5000" in sent.value.url
    page.wait_for_selector("#app[data-state=done]", timeout=WAIT_MS)
    assert page.text_content("#info-method") in {m["name"] for m in offered}
    assert (page.text_content("#info-auto") or "").startswith("auto: ")

    # A corrupt file: the API's problem in the error box, and no image at all.
    corrupt = image_bytes(size=INPUT_SIZE)[:60]
    problem = httpx.post(f"{server.url}/v1/upscale?scale=3&method=auto&max_latency_ms=5000",
                         content=corrupt, headers={"Content-Type": "image/png"})
    assert problem.status_code == 400
    assert problem.headers["content-type"].startswith("application/problem+json")
    upload(page, corrupt, outcome="error", timeout_ms=WAIT_MS, name="truncated.png")
    assert page.is_visible("#error")
    assert page.text_content("#error-title") == problem.json()["title"]
    assert page.text_content("#error-detail") == problem.json()["detail"]
    assert not page.is_visible("#viewer") and not page.is_visible("#info")
    assert page.get_attribute("#result", "src") is None
    assert broken_images_shown(page) == []
    assert not page.is_visible("#key-field")
    page.screenshot(path=str(ARTIFACTS / "page-error.png"), full_page=True)
    assert no_horizontal_overflow(page)


@needs_browser
def test_the_page_fits_a_phone(browser: Browser, server: LiveServer) -> None:
    with open_page(browser, server.url, viewport={"width": 390, "height": 844},
                   is_mobile=True, has_touch=True, device_scale_factor=2) as page:
        wait_for_methods(page)
        assert no_horizontal_overflow(page)
        upload(page, image_bytes(size=INPUT_SIZE))
        assert image_sizes(page)["result"] == [INPUT_SIZE[0] * 2, INPUT_SIZE[1] * 2]
        assert page.is_visible("#viewer") and page.is_visible("#info")
        assert no_horizontal_overflow(page)
        assert page.locator("#viewer").bounding_box()["width"] <= 390  # type: ignore[index]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)


@needs_browser
def test_a_401_asks_for_the_key_and_the_key_is_sent(browser: Browser) -> None:
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", calibrate=False, api_keys="k1")
    with LiveServer(settings) as live:
        with open_page(browser, live.url, viewport={"width": 1280, "height": 900}) as page:
            # The method list answers 401: the key field and the problem appear, no result.
            page.wait_for_selector("#key-field", state="visible")
            assert page.text_content("#error-title") == "A valid API key is required"
            upload(page, image_bytes(size=INPUT_SIZE), outcome="error", timeout_ms=WAIT_MS)
            assert page.is_visible("#key-field") and not page.is_visible("#viewer")
            assert broken_images_shown(page) == []

            page.fill("#key", "wrong")
            page.click("#key-save")
            page.wait_for_selector("#error-detail:has-text('not valid')")

            # Filled in, the key goes on every request, and the pending image is upscaled.
            page.fill("#key", "k1")
            with page.expect_request(lambda req: "/v1/upscale" in req.url) as sent:
                page.click("#key-save")
            assert sent.value.headers.get("authorization") == "Bearer k1"
            page.wait_for_selector("#app[data-state=done]", timeout=FIRST_UPSCALE_MS)
            assert image_sizes(page)["result"] == [INPUT_SIZE[0] * 2, INPUT_SIZE[1] * 2]
            assert not page.is_visible("#error")
            assert page.evaluate("sessionStorage.getItem('subpixel.apiKey')") == "k1"
            assert page.text_content("#info-method") == "espcn"


@needs_browser
def test_swagger_ui_uploads_a_file_and_shows_the_image(browser: Browser, server: LiveServer, tmp_path: Path) -> None:
    """/docs works with no network (its files come from the app) and can try an upscale."""
    page = browser.new_page(viewport={"width": 1280, "height": 1800})
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(server.url + "/docs")
        operation = "#operations-upscale-upscale"
        page.click(f"{operation} .opblock-summary")
        page.click(f"{operation} .try-out__btn")
        content_type = page.locator(f"{operation} .body-param-content-type select")
        assert "multipart/form-data" in content_type.evaluate("s => [...s.options].map(o => o.value)")
        content_type.select_option("image/png")
        source = tmp_path / "in.png"
        source.write_bytes(image_bytes(size=(20, 14)))
        page.set_input_files(f"{operation} input[type=file]", str(source))
        page.click(f"{operation} .execute")
        shown = page.wait_for_selector(f"{operation} .live-responses-table img", timeout=FIRST_UPSCALE_MS)
        assert shown is not None
        assert shown.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [40, 28]  # x2, the default
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "docs.png"))
    finally:
        page.close()
