"""Copy fedmedlib.REPO_URL (the one place the repository's address is written) into every file that repeats it:
the chapters' Colab badges and install cells, pyproject.toml's [project.urls], _config.yml and the README.

After changing REPO_URL in fedmedlib/__init__.py, run once with the old address:
    python scripts/set_repo_url.py --from https://github.com/fedmedlib/fedmedlib
tests/test_repo_url.py then checks that they all agree.
"""

import argparse
import json
from pathlib import Path

from fedmedlib import REPO_URL

ROOT = Path(__file__).resolve().parent.parent
FILES = ["pyproject.toml", "_config.yml", "README.md", "book/intro.md"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="old", required=True, help="the address the files hold now")
    old = parser.parse_args(argv).old.rstrip("/")
    pairs = [(old, REPO_URL), (old.replace("https://github.com/", "colab.research.google.com/github/"),
                               REPO_URL.replace("https://github.com/", "colab.research.google.com/github/"))]
    for name in FILES:
        path = ROOT / name
        if path.is_file():
            text = path.read_text()
            for a, b in pairs:
                text = text.replace(a, b)
            path.write_text(text)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        changed = False
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            for a, b in pairs:
                source = source.replace(a, b)
            if source != "".join(cell["source"]):  # cells without the address keep their exact layout
                cell["source"], changed = source.splitlines(keepends=True), True
        if changed:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    print(f"{old} -> {REPO_URL} in {len(FILES)} files and the chapters; check with pytest tests/test_repo_url.py")


if __name__ == "__main__":
    main()
