"""Helpers the chapters share: the Colab install (keeping Colab's torch) and gluing computed numbers into the prose.

A chapter's setup cell first installs fedmedlib itself on Colab (`pip install --no-deps` of `install_source()`,
a few lines that need no fedmedlib), then calls `colab_install()`, which adds the dependencies Colab lacks without
replacing its CUDA torch and prints one line saying what it installed.

References:
    MyST-NB documentation, "Insert variables into pages with glue".
    PEP 610 (direct_url.json: where an installed distribution came from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata

from .. import REPO_URL

# Colab's own builds, never replaced: pinned to the installed versions while fedmedlib's dependencies install.
KEEP = ("torch", "torchvision", "torchaudio")
# Installed without its dependencies: medmnist's pull torchvision (and with it a CUDA torch where torchvision is
# absent); fedmedlib uses only its INFO table and its download, which uses the torchvision Colab already has.
NO_DEPS = ("medmnist",)


# The first lines of every chapter's setup cell: they must run before fedmedlib exists, so they cannot import it.
# tests/test_repo_url.py checks each chapter starts with exactly these lines (and so with REPO_URL).
BOOTSTRAP = f"""# Setup. On Colab these lines install fedmedlib (keeping Colab's torch); elsewhere they do nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    src = os.environ.get("FEDMED_INSTALL_SOURCE") or "git+{REPO_URL}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", src],
                         capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"cannot install fedmedlib from {{src}} (is this runtime online?): "
                           f"{{pip.stderr[-400:]}}")
from fedmedlib.book import colab_install, glue
colab_install()  # on Colab: installs what Colab lacks (not torch) and says what, in one line
"""


def on_colab() -> bool:
    return "google.colab" in sys.modules


def install_source() -> str:
    """What the setup cell installs: env FEDMED_INSTALL_SOURCE (a wheel, a folder, another URL), else the repo."""
    return os.environ.get("FEDMED_INSTALL_SOURCE") or f"git+{REPO_URL}"


def colab_install(*, run=subprocess.run) -> str | None:
    """On Colab, install fedmedlib's missing dependencies, keeping Colab's torch, and print one line saying what
    was installed; elsewhere do nothing (returns None). Raises RuntimeError with the reason when pip fails."""
    if not on_colab():
        return None
    before = _installed()
    missing = [r for r in _requirements() if not _satisfied(r)]
    plain = [r for r in missing if _name(r) not in NO_DEPS]
    bare = [r for r in missing if _name(r) in NO_DEPS]
    with tempfile.TemporaryDirectory() as tmp:
        keep = os.path.join(tmp, "keep-colab-torch.txt")  # a constraints file: pip may not replace these
        with open(keep, "w") as fh:
            fh.write("".join(f"{n}=={v}\n" for n, v in before.items() if n in KEEP))
        pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        for args in ([*pip, "-c", keep, *plain] if plain else None, [*pip, "--no-deps", *bare] if bare else None):
            if args is None:
                continue
            done = run(args, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"could not install fedmedlib's dependencies {' '.join(args[len(pip):])}: "
                                   f"{_last_line(done.stderr)}. Is this runtime online?")
    after = _installed()
    added = sorted(f"{n} {v}" for n, v in after.items() if before.get(n) != v and n != "fedmedlib")
    kept = ", ".join(f"{n} {before[n]}" for n in KEEP if n in before and after.get(n) == before[n])
    line = (f"fedmedlib {metadata.version('fedmedlib')} from {_origin()}; "
            f"{'added ' + ', '.join(added) if added else 'no dependency to add'}"
            f"{'; kept ' + kept if kept else ''}; {_device()}")
    print(line)
    return line


def _requirements() -> list[str]:
    return [r for r in metadata.requires("fedmedlib") or [] if "extra ==" not in r]


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name.lower()


def _satisfied(requirement: str) -> bool:
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)


def _installed() -> dict[str, str]:
    return {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}


def _origin() -> str:
    """Where the installed fedmedlib came from (PEP 610): 'git+<url>@<commit>', a file URL, or 'an index'."""
    try:
        info = json.loads(metadata.distribution("fedmedlib").read_text("direct_url.json") or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        info = {}
    vcs = info.get("vcs_info")
    if vcs:
        return f"{vcs.get('vcs', 'git')}+{info['url']}@{vcs.get('commit_id', '')[:7]}"
    return info.get("url", "an index")


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return "no GPU (Colab: Runtime > Change runtime type > T4 GPU for the GPU profile)"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "pip gave no reason"


def glue(name: str, value, display: bool = False):
    """Make `value` citable in the chapter's prose as {glue:text}`name`; a no-op without myst-nb (Colab)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value
