"""The glossary (book/glossary.md) and its links, read from the book's sources (no build needed): every {term} role
names a defined term, every term is linked from some chapter, and so is each term issue 19 asked for."""

import json
import re
from pathlib import Path

import yaml

from test_notebooks import _toc_files

ROOT = Path(__file__).resolve().parent.parent
GLOSSARY = ROOT / "book" / "glossary.md"
# MyST's term role: {term}`text` or {term}`text <target>`; Sphinx matches targets case-insensitively.
TERM_ROLE = re.compile(r"\{term\}`([^`]*)`")
# The terms issue 19 listed, as this glossary names them.
ISSUE_TERMS = ("epsilon (ε)", "delta (δ)", "sensitivity", "clip norm", "noise multiplier", "sampling rate",
               "Rényi DP (RDP)", "PRV accountant", "record-level DP", "client-level DP", "SecAgg+",
               "SecAgg+ threshold", "dropout", "FedAvg", "label skew", "quantity skew")


def _key(name: str) -> str:
    return " ".join(name.split()).lower()


def _glossary_terms() -> set[str]:
    """The terms of the glossary directive: its unindented lines (indented ones are definitions)."""
    body = GLOSSARY.read_text(encoding="utf-8").split("```{glossary}\n", 1)[1].split("\n```", 1)[0]
    return {_key(line) for line in body.splitlines() if line.strip() and not line[0].isspace()
            and not line.startswith(":")}


def _pages() -> dict[str, str]:
    """Every page of the table of contents: its markdown text (a notebook's markdown cells)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = {}
    for entry in [toc["root"], *_toc_files(toc)]:
        md, nb = ROOT / f"{entry}.md", ROOT / f"{entry}.ipynb"
        if md.exists():
            pages[entry] = md.read_text(encoding="utf-8")
        else:
            cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
            pages[entry] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return pages


def _targets(text: str) -> list[str]:
    out = []
    for content in TERM_ROLE.findall(text):
        explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, flags=re.S)
        out.append(_key(explicit.group(2) if explicit else content))
    return out


def test_the_glossary_is_in_the_back_matter_before_the_references():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = list(_toc_files(toc))
    assert "book/glossary" in files and files.index("book/glossary") < files.index("book/references")


def test_every_term_role_names_a_glossary_term():
    terms = _glossary_terms()
    unknown = {page: sorted(set(_targets(text)) - terms) for page, text in _pages().items()}
    unknown = {page: names for page, names in unknown.items() if names}
    assert not unknown, f"{{term}} roles with no glossary entry: {unknown}"


def test_every_glossary_term_is_linked_from_a_chapter():
    chapters = {page: text for page, text in _pages().items() if page != "book/glossary"}
    used = {target for text in chapters.values() for target in _targets(text)}
    assert not _glossary_terms() - used, f"glossary terms no chapter links: {sorted(_glossary_terms() - used)}"


def test_each_term_the_issue_listed_is_defined_and_linked_from_a_chapter():
    chapters = {page: text for page, text in _pages().items() if page != "book/glossary"}
    linked = {target for page, text in chapters.items() if page.startswith("notebooks/") for target in _targets(text)}
    for term in ISSUE_TERMS:
        assert _key(term) in _glossary_terms(), f"{term!r} is not in the glossary"
        assert _key(term) in linked, f"no chapter links {term!r}"


def test_term_roles_stay_out_of_headings():
    for page, text in _pages().items():
        for line in text.splitlines():
            assert not (line.startswith("#") and "{term}" in line), f"{page}: a term link in a heading: {line!r}"
