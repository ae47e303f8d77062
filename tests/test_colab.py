import subprocess
import sys
import types

import pytest

from fedmedlib.book import colab


@pytest.fixture
def on_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def test_colab_install_does_nothing_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.colab_install(run=lambda *a, **k: pytest.fail("pip ran off Colab")) is None


def test_colab_install_adds_missing_dependencies_keeping_torch_and_says_so_in_one_line(on_colab, monkeypatch,
                                                                                       capsys):
    import torch

    monkeypatch.setattr(colab, "_satisfied", lambda r: not r.startswith(("opacus", "medmnist")))
    calls = []

    def run(args, **kw):
        constraints = args[args.index("-c") + 1] if "-c" in args else None
        calls.append((args, open(constraints).read() if constraints else None))
        return subprocess.CompletedProcess(args, 0, "", "")

    line = colab.colab_install(run=run)
    (plain, keep), (bare, _) = calls
    assert plain[-1] == "opacus>=1.5" and "-q" in plain and f"torch=={torch.__version__}" in keep.split()
    assert bare[-2:] == ["--no-deps", "medmnist>=3.0"]  # its dependencies would pull torchvision and a CUDA torch
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("fedmedlib ") and line in out


def test_colab_install_fails_with_the_reason_when_pip_does(on_colab, monkeypatch):
    monkeypatch.setattr(colab, "_satisfied", lambda r: not r.startswith("opacus"))
    failed = lambda args, **kw: subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution\n")
    with pytest.raises(RuntimeError, match="could not install fedmedlib's dependencies.*No matching distribution"):
        colab.colab_install(run=failed)


def test_setup_cell_says_clearly_when_the_repository_cannot_be_reached(on_colab, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMED_INSTALL_SOURCE", f"git+file://{tmp_path}/no-such-repository")
    with pytest.raises(RuntimeError, match="cannot install fedmedlib from git\\+file://.*is this runtime online"):
        exec(colab.BOOTSTRAP, {})


def test_chapters_leave_progress_bars_to_the_environment():
    # On Colab the live cells show tqdm bars; the book build turns them off with FEDMED_PROGRESS=0 (Makefile).
    import json
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")):
        code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert "progress=False" not in code, f"{path.name} switches progress bars off for every reader"
