"""The built book as a reader sees it: every chapter has a page, no internal link is broken, in headless
Chromium the ε slider of chapter 3 changes its figure with no kernel and no request outside the book, and
every page of the table of contents passes five layout checks at a 1280 px wide window (one test per check
per page, the page's name as the test id; each failure lists the offending elements):

1. no table or cell output is wider than the text column (the article's content box): a table or output
   element that sticks out of the column, is wider than it, or sits in a scrolling wrapper that has to
   scroll (or cuts it off) fails;
2. no code cell whose input is on show does nothing but glue(...) (see `glue_only`): plumbing belongs in a
   hidden (hide-input) or removed (remove-input / remove-cell) cell;
3. every content image has a non-empty alt text (not just its file name, which is myst-nb's default) and a
   numbered caption: it sits in a <figure> whose <figcaption> holds Sphinx's "Fig. N" number. Content
   images are the <img> elements of the article that the reader sees or can unfold (a collapsed toggle),
   the shown frame of a widget included; an image that is a link to another site (the "Open in Colab"
   badge) is a link, not content;
4. nothing names a file outside the book: no text (on show or in a toggle) or link mentions PAPER.md,
   TOOLCHAIN.md, STYLE.md, ../shared or the folder holding this checkout, and no link points to a local path that is not in
   _build/html (file: URLs, other local servers, relative paths that climb out of it or name no file);
5. no content image (a static widget frame included) is shown narrower than half the text column.

Needs `make book` first. Skips when _build/html or chromium is missing; FEDMED_REQUIRE_BOOK=1 (CI) fails instead.
A full-page screenshot of every page goes to _build/screenshots/<page>.png (CI uploads the folder).
test_the_page_checks_fire_on_a_synthetic_page keeps the checks honest: it needs chromium, not the book.
"""

