"""Run-or-load cached experiment results: config -> stable hash -> results/<name>-<hash>.json with provenance.

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


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The results folder: the argument, else env FEDMED_RESULTS, else <repo>/results."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("FEDMED_RESULTS", REPO_ROOT / "results"))


def config_hash(config: dict) -> str:
    """A short hash of a JSON-canonical config: same settings, same file name."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def result_path(name: str, config: dict, directory=None) -> Path:
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"result name must be a non-empty word without slashes or spaces, got {name!r}")
    return results_dir(directory) / f"{name}-{config_hash(config)}.json"


def save(result: dict, name: str, config: dict, directory=None) -> Path:
    """Write `result` (which must carry provenance) atomically; returns the file path."""
    missing = {"config", "seed", "provenance", "wall_time_s"} - set(result)
    if missing:
        raise ValueError(f"a result must record {sorted(missing)} before it is saved")
    path = result_path(name, config, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"name": name, "config_hash": config_hash(config), **result}, indent=1))
    tmp.replace(path)
    return path


def load(name: str, config: dict, directory=None) -> dict | None:
    path = result_path(name, config, directory)
    return json.loads(path.read_text()) if path.is_file() else None


def load_or_run(name: str, config: dict, run: Callable[[], dict], *, directory=None,
                allow_run: bool = True, save_result: bool = True) -> dict:
    """The cached result of `config` if present; else `run()` it (and save it) when allowed."""
    cached = load(name, config, directory)
    if cached is not None:
        return cached
    if not allow_run:
        raise FileNotFoundError(f"no cached result {result_path(name, config, directory)}: run it with "
                                "scripts/run_baselines.py (or pass allow_run=True)")
    result = run()
    if save_result:
        save(result, name, config, directory)
    return result


def load_all(name: str, directory=None) -> list[dict]:
    """Every cached result whose file name starts with `name-`, sorted by file name."""
    return [json.loads(p.read_text()) for p in sorted(results_dir(directory).glob(f"{name}-*.json"))]


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
