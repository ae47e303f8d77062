import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedmedlib import data


@pytest.fixture(scope="session")
def real_data_root():
    """The folder holding the verified official file; skipped locally without it, an error in CI."""
    try:
        return data.ensure_file(download=False).parent
    except data.DataError as err:
        if os.environ.get("FEDMED_REQUIRE_DATA") == "1":
            pytest.fail(f"FEDMED_REQUIRE_DATA=1 but the real BloodMNIST is not available: {err}")
        pytest.skip(f"real BloodMNIST not available: {err}")


def skip_unless_required(reason: str):
    """Skip locally when something CI always has is missing; under FEDMED_REQUIRE_DATA=1 (CI) fail instead."""
    if os.environ.get("FEDMED_REQUIRE_DATA") == "1":
        pytest.fail(f"FEDMED_REQUIRE_DATA=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fedmedlib_wheel(tmp_path_factory):
    """A wheel of fedmedlib built from the files git tracks (what `pip install git+<repo>` sees), uncommitted edits
    included; skipped outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True)
    if tracked.returncode:
        skip_unless_required("not a git checkout: the wheel is built from the files git tracks")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in tracked.stdout.splitlines():
        if (root / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((root / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True)
    return next(out.glob("fedmedlib-*.whl"))


def write_fake_npz(path, n=(20, 6, 8), seed=0):
    """A file shaped like bloodmnist.npz with random contents (its md5 is not the official one)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(data.SPLITS, n):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(count, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 8, size=(count, 1)).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def fake_root(tmp_path):
    arrays = write_fake_npz(tmp_path / data.FILENAME)
    return tmp_path, arrays


@pytest.fixture
def trust_fake(monkeypatch):
    """Make medmnist's INFO describe the fake file (md5 and sizes), to test the success path offline."""
    real = data.info()

    def patched(root, n=(20, 6, 8)):
        fake = dict(real, MD5=data.md5sum(root / data.FILENAME), n_samples=dict(zip(data.SPLITS, n)))
        monkeypatch.setattr(data, "info", lambda: fake)

    return patched


@pytest.fixture
def interrupted_run(monkeypatch):
    """Run an experiment with a checkpoint, killed (KeyboardInterrupt) while evaluating round 2."""
    from fedmedlib import fl

    def run(exp, root, checkpoint, **kw):
        original, calls = fl.Federation.evaluate_global, {"n": 0}

        def crash_in_round_2(self, flat):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return original(self, flat)

        monkeypatch.setattr(fl.Federation, "evaluate_global", crash_in_round_2)
        with pytest.raises(KeyboardInterrupt):
            fl.run_federated(exp, root=root, checkpoint=checkpoint, progress=False, **kw)
        monkeypatch.setattr(fl.Federation, "evaluate_global", original)

    return run


def pytest_terminal_summary(terminalreporter, config):
    """After the Colab-path test: its per-chapter tally (time, result-backed cells, results found or missing)."""
    summary = getattr(config, "colab_path_summary", None)
    if summary:
        terminalreporter.section("Colab path")
        terminalreporter.write_line(summary)
