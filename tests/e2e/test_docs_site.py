"""The built docs site stands alone: every page opened offline, every diagram drawn.

`nox -s docs` builds the site and then runs this module with ``CMPAY_DOCS_SITE=site``. Each
page is served from 127.0.0.1 and opened in Debian's Chromium (never Playwright's download)
with every request to any other host blocked: a page must make no such request, log no console
error, and draw every Mermaid block as an SVG (no diagram left as source text, no Mermaid
error). A second test reads the built files: nothing a browser loads by itself (scripts,
stylesheets, images, frames, CSS ``url()`` and ``@import``, JavaScript ``import``) may point
at another host. Plain links (``<a href>``) to other sites are allowed: a reader follows
them, the page does not load them. JavaScript string literals are not judged (the theme's
bundle names the CDN it would fall back to when a page has no Mermaid of its own); the browser
test shows that nothing is requested from it.
"""

from __future__ import annotations

import contextlib
import functools
import html.parser
import os
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest

from tests.support.queues import unavailable

pytestmark = pytest.mark.docs

CHROMIUM = os.environ.get("CMPAY_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "docs"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

#: Run in the page before its own scripts: the theme draws each diagram into a closed shadow
#: root, which no test could look into; an open one is the same drawing, inspectable.
OPEN_SHADOW_ROOTS = """
const attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
    return attach.call(this, Object.assign({}, init, { mode: "open" }));
};
"""

#: What became of each Mermaid block: the theme replaces a drawn one's <pre> by a <div>.
DIAGRAMS = """
() => ({
    drawn: [...document.querySelectorAll("div.mermaid")].map((d) => {
        const svg = d.shadowRoot && d.shadowRoot.querySelector("svg");
        return svg ? svg.textContent : null;
    }),
    undrawn: [...document.querySelectorAll("pre.mermaid")].map((p) => p.textContent),
    text: document.body.innerText,
})
"""


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site's directory (`nox -s docs` builds it and names it)."""
    where = os.environ.get("CMPAY_DOCS_SITE")
    if not where:
        pytest.skip("the built site is checked by `nox -s docs` (CMPAY_DOCS_SITE unset)")
    root = Path(where)
    if not (root / "index.html").is_file():
        pytest.fail(f"no built site at {root} (run `mkdocs build` first)")
    return root


def _pages(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))


@attrs.define
class Visit:
    """What one page did when opened."""

    console_errors: list[str] = attrs.Factory(list)
    foreign_requests: list[str] = attrs.Factory(list)
    expected_diagrams: int = 0
    drawn: list[str | None] = attrs.Factory(list)
    undrawn: list[str] = attrs.Factory(list)
    text: str = ""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _watch(page: Any, visit: Visit) -> None:
    """Record the page's console errors; block (and record) every request beyond loopback."""

    def console(message: Any) -> None:
        if message.type == "error":
            visit.console_errors.append(message.text)

    def route(handle: Any) -> None:
        if urlsplit(handle.request.url).hostname in LOOPBACK:
            handle.continue_()
        else:
            visit.foreign_requests.append(handle.request.url)
            handle.abort()

    page.on("console", console)
    page.on("pageerror", lambda error: visit.console_errors.append(str(error)))
    page.route("**/*", route)


