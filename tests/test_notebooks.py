import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: clear outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_import_the_library_and_open_with_objectives(path):
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and "Learning objectives" in first and "colab-badge" in first
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert any("from fedmedlib" in cell for cell in code)
    # Chapters import fedmedlib and define no code, except a teaching toy that says so and is then
    # checked against the library.
    for i, cell in enumerate(code):
        if "def " in cell:
            assert cell.startswith("# TEACHING TOY"), f"{path.name}: code cell {i} defines code"
            assert any("assert" in later for later in code[i + 1:i + 3]), f"{path.name}: toy {i} is never checked"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_first_cell_installs_on_colab_and_picks_one_profile(path):
    nb = json.loads(path.read_text())
    setup = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "colab_install()" in setup and "profile = get_profile(" in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_close_with_a_summary_and_two_or_three_exercises(path):
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert re.search(r"^## Summary$", text, flags=re.M), f"{path.name}: no '## Summary' section"
    _, _, exercises = text.partition("\n## Exercises\n")
    assert 2 <= len(re.findall(r"^\d+\. ", exercises, flags=re.M)) <= 3, f"{path.name}: 2-3 exercises"


def _toc_files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_every_notebook_is_in_the_table_of_contents_and_every_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = set(_toc_files(toc)) | {toc["root"]}
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in files
    for entry in files:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), entry


def test_readme_opens_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make book" in readme.split("\n## ")[0] and "make test" in readme.split("\n## ")[0]
    assert "make test" in ci
