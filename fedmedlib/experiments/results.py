"""Run-or-load cached experiment results: config -> stable hash -> results/<name>-<hash>.json with provenance,
found in a clone's results/ or, installed, in the copy packaged with the library (new runs go to ~/.fedmed/results).

References:
    STYLE.md of this project: chapters read committed JSON for full profiles and run only QUICK live.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
# The committed results/ as shipped inside the wheel (pyproject.toml maps results/ to fedmedlib/_results), so an
# installed fedmedlib (pip install git+..., as on Colab) reads them with no clone and no network. Read-only.
PACKAGED = Path(__file__).resolve().parents[1] / "_results"
# Which command produces each kind of result (said when one is missing).
PRODUCED_BY = {
    "centralized": "python scripts/run_baselines.py --profile cpu",
    "dp_centralized": "python scripts/run_dp_centralized.py --profile cpu",
    "federated": "python scripts/run_grid.py --profile cpu",
    "attack_membership": "python scripts/run_attacks.py --profile cpu",
    "attack_inversion": "python scripts/run_attacks.py --profile cpu",
    "dp_recipe": "python scripts/search_dp_recipe.py",
}


def repo_results() -> Path | None:
    """<repo>/results when this fedmedlib runs from a clone (editable install or PYTHONPATH), else None."""
    candidate = REPO_ROOT / "results"
    return candidate if (REPO_ROOT / "pyproject.toml").is_file() and candidate.is_dir() else None


def user_results() -> Path:
    """Where an installed fedmedlib writes new results when no folder is given: ~/.fedmed/results."""
    return Path.home() / ".fedmed" / "results"


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The results folder: the argument, else env FEDMED_RESULTS, else <repo>/results in a clone, else the
    committed results packaged with the library (read-only: `save` then writes to `user_results()`)."""
    if path is not None:
        return Path(path)
    if os.environ.get("FEDMED_RESULTS"):
        return Path(os.environ["FEDMED_RESULTS"])
    return repo_results() or PACKAGED


def write_dir(path: str | os.PathLike | None = None) -> Path:
    """Where `save` writes: `results_dir(path)`, except that the packaged copy is never written to."""
    where = results_dir(path)
    return user_results() if path is None and where == PACKAGED else where


def read_dirs(path: str | os.PathLike | None = None) -> list[Path]:
    """Where results are looked up, first match wins: the writable folder, then the packaged copy if any."""
    return list(dict.fromkeys([write_dir(path), results_dir(path)]))


def config_hash(config: dict) -> str:
    """A short hash of a JSON-canonical config: same settings, same file name."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def result_path(name: str, config: dict, directory=None) -> Path:
    """The file of `config`'s result in `results_dir(directory)` (whether or not it exists)."""
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"result name must be a non-empty word without slashes or spaces, got {name!r}")
    return results_dir(directory) / f"{name}-{config_hash(config)}.json"


def find(name: str, config: dict, directory=None) -> Path | None:
    """The file holding `config`'s result, looked up in `read_dirs(directory)`; None if it has not run."""
    file = result_path(name, config, directory).name
    found = next((d / file for d in read_dirs(directory) if (d / file).is_file()), None)
    _log(name, file, found)
    return found


def save(result: dict, name: str, config: dict, directory=None) -> Path:
    """Write `result` (which must carry provenance) atomically into `write_dir(directory)`; returns the path."""
    missing = {"config", "seed", "provenance", "wall_time_s"} - set(result)
    if missing:
        raise ValueError(f"a result must record {sorted(missing)} before it is saved")
    path = write_dir(directory) / result_path(name, config, directory).name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"name": name, "config_hash": config_hash(config), **result}, indent=1))
    tmp.replace(path)
    return path


def load(name: str, config: dict, directory=None) -> dict | None:
    path = find(name, config, directory)
    return json.loads(path.read_text()) if path is not None else None


def missing_message(name: str, config: dict, directory=None) -> str:
    """What to say when a result has not run: its file, and the command that produces it."""
    command = PRODUCED_BY.get(name, "the script in scripts/ that writes it")
    where = ", ".join(map(str, read_dirs(directory)))
    return (f"no cached result {result_path(name, config, directory).name} in {where}: produce it with "
            f"`{command}` in a clone of the repository (or pass allow_run=True)")


def load_or_run(name: str, config: dict, run: Callable[[], dict], *, directory=None,
                allow_run: bool = True, save_result: bool = True) -> dict:
    """The cached result of `config` if present; else `run()` it (and save it) when allowed."""
    cached = load(name, config, directory)
    if cached is not None:
        return cached
    if not allow_run:
        raise FileNotFoundError(missing_message(name, config, directory))
    result = run()
    if save_result:
        save(result, name, config, directory)
    return result


def load_all(name: str, directory=None) -> list[dict]:
    """Every cached result whose file name starts with `name-`, sorted by file name (the writable folder's copy
    of a file wins over the packaged one)."""
    files = {}
    for d in reversed(read_dirs(directory)):
        files.update({p.name: p for p in d.glob(f"{name}-*.json")})
    _log(name, f"{name}-*.json", None, count=len(files))
    return [json.loads(files[f].read_text()) for f in sorted(files)]


def benchmark(name: str) -> dict | None:
    """A committed benchmark report, results/benchmarks/<name>.json (packaged too); None when absent."""
    file = f"benchmarks/{name}.json"
    found = next((d / file for d in read_dirs() if (d / file).is_file()), None)
    _log("benchmark", file, found)
    return json.loads(found.read_text()) if found is not None else None


def _log(name: str, file: str, found: Path | None, **extra) -> None:
    """With env FEDMED_RESULTS_LOG set, append one JSON line per lookup (what was asked, where it was found):
    how tests check that a chapter found every committed result it reads."""
    log = os.environ.get("FEDMED_RESULTS_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps(dict(name=name, file=file, found=str(found) if found else None, **extra)) + "\n")


@contextlib.contextmanager
def claim(key: str, directory: str | os.PathLike) -> Iterator[bool]:
    """Hold `<directory>/<key>.claim` while this process works on `key`; yields False when another live process
    on this machine holds it, so several workers can share one grid without running a cell twice.

    A claim left by a process that has died (same host, pid gone) is taken over; one whose owner cannot be
    checked (another host) is respected — delete the file by hand if that worker is gone for good.
    """
    if not key or any(c in key for c in "/\\ "):
        raise ValueError(f"claim key must be a non-empty word without slashes or spaces, got {key!r}")
    path = Path(directory) / f"{key}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _claim_is_stale(path):
                yield False
                return
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False  # someone re-created it between our unlink and our retry: theirs now


def _claim_is_stale(path: Path) -> bool:
    try:
        host, pid = path.read_text().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # being written right now, or not ours to judge
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        pass
    return False
