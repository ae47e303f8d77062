"""Where a number came from: git commit, device, library versions, time — attached to every result.

References:
    STYLE.md of this project (airbench/nanoGPT habit: evidence for a claim sits next to it).
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("fedmedlib", "torch", "numpy", "opacus", "flwr", "medmnist", "cryptography")


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's hash, suffixed '-dirty' when tracked files have uncommitted changes; 'unknown' outside git."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def provenance(device="cpu") -> dict:
    return {
        "git_commit": git_commit(),
        "device": device_name(device),
        "versions": versions(),
        "platform": platform.platform(),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
