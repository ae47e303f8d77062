"""Helpers the chapters share: Colab detection and gluing computed numbers into the prose.

References:
    MyST-NB documentation, "Insert variables into pages with glue".
"""

from __future__ import annotations

import subprocess
import sys

REPO_URL = "https://github.com/fedmedlib/fedmedlib"


def on_colab() -> bool:
    return "google.colab" in sys.modules


def colab_install() -> None:
    """On Colab, install this repository (its torch stays Colab's own CUDA build); elsewhere do nothing."""
    if on_colab():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{REPO_URL}"], check=True)


def glue(name: str, value, display: bool = False):
    """Make `value` citable in the chapter's prose as {glue:text}`name`; a no-op without myst-nb (Colab)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value
