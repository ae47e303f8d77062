"""The built book as a reader sees it: every chapter has a page, no internal link is broken, and in headless
Chromium the ε slider of chapter 3 changes its figure with no kernel and no request outside the book.

Needs `make book` first. Skips when _build/html or chromium is missing; FEDMED_REQUIRE_BOOK=1 (CI) fails instead.
Screenshots go to _build/screenshots/.
"""

import functools
import os
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from browser import Browser, find_chromium
from test_notebooks import _toc_files

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
SLIDER_PAGE = "notebooks/03_differential_privacy.html"
# The one image the static explorer shows: its Stack hides every frame but the selected one.
VISIBLE_FRAME = """(() => {
  const shown = [...document.querySelectorAll('img.widget-image')].filter(i => i.getBoundingClientRect().width > 0);
  if (shown.length !== 1) return null;
  const r = shown[0].getBoundingClientRect();
  return {src: shown[0].src, x: r.x, y: r.y + scrollY, width: r.width, height: r.height, loaded: shown[0].complete};
})()"""
HANDLE = """(() => {
  const h = document.querySelector('.widget-selection-slider .noUi-handle, .widget-hslider .noUi-handle');
  if (!h) return null;
  h.scrollIntoView({block: 'center'});
  const r = h.getBoundingClientRect(), base = h.closest('.noUi-target').getBoundingClientRect();
  return {x: r.x + r.width / 2, y: r.y + r.height / 2, top: r.y + scrollY, left: base.x, right: base.x + base.width};
})()"""
# The Colab badge is an image link to Colab itself (it must render on GitHub and Colab too); offline it shows
# its alt text. Everything else — scripts, styles, fonts, figures — must come from the book.
ALLOWED_OUTSIDE = ("https://colab.research.google.com/assets/colab-badge.svg",)
READOUT = "document.querySelector('.widget-selection-slider .widget-readout, .widget-readout').textContent.trim()"


def _need(condition, reason):
    if not condition:
        if os.environ.get("FEDMED_REQUIRE_BOOK") == "1":
            pytest.fail(f"FEDMED_REQUIRE_BOOK=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def book():
    _need((HTML / "index.html").is_file(), f"the book is not built ({HTML} missing): run `make book` first")
    return HTML


class _Page(HTMLParser):
    """The links (href, src) and element ids of one HTML page."""

    def __init__(self, path: Path):
        super().__init__()
        self.links, self.ids = [], set()
        self.feed(path.read_text(encoding="utf-8", errors="replace"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(attrs[key])


def test_every_chapter_in_the_table_of_contents_has_a_page(book):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = {toc["root"], *_toc_files(toc)}
    missing = [e for e in sorted(entries) if not (book / f"{e}.html").is_file()]
    assert not missing, f"chapters in _toc.yml without a built page: {missing}"


def test_no_internal_link_is_broken(book):
    pages = [p for p in book.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.relative_to(book).parts)]
    parsed = functools.lru_cache(maxsize=None)(_Page)
    broken = []
    for page in pages:
        for url in parsed(page).links:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("#") and len(url) == 1:
                continue  # external (checked by nobody here: offline) or a bare "#"
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(book)} -> {url} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in parsed(target).ids:
                broken.append(f"{page.relative_to(book)} -> {url} (no such anchor)")
    assert pages and not broken, "broken internal links:\n" + "\n".join(broken[:30])


@pytest.fixture(scope="module")
def site(book):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(site):
    executable = find_chromium()
    _need(executable, "chromium is not installed (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    chromium = Browser(executable)
    yield chromium
    chromium.close()


def test_intro_page_renders_with_its_table_of_contents(browser, site):
    browser.goto(f"{site}/index.html")  # redirects to the root page, book/intro.html
    browser.wait_until("location.pathname.endsWith('/book/intro.html') && document.readyState === 'complete'")
    title = browser.evaluate("document.querySelector('article h1, main h1').textContent")
    chapters = browser.evaluate("document.querySelectorAll('nav.bd-links a.reference.internal').length")
    browser.screenshot(SHOTS / "intro.png")
    assert "reproduced honestly" in title and chapters >= 9


def test_static_epsilon_slider_changes_the_figure_without_a_kernel(browser, site):
    browser.goto(f"{site}/{SLIDER_PAGE}")
    handle = browser.wait_until(HANDLE, timeout=60)  # require.js + embed-amd.js render the saved widget state
    before = browser.wait_until(f"(() => {{ const f = {VISIBLE_FRAME}; return f && f.loaded && f; }})()")
    readout_before = browser.evaluate(READOUT)
    # Page coordinates (the frame's y includes the scroll; the handle's x, y are for the mouse, in the viewport).
    clip = dict(x=0, y=handle["top"] - 30, width=1280, height=before["y"] + before["height"] - handle["top"] + 40)
    pixels_before = browser.screenshot(SHOTS / "slider_before.png", clip=clip)
    # Drag the handle to the slider's left end (the smallest ε), as a reader would.
    browser.mouse("mousePressed", handle["x"], handle["y"])
    for x in range(int(handle["x"]), int(handle["left"]) - 20, -20):
        browser.mouse("mouseMoved", x, handle["y"])
    browser.mouse("mouseReleased", handle["left"] - 20, handle["y"])
    after = browser.wait_until(f"(() => {{ const f = {VISIBLE_FRAME}; return f && f.loaded && f.src !== "
                               f"{before['src']!r} && f; }})()")
    readout_after = browser.evaluate(READOUT)
    pixels_after = browser.screenshot(SHOTS / "slider_after.png", clip=clip)
    assert (readout_before, readout_after) == ("6", "0.5")
    assert after["src"] != before["src"] and pixels_after != pixels_before
    outside = [u for u in browser.requests() if not u.startswith((site, "data:", "blob:", *ALLOWED_OUTSIDE))]
    assert not outside, f"the page fetched from outside the book (a CDN?): {outside[:5]}"
    missing = [r for r in browser.failed_responses() if not r[1].endswith("/favicon.ico")]  # the browser asks itself
    assert not missing, f"files the page needs but the book lacks: {missing[:5]}"