import ast
import functools
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from browser import Browser, find_chromium, serve_directory
from test_notebooks import _toc_files

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
SLIDER_PAGE = "notebooks/03_differential_privacy.html"
# The one image the static explorer shows: its Stack hides every frame but the selected one.
VISIBLE_FRAME = """(() => {
  const frames = document.querySelectorAll('.jupyter-widgets img');  // the explorer's frames (HTML figures)
  const shown = [...frames].filter(i => i.getBoundingClientRect().width > 0);
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
WIDTH = 1280  # the window the page checks judge at (CSS px)
PROBE = (ROOT / "tests" / "book_probe.js").read_text()
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
    with serve_directory(book) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    """One browser for the whole module (the book's pages and the synthetic page)."""
    executable = find_chromium()
    _need(executable, "chromium is not installed (apt-get install chromium)")
    browser = Browser(executable, width=WIDTH)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser(site, chromium):
    SHOTS.mkdir(parents=True, exist_ok=True)
    return chromium


def test_intro_page_renders_with_its_table_of_contents(browser, site):
    browser.goto(f"{site}/index.html")  # redirects to the root page, book/intro.html
    browser.wait_until("location.pathname.endsWith('/book/intro.html') && document.readyState === 'complete'")
    title = browser.evaluate("document.querySelector('article h1, main h1').textContent")
    chapters = browser.evaluate("document.querySelectorAll('nav.bd-links a.reference.internal').length")
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


# ---- The page checks: every page of the table of contents, five checks, one test each. -----------------------

def _toc_pages():
    """(name, path) of every page of _toc.yml, the root first, in the book's order: the name is the test id."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = list(dict.fromkeys([toc["root"], *_toc_files(toc)]))
    names = [PurePosixPath(e).name for e in entries]
    if len(set(names)) < len(names):  # two pages of one name in different folders: name them by their path
        names = [e.replace("/", "__") for e in entries]
    return list(zip(names, entries))


PAGES = _toc_pages()
PAGE_IDS = [name for name, _ in PAGES]
TOLERANCE = 1.0  # px: sub-pixel rounding of the layout, not an overflow
# Files readers do not have, and this machine's own folders: the folder that holds the checkout (where the
# shared data and notes live) is named from the checkout itself, so no machine path is written down here.
MACHINE_PATH = ROOT.parent.as_posix().rstrip("/") + "/"
MACHINE_FOLDER = re.escape(MACHINE_PATH)
FORBIDDEN = re.compile(rf"PAPER\.md|TOOLCHAIN\.md|STYLE\.md|\.\./shared|{MACHINE_FOLDER}")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}
# The page has settled when its widgets are drawn, its images decoded, its fonts and maths typeset.
SETTLED = """(async () => {
  if (document.readyState !== 'complete') return false;
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  if (views.some(v => !v.parentElement.querySelector('.jupyter-widgets'))) return false;
  if ([...document.images].some(i => !i.complete)) return false;
  await document.fonts.ready;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return true;
})()"""


def render(browser, url, timeout=60.0):
    """Open url, wait until it has settled (widgets drawn), and return book_probe.js's measurements."""
    browser.goto(url)
    try:
        browser.wait_until(SETTLED, timeout=timeout)
    except TimeoutError:
        pass  # measured as it is: an undrawn widget is the slider test's business
    return browser.evaluate(f"({PROBE})({json.dumps(FORBIDDEN.pattern)})")


@pytest.fixture(scope="module")
def rendered(browser, site):
    """page entry -> its measurements; each page is opened (and screenshotted, whole) once per module."""
    cache = {}

    def get(name, entry):
        if entry not in cache:
            cache[entry] = render(browser, f"{site}/{entry}.html")
            browser.full_page_screenshot(SHOTS / f"{name}.png")
        return cache[entry]

    return get


def _place(where):
    bits = [f"code cell {where['cell']}" if where.get("cell") else None,
            f"§ “{where['heading']}” (#{where['section']})" if where.get("heading") else None,
            where.get("element")]
    return ", ".join(b for b in bits if b)


def _report(page, what, offenders):
    return f"{page}: {len(offenders)} {what}:\n" + "\n".join(f"  - {o}" for o in offenders)


def too_wide(probe):
    """Check 1: tables and cell-output elements that stick out of the text column, are wider than it, or
    scroll / are cut off (their own overflow, or an ancestor's that has to scroll). One line per table, and
    per code cell the widest offending output element, in the page's order."""
    column = probe["column"]
    found, widest = [], {}
    for m in probe["wide"]:
        why = []
        if m["width"] > column["width"] + TOLERANCE:
            why.append(f"{m['width']:.0f} px wide vs column {column['width']:.0f} px")
        out = max(m["right"] - column["right"], column["left"] - m["left"])
        if out > TOLERANCE:
            why.append(f"sticks out {out:.0f} px past the column")
        if m["overflow"] != "visible" and m["scroll"] > m["client"] + TOLERANCE:
            why.append(f"its content is {m['scroll']} px, it shows {m['client']} px (overflow-x {m['overflow']})")
        if m["clipped_by"]:
            c = m["clipped_by"]
            why.append(f"inside {c['element']} that has to scroll or cuts it: shows {c['shows']} of {c['content']} px"
                       f" (overflow-x {c['overflow']})")
        if not why:
            continue
        if not why[0].startswith(f"{m['width']:.0f} px wide"):
            why.insert(0, f"{m['width']:.0f} px wide vs column {column['width']:.0f} px")
        line = (m["top"], f"{m['kind']} at {_place(m['where'])}: “{m['text']}”: " + "; ".join(why))
        if m["kind"] == "table":
            found.append(line)
        elif m["width"] > widest.get(m["where"]["cell"], (0, None))[0]:
            widest[m["where"]["cell"]] = (m["width"], line)  # one line per cell output: its widest element
    return [text for _, text in sorted(found + [line for _, line in widest.values()])]


def _is_glue_call(node):
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and (getattr(node.value.func, "id", None) == "glue" or getattr(node.value.func, "attr", None) == "glue"))


def _glue_statements(body):
    """How many glue calls the statements make, or None when any statement does something else."""
    calls = 0
    for node in body:
        if _is_glue_call(node):
            calls += 1
        elif isinstance(node, ast.ImportFrom) and all(a.name == "glue" for a in node.names):
            continue  # `from myst_nb import glue`: part of the plumbing
        elif isinstance(node, ast.Pass):
            continue
        elif isinstance(node, (ast.For, ast.If)):  # a loop or branch that only glues is plumbing too
            inner = [_glue_statements(node.body), _glue_statements(node.orelse)]
            if None in inner:
                return None
            calls += sum(inner)
        else:
            return None
    return calls


