"""The Colab path: every chapter, run top to bottom the way a reader runs it on Colab, finds its results.

As on Colab: a fresh Python environment that already has torch (and the rest of what Colab preinstalls), with no
fedmedlib in it; `google.colab` imported when the kernel starts; each chapter's setup cell installs fedmedlib
itself (from the wheel built here, through FEDMED_INSTALL_SOURCE, instead of the Git URL); the chapter runs from a
scratch folder outside the repository; the data comes from medmnist's own folder (~/.medmnist, seeded from the
verified copy so that nothing is downloaded), not FEDMED_DATA. It then checks that every committed result a
chapter asks for is found, in the copy packaged with the library.

The fresh environment is a venv whose base layer is this test's own environment minus fedmedlib (a .pth names a
folder of links to its site-packages): Colab's preinstalled packages play that part, so the pinned torch is reused
and nothing is downloaded — pip would otherwise pull a second torch through medmnist's torchvision.
"""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import skip_unless_required

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MISSING_WORDS = ("not yet run", "No cached", "FileNotFoundError", "no cached result")


def _fresh_env(where: Path) -> Path:
    """A venv with this environment's packages, except fedmedlib, as its preinstalled base layer; its python."""
    made = subprocess.run([sys.executable, "-m", "venv", str(where)], capture_output=True, text=True)
    if made.returncode:
        skip_unless_required(f"`python -m venv` cannot make a fresh environment here: {made.stderr[-300:]}")
    python = where / "bin" / "python"
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip())
    base = where / "colab-preinstalled"
    base.mkdir()
    for packages in map(Path, site.getsitepackages()):
        for entry in packages.iterdir():
            name = entry.name.lower()
            if name.startswith(("fedmedlib", "__editable__", "pip", "_distutils_hack")) or entry.suffix == ".pth":
                continue
            if not (base / entry.name).exists():
                (base / entry.name).symlink_to(entry)
    (own / "colab-preinstalled.pth").write_text(f"{base}\n")
    return python


def _kernel(scratch: Path, python: Path, env: dict) -> None:
    """The kernel Colab would run: this venv's python, with google.colab imported at start-up."""
    stub = scratch / "colab-stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""Stands in for Colab\'s google.colab in tests/test_colab_path.py."""\n')
    spec = scratch / "jupyter" / "kernels" / "colab"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(dict(
        argv=[str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], display_name="colab",
        language="python", env={"PYTHONPATH": str(scratch / "colab-stub")})))
    startup = Path(env["HOME"]) / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # Colab's kernel has it imported\n")


