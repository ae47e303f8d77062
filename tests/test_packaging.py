import subprocess
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheels_package_list_names_every_package_under_fedmedlib():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fedmedlib").rglob("__init__.py")}
    assert listed - {"fedmedlib._results", "fedmedlib._results.benchmarks"} == found


def test_the_wheel_ships_every_committed_result_and_nothing_else_from_results(fedmedlib_wheel):
    committed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    packaged = [i for i in zipfile.ZipFile(fedmedlib_wheel).infolist() if i.filename.startswith("fedmedlib/_results/")]
    assert sorted(i.filename.replace("fedmedlib/_results/", "results/", 1) for i in packaged) == sorted(committed)
    size = sum(i.file_size for i in packaged)
    # 2.05 MB unpacked (0.6 MB in the wheel) before the seventh column; each of its cells keeps a 400-round history
    # (≈ 127 kB of JSON, ≈ 30 kB compressed in the wheel), and its 21 cells with the sweep add ≈ 2.7 MB. The guard
    # leaves room for them and no more: anything larger should not ship inside the library.
    assert size < 5.5e6, f"results/ is {size / 1e6:.1f} MB unpacked: keep what ships with the library small"