def glue_only(code):
    """True when a cell's code does nothing but glue(...) (myst_nb.glue, called by name or as x.glue):
    comments and blank lines ignored; `from myst_nb import glue`, `pass`, and for/if statements whose bodies
    only glue count as plumbing; at least one glue call. Magics, shell escapes and unparsable code: False."""
    if any(line.lstrip().startswith(("%", "!")) for line in code.splitlines()):
        return False
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return bool(_glue_statements(tree.body))


def visible_glue_cells(probe):
    """Check 2: code cells on show (input not folded in a toggle, not hidden or removed) that only glue."""
    return [f"{_place(c['where'])}: “{' '.join(c['code'].split())[:80]}”" for c in probe["code"]
            if c["visible"] and glue_only(c["code"])]


def _content_images(probe):
    return [i for i in probe["images"] if not i["badge"] and (i["shown"] or i["folded"])]


def _name_only(alt, src):
    alt = alt.strip()
    return not alt or alt == src or alt == PurePosixPath(urlsplit(src).path).name or src.endswith(alt)


def uncaptioned_images(probe):
    """Check 3: content images without a real alt text or without a numbered caption (<figure>/<figcaption>
    with Sphinx's caption number; a widget's frames need the caption but cannot carry the number)."""
    found = []
    for i in _content_images(probe):
        why = []
        if i["alt"] is None or _name_only(i["alt"], i["src"]):
            why.append("no alt text" if not (i["alt"] or "").strip()
                       else f"alt is only its file name ({i['alt'][:40]})")
        if not i["figure"] or not i["caption"]:
            why.append("no caption (not in a <figure> with a <figcaption>)")
        elif not i["numbered"] and not i["widget"]:
            # A widget's frames cannot be Sphinx figures (myst-nb numbers image outputs only): for the ε
            # explorer an alt text and a caption inside the widget are required, a number is not.
            why.append(f"caption not numbered (“{i['caption']}”)")
        if why:
            kind = "widget frame" if i["widget"] else "image"
            src = i["src"] if not i["src"].startswith(("data:", "blob:")) else i["src"][:30] + "…"
            found.append(f"{kind} {src} at {_place(i['where'])}, {i['width']:.0f}×{i['height']:.0f} px: "
                         + "; ".join(why))
    return found


def narrow_figures(probe):
    """Check 5: content images shown narrower than half the text column."""
    half = probe["column"]["width"] / 2
    return [f"{'widget frame' if i['widget'] else 'image'} {i['src'][:70]} at {_place(i['where'])}: "
            f"{i['width']:.0f} px wide < half the column ({half:.0f} px of {probe['column']['width']:.0f})"
            for i in _content_images(probe) if i["shown"] and i["width"] + TOLERANCE < half]


def outside_references(probe, root: Path):
    """Check 4: text or links naming PAPER.md, TOOLCHAIN.md, STYLE.md, ../shared or the checkout's parent folder;
    links to local paths
    that are not part of the built book at root (file: URLs, other local servers, paths out of root or absent)."""
    found = [f"text at {_place(m['where'])} names {m['match']}: “…{m['text']}…”" for m in probe["mentions"]]
    here = urlsplit(probe["url"])
    page = root / unquote(here.path).lstrip("/")
    for link in probe["links"]:
        raw, resolved = link["raw"] or "", link["resolved"] or ""
        target = urlsplit(resolved)
        what = f"link at {_place(link['where'])} to {raw[:100]}" + (f" (“{link['text']}”)" if link["text"] else "")
        if FORBIDDEN.search(unquote(raw)) or FORBIDDEN.search(unquote(resolved)):
            found.append(f"{what}: names a file outside the book")
        elif target.scheme == "file":
            found.append(f"{what}: a file: URL")
        elif target.scheme in ("http", "https") and target.hostname in LOCAL_HOSTS:
            if target.netloc != here.netloc:
                found.append(f"{what}: a local server, not the book")
                continue
            path = unquote(urlsplit(raw).path) if not urlsplit(raw).scheme else unquote(target.path)
            if not path:
                continue  # "#anchor" or "?query": this page
            file = (root / path.lstrip("/")) if path.startswith("/") or urlsplit(raw).scheme else page.parent / path
            file = Path(os.path.normpath(file))
            if file != root and root not in file.parents:
                found.append(f"{what}: climbs out of the built book")
            elif not (file.is_file() or (file / "index.html").is_file()):
                found.append(f"{what}: no such file in the built book")
    return found


