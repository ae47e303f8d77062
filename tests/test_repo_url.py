import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from fedmedlib import REPO_URL
from fedmedlib.book.colab import BOOTSTRAP

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
OWNER_NAME = REPO_URL.removeprefix("https://github.com/")


def test_repo_url_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL)


def test_pyproject_and_book_config_name_the_same_repository():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Repository"] == REPO_URL
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == REPO_URL  # the book's repository and Colab launch buttons


def test_readme_links_only_to_this_repository():
    readme = (ROOT / "README.md").read_text()
    assert f"colab.research.google.com/github/{OWNER_NAME}/blob/main/notebooks/" in readme
    for owner_name in re.findall(r"(?:github\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)", readme):
        assert owner_name == OWNER_NAME


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_opens_this_chapter_of_this_repository(path):
    first = "".join(json.loads(path.read_text())["cells"][0]["source"])
    badges = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", first)
    assert badges == [f"https://colab.research.google.com/github/{OWNER_NAME}/blob/main/notebooks/{path.name}"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_starts_with_the_install_bootstrap(path):
    setup = next("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert setup.startswith(BOOTSTRAP), f"{path.name}: its setup cell must start with fedmedlib.book.BOOTSTRAP"
    assert f"git+{REPO_URL}" in BOOTSTRAP