@pytest.fixture(scope="module")
def visits(site: Path, served: str) -> dict[str, Visit]:
    """Every page opened in Chromium, offline but for loopback."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt install chromium)")
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the docs-check dependency group has it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Visit] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for name in _pages(site):
                visit = results[name] = Visit()
                source = (site / name).read_text("utf-8")
                visit.expected_diagrams = source.count('<pre class="mermaid">')
                page = browser.new_page()
                page.add_init_script(OPEN_SHADOW_ROOTS)
                _watch(page, visit)
                page.goto(f"{served}/{name}", wait_until="load")
                if visit.expected_diagrams:
                    # On a timeout the blocks still shown as source are reported below.
                    with contextlib.suppress(PlaywrightTimeout):
                        page.wait_for_function(
                            "() => document.querySelectorAll('pre.mermaid').length === 0",
                            timeout=15_000,
                        )
                page.wait_for_load_state("networkidle")
                state = page.evaluate(DIAGRAMS)
                visit.drawn, visit.undrawn, visit.text = (
                    state["drawn"],
                    state["undrawn"],
                    state["text"],
                )
                shot = ARTIFACTS / (name.replace("/", "_").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=True)
                page.close()
        finally:
            browser.close()
    return results


def test_the_site_has_its_pages(site: Path) -> None:
    """The check sees the whole site: the quickstart, the flows and the API reference."""
    pages = _pages(site)
    assert {"index.html", "flows/index.html", "reference/index.html"} <= set(pages)


def test_no_page_asks_another_host(visits: dict[str, Visit]) -> None:
    """Opened offline, no page requests anything from a host other than the site's own."""
    asked = {name: v.foreign_requests for name, v in visits.items() if v.foreign_requests}
    assert {} == asked


def test_no_page_logs_a_console_error(visits: dict[str, Visit]) -> None:
    """No page logs a console error or raises an uncaught exception."""
    errors = {name: v.console_errors for name, v in visits.items() if v.console_errors}
    assert {} == errors


def test_every_diagram_is_drawn(visits: dict[str, Visit]) -> None:
    """Each Mermaid block becomes an SVG with its labels; none is left as source text."""
    assert 3 == visits["flows/index.html"].expected_diagrams
    problems = {}
    for name, visit in visits.items():
        drawn = [svg for svg in visit.drawn if svg and "Syntax error" not in svg]
        if (
            len(drawn) != visit.expected_diagrams
            or visit.undrawn
            or "Syntax error in text" in visit.text
        ):
            problems[name] = {
                "expected": visit.expected_diagrams,
                "drawn": len(drawn),
                "shown as source": [text[:80] for text in visit.undrawn],
            }
    assert {} == problems


def test_the_diagrams_carry_their_labels(visits: dict[str, Visit]) -> None:
    """The drawings are the flows' own: participants and the retry schedule's steps."""
    drawn = " ".join(svg or "" for svg in visits["flows/index.html"].drawn)
    for label in ("CMPay gateway", "POST PageNotify", "no second run", "the answer is lost"):
        assert label in drawn


#: The attributes whose URL a browser fetches by itself, by tag.
LOADING = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
}


class _Loads(html.parser.HTMLParser):
    """Collects the URLs a browser would fetch by itself from an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in LOADING.get(tag, ()):
                self.urls += [part.split()[0] for part in value.split(",") if part.strip()]
            if name == "style":
                self.styles.append(value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")
JS_IMPORT = re.compile(
    r"""(?:\bimport\s*\(?\s*|\bfrom\s*|importScripts\s*\(\s*)['"]((?:https?:)?//[^'"]+)"""
)


def _foreign(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) and parts.hostname not in LOOPBACK


def test_the_files_reference_no_other_host(site: Path) -> None:
    """No built file makes a browser load anything from another host by itself."""
    found: dict[str, list[str]] = {}
    for path in sorted(site.rglob("*")):
        if path.suffix not in {".html", ".css", ".js"}:
            continue
        text = path.read_text("utf-8", errors="replace")
        urls: list[str] = []
        if path.suffix == ".html":
            parser = _Loads()
            parser.feed(text)
            urls += parser.urls
            text = " ".join(parser.styles)
        if path.suffix in {".html", ".css"}:
            urls += [a or b for a, b in CSS_URL.findall(text)]
        if path.suffix == ".js":
            urls += JS_IMPORT.findall(text)
        foreign = [url for url in urls if _foreign(url)]
        if foreign:
            found[path.relative_to(site).as_posix()] = foreign
    assert {} == found