@pytest.mark.parametrize("name, entry", PAGES, ids=PAGE_IDS)
def test_no_table_or_output_is_wider_than_the_text_column(rendered, name, entry):
    offenders = too_wide(rendered(name, entry))
    assert not offenders, _report(name, "tables or cell outputs wider than the text column", offenders)


@pytest.mark.parametrize("name, entry", PAGES, ids=PAGE_IDS)
def test_no_visible_code_cell_only_glues(rendered, name, entry):
    offenders = visible_glue_cells(rendered(name, entry))
    assert not offenders, _report(name, "code cells on show that only glue (hide or remove their input)", offenders)


@pytest.mark.parametrize("name, entry", PAGES, ids=PAGE_IDS)
def test_every_image_has_alt_text_and_a_numbered_caption(rendered, name, entry):
    offenders = uncaptioned_images(rendered(name, entry))
    assert not offenders, _report(name, "images without alt text or a numbered caption", offenders)


@pytest.mark.parametrize("name, entry", PAGES, ids=PAGE_IDS)
def test_nothing_refers_to_files_outside_the_book(rendered, book, name, entry):
    offenders = outside_references(rendered(name, entry), book.resolve())
    assert not offenders, _report(name, "references to files outside the book", offenders)


@pytest.mark.parametrize("name, entry", PAGES, ids=PAGE_IDS)
def test_no_figure_is_narrower_than_half_the_text_column(rendered, name, entry):
    offenders = narrow_figures(rendered(name, entry))
    assert not offenders, _report(name, "figures narrower than half the text column", offenders)


# ---- The checks' own test: a hand-made page with one offender (and one innocent) of each kind. ---------------

SYNTHETIC = """<!doctype html><html><head><meta charset="utf-8"><style>
body {margin: 0; font: 16px sans-serif} main {display: flex}
article.bd-article {width: 752px; padding: 0 32px; margin-left: 256px; box-sizing: border-box}
.output.text_html, pre {overflow-x: auto} td {white-space: nowrap}
</style></head><body><main><article class="bd-article"><section id="synthetic"><h1>Synthetic</h1>
<div class="cell"><div class="cell_output"><div class="output text_html">
  <table id="fits"><tr><td>a table that fits</td></tr></table></div></div></div>
<div class="cell"><div class="cell_output"><div class="output text_html">
  <table id="scrolled" style="width: 900px"><tr><td>cut off mid-word by its scrolling wrapper</td></tr></table>
</div></div></div>
<table id="sticks-out" style="width: 800px; margin-left: 20px"><tr><td>a markdown table sticking out</td></tr></table>
<div class="cell"><div class="cell_output"><pre id="long-line">LONG</pre></div></div>
<div class="cell"><div class="cell_output"><pre id="short-line">a short line</pre></div></div>
<div class="cell"><div class="cell_input"><pre>glue("shown_a", 1)  # a comment

glue("shown_b", 2);</pre></div></div>
<div class="cell"><div class="cell_input"><pre>for k in range(3):
    glue(f"loop_{k}", k)</pre></div></div>
<div class="cell tag_hide-input"><details class="hide above-input"><summary>Show code cell source</summary>
  <div class="cell_input"><pre>glue("hidden", 1)</pre></div></details></div>
<div class="cell"><div class="cell_input"><pre>x = 2
glue("computed", x)</pre></div></div>
<div class="cell"><div class="cell_output"><div class="output text_plain">
  <pre>glue("an output, not code", 1)</pre></div></div></div>
<p><a href="https://colab.research.google.com/x"><img alt="Open In Colab" src="badge.svg" style="width: 100px"></a></p>
<div class="cell"><div class="cell_output"><img src="plot.svg" alt="plot.svg" style="width: 600px"></div></div>
<figure id="good"><img src="plot.svg" alt="A chart of x" style="width: 600px">
  <figcaption><p><span class="caption-number">Fig. 1 </span>A chart.</p></figcaption></figure>
<figure id="narrow"><img src="small.svg" alt="A small chart" style="width: 200px">
  <figcaption><p><span class="caption-number">Fig. 2 </span>Small.</p></figcaption></figure>
<figure id="unnumbered"><img src="plot.svg" alt="A chart" style="width: 600px">
  <figcaption>No number</figcaption></figure>
<p>The exact figures are in PAPER.md, and the data sits in ../shared/data.</p>
<div class="cell"><div class="cell_input"><pre><span class="n">open</span>(<span class="s">"@@FOLDER_HEAD@@</span><span>@@FOLDER_TAIL@@x"</span>)</pre>
</div></div>
<p><a href="other.html#top">fine</a> <a href="../../etc/passwd">climbs out</a>
  <a href="file:///tmp/x.txt">a file URL</a>
  <a href="missing.html">absent</a> <a href="http://localhost:9/x">another server</a>
  <a href="https://github.com/fedmedlib/fedmedlib/blob/main/TOOLCHAIN.md">on GitHub</a></p>
</section></article></main></body></html>""".replace("LONG", "x" * 200)
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="100"><rect width="{0}" height="100"/></svg>'