@pytest.fixture(scope="module")
def colab_run(fedmedlib_wheel, real_data_root, tmp_path_factory, pytestconfig):
    scratch = tmp_path_factory.mktemp("colab")
    assert not scratch.resolve().is_relative_to(ROOT.resolve()), "the chapters must run outside the repository"
    python = _fresh_env(scratch / "venv")
    probe = subprocess.run([str(python), "-c", "import torch, fedmedlib"], capture_output=True, text=True, cwd=scratch,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert "No module named 'fedmedlib'" in probe.stderr, f"the fresh environment must lack fedmedlib: {probe}"
    home = scratch / "home"
    (home / ".medmnist").mkdir(parents=True)
    shutil.copy(real_data_root / "bloodmnist.npz", home / ".medmnist" / "bloodmnist.npz")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FEDMED_DATA", "FEDMED_RESULTS", "FEDMED_PROFILE", "PYTHONPATH", "JUPYTER_PATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), JUPYTER_PATH=str(scratch / "jupyter"), FEDMED_INSTALL_SOURCE=str(fedmedlib_wheel),
               FEDMED_RESULTS_LOG=str(scratch / "lookups.jsonl"), FEDMED_PROGRESS="0", OMP_NUM_THREADS="1",
               MPLBACKEND="agg", PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}")
    _kernel(scratch, python, env)
    workdir = scratch / "content"  # Colab's working folder
    workdir.mkdir()
    out = scratch / "chapters.json"
    done = subprocess.run([str(python), str(ROOT / "tests" / "colab_driver.py"), str(out), *map(str, NOTEBOOKS)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    chapters = json.loads(out.read_text())
    pytestconfig.colab_path_summary = _summary(chapters, fedmedlib_wheel)  # shown at the end of the run
    return {c["chapter"]: c for c in chapters}


def _committed() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout
    return {name.removeprefix("results/") for name in listed.split()}


def _tally(chapter: dict) -> dict:
    """Per chapter: its result-backed cells (those that looked a result up), the committed files they found, the
    committed files they did not find (the bug this test is for), and the files not committed at all (cells still
    running, e.g. the 'as it should be done' column), which the chapter shows as missing."""
    committed = _committed()
    kinds = {}
    for cell in chapter["cells"]:
        for x in cell["lookups"]:
            kind = ("glob" if "*" in x["file"] else "found" if x["found"] else
                    "lost" if x["file"] in committed else "pending")
            kinds.setdefault(cell["index"], []).append((kind, x))
    backed = {i: k for i, k in kinds.items() if any(kind != "glob" or x.get("count") for kind, x in k)}
    files = lambda kind: sorted({x["file"] for k in backed.values() for kd, x in k if kd == kind})
    return dict(backed=len(backed), complete=sum(all(kd in ("found", "glob") for kd, _ in k) for k in backed.values()),
                with_pending=sum(any(kd == "pending" for kd, _ in k) for k in backed.values()),
                found=files("found"), lost=[(i, x["file"]) for i, k in backed.items() for kd, x in k if kd == "lost"],
                pending=files("pending"),
                says_missing=sum(any(w in c["text"] for w in MISSING_WORDS) for c in chapter["cells"]))


def _summary(chapters: list[dict], wheel: Path) -> str:
    lines = [f"Colab path: wheel {wheel.name} {wheel.stat().st_size / 1e3:.0f} kB; "
             f"{sum(c['seconds'] for c in chapters):.0f} s for {len(chapters)} chapters"]
    for c in chapters:
        t = _tally(c)
        lines.append(f"  {c['chapter']}: {c['seconds']:.0f} s; {t['backed']} result-backed cells: {t['complete']} "
                     f"found all they asked for ({len(t['found'])} committed files), {t['with_pending']} also asked "
                     f"for {len(t['pending'])} results not committed yet; {len(t['lost'])} committed results not "
                     f"found; {t['says_missing']} cells say a result is missing")
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    (ROOT / ".pytest_cache" / "colab_path_summary.txt").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_runs_top_to_bottom_from_the_installed_wheel(colab_run, path):
    chapter = colab_run[path.name]
    assert chapter["error"] is None, chapter["error"]
    report = chapter["report"]
    assert report["colab"] and "/site-packages/fedmedlib/" in report["fedmedlib"]
    assert report["results_dir"] == report["packaged"] and "/site-packages/fedmedlib/_results" in report["packaged"]
    assert report["data"].endswith("/home/.medmnist/bloodmnist.npz")  # medmnist's folder, not FEDMED_DATA
    said = [line for line in chapter["cells"][0]["text"].splitlines() if line.startswith("fedmedlib ")]
    assert len(said) == 1 and "from file://" in said[0] and "kept torch" in said[0], chapter["cells"][0]["text"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_finds_every_committed_result_it_asks_for(colab_run, path):
    chapter = colab_run[path.name]
    tally = _tally(chapter)
    assert tally["lost"] == [], f"{path.name}: committed results not found when installed: {tally['lost']}"
    for cell in chapter["cells"]:
        for lookup in cell["lookups"]:
            if lookup["found"]:
                assert "/site-packages/fedmedlib/_results/" in lookup["found"], lookup
    assert tally["complete"] + tally["with_pending"] == tally["backed"]
