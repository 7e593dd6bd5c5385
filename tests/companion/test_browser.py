"""The built book in headless Chromium: every page loads offline (no failed or external request,
no console error beyond an allow-list), images load, MathJax typesets, and the example notebook's
jslinked widgets (tests/companion/book_fixtures.py) respond without a kernel.

Uses Debian's /usr/bin/chromium through Playwright's Python API (no browser download).
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from tests.companion.test_book import EXAMPLE, PAGES, build_example_book

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
]
# sphinx-thebe 0.3.1 inlines its config script twice on every page (harmless redeclaration)
CONSOLE_ALLOW = ("THEBE_JS_URL",)

pytestmark = pytest.mark.browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built HTML served on 127.0.0.1 at a free port."""
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium is missing (make test installs it with apt-get install chromium)")
    built = build_example_book(tmp_path_factory)
    assert built.code == 0, built.output
    handler = functools.partial(_QuietHandler, directory=str(built.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium is missing (make test installs it with apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class PageLog:
    def __init__(self, page, base: str):
        self.failed: list[str] = []
        self.external: list[str] = []
        self.errors: list[str] = []
        self.bad_status: list[str] = []
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else self.external.append(r.url))
        page.on("response", lambda r: self.bad_status.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)

    def check(self, page_name: str) -> None:
        errors = [e for e in self.errors if not any(a in e for a in CONSOLE_ALLOW)]
        assert not self.failed, f"{page_name}: failed requests {self.failed}"
        assert not self.bad_status, f"{page_name}: HTTP errors {self.bad_status}"
        assert not self.external, f"{page_name}: requests leaving the site {self.external}"
        assert not errors, f"{page_name}: console errors {errors}"


def _open(browser, site: str, page_name: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log = PageLog(page, site)
    page.goto(f"{site}/{page_name}.html", wait_until="networkidle")
    return page, log


def _images_ok(page) -> list[str]:
    return page.eval_on_selector_all(
        "img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src)"
    )


@pytest.mark.parametrize("page_name", PAGES)
def test_page_loads_offline(browser, site, page_name, tmp_path):
    page, log = _open(browser, site, page_name)
    try:
        assert page.locator("article").count() >= 1
        assert _images_ok(page) == [], "images that did not load"
        if page_name == "book/method":
            page.wait_for_selector("mjx-container", timeout=15000)  # MathJax typeset, from the vendored copy
            assert page.locator("mjx-container").count() > 10
            assert page.locator("table").count() >= 1  # the 180-parameter split
        if page_name == "book/bibliography":
            assert page.locator(".citation").count() >= 10
        page.screenshot(path=str(tmp_path / (page_name.replace("/", "_") + ".png")), full_page=True)
        log.check(page_name)
    finally:
        page.close()


def test_example_widgets_respond_without_a_kernel(browser, site, tmp_path):
    page_name = f"book/executed/{EXAMPLE}"
    page, log = _open(browser, site, page_name)
    try:
        page.wait_for_selector(".widget-slider", timeout=15000)
        assert page.locator(".widget-slider").count() == 1, "the widget manager rendered the slider more than once"
        assert page.locator("table").count() >= 1
        imgs = page.locator("img[src$='.png']")
        assert imgs.count() >= 1 and _images_ok(page) == []
        box = page.locator(".widget-text input")
        assert box.count() == 1
        assert box.input_value() == "5"
        handle = page.locator(".widget-slider .noUi-handle")
        handle.focus()
        handle.press("ArrowRight")
        handle.press("ArrowRight")
        page.wait_for_function("() => document.querySelector('.widget-text input').value === '7'", timeout=5000)
        assert page.locator(".widget-readout").first.inner_text().strip() == "7"
        page.screenshot(path=str(tmp_path / "example_widgets.png"), full_page=True)
        log.check(page_name)
    finally:
        page.close()


def test_example_points_name_themselves_on_hover(browser, site, tmp_path):
    """The point under the mouse is inside a ``<g class="versemi-tip">`` whose ``<title>`` names it (what the
    browser shows as the tooltip), and each point names its own step."""
    page_name = f"book/executed/{EXAMPLE}"
    page, log = _open(browser, site, page_name)
    try:
        tips = page.locator(".versemi-hover g.versemi-tip")
        assert tips.count() == 5
        for k in (0, 4):
            mark = tips.nth(k).locator("use, path").first
            mark.scroll_into_view_if_needed()
            b = mark.bounding_box()
            assert b and b["width"] > 0, "the point is not drawn"
            x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
            page.mouse.move(x, y)
            name = page.evaluate("([x, y]) => { const g = document.elementFromPoint(x, y).closest('g.versemi-tip');"
                                 " return g ? g.querySelector('title').textContent : null; }", [x, y])
            assert name is not None and name.startswith(f"step {k + 1}: "), name
        log.check(page_name)
    finally:
        page.close()