def test_the_page_checks_fire_on_a_synthetic_page(chromium, tmp_path):
    half = len(MACHINE_PATH) // 2  # the machine path split over two elements, as syntax highlighting does
    page = SYNTHETIC.replace("@@FOLDER_HEAD@@", MACHINE_PATH[:half]).replace("@@FOLDER_TAIL@@", MACHINE_PATH[half:])
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    (tmp_path / "other.html").write_text('<p id="top">other</p>')
    for name, width in (("plot.svg", 600), ("small.svg", 200), ("badge.svg", 100)):
        (tmp_path / name).write_text(SVG.format(width))
    with serve_directory(tmp_path) as url:
        probe = render(chromium, f"{url}/page.html", timeout=10)
        assert probe["column"]["width"] == 688
        wide = too_wide(probe)
        assert [w.split(": ")[0] for w in wide] == [
            "table at code cell 2, § “Synthetic” (#synthetic), table#scrolled",
            "table at § “Synthetic” (#synthetic), table#sticks-out",
            "cell output at code cell 3, § “Synthetic” (#synthetic), pre#long-line"], wide
        assert "shows 688 of 900 px" in wide[0] and "sticks out" in wide[1] and "it shows 688 px" in wide[2]

        glue = visible_glue_cells(probe)
        assert len(glue) == 2 and "shown_a" in glue[0] and "loop_" in glue[1], glue

        images = uncaptioned_images(probe)
        assert len(images) == 2, images
        assert "plot.svg" in images[0] and "alt is only its file name" in images[0] and "no caption" in images[0]
        assert "caption not numbered" in images[1] and "alt" not in images[1]

        narrow = narrow_figures(probe)
        assert len(narrow) == 1 and "small.svg" in narrow[0] and "200 px wide" in narrow[0], narrow

        outside = outside_references(probe, tmp_path.resolve())
        expected = ["names PAPER.md", "names ../shared", f"code cell 11, § “Synthetic” (#synthetic), pre names {MACHINE_PATH}",
                    "etc/passwd (“climbs out”): climbs out of the built book",
                    "x.txt (“a file URL”): a file: URL",
                    "missing.html (“absent”): no such file in the built book",
                    "localhost:9/x (“another server”): a local server",
                    "TOOLCHAIN.md (“on GitHub”): names a file"]
        assert len(outside) == len(expected) and all(e in o for e, o in zip(expected, outside)), "\n".join(outside)


@pytest.mark.parametrize("code, only_glue", [
    ('glue("a", 1)', True), ('# c\n\nglue("a", 1);  # d\nglue("b", 2)', True), ("myst_nb.glue('a', 1)", True),
    ('from myst_nb import glue\nglue("a", 1)', True), ('for k in d:\n    glue(k, d[k])', True),
    ("", False), ("# only a comment", False), ('x = 1\nglue("x", x)', False), ('glue("a", f(1))\nprint(2)', False),
    ('%time glue("a", 1)', False), ("glue(", False), ("from myst_nb import glue", False), ("import numpy", False),
])
def test_glue_only(code, only_glue):
    assert glue_only(code) is only_glue
