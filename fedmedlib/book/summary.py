"""The introduction's one-figure summary: each reading of the paper's claim, ours next to the paper's number.

It reads the committed grid (the CPU profile by default), so the introduction shows what chapter 6 shows and says
"not yet run" for a reading whose cells have not landed.
"""

from __future__ import annotations

from ..config import CPU
from ..experiments import grid
from . import plots

# The readings in the order the book tells them; the split-noise reading has no counterpart in the paper.
READINGS = ("dp-sa-", "dp-sa+", "as_published", "as_coded", "as_claimed", "as_should")
NO_PAPER_NUMBER = ("as_should",)


def readings(profile=CPU, hospitals: int = 10, scheme: str = "paper", directory=None) -> list[dict]:
    """One grid row per reading (mean ± std over the seeds present), with the paper's number where it has one."""
    rows = {r["column"]: r for r in grid.table(profile, hospitals=[hospitals], directory=directory)
            if r["split"] == scheme}
    return [dict(rows[c], paper=None if c in NO_PAPER_NUMBER else rows[c]["paper"]) for c in READINGS]


def figure(profile=CPU, hospitals: int = 10, scheme: str = "paper", directory=None):
    plots.use_style()
    return plots.readings_summary(readings(profile, hospitals, scheme, directory),
                                  title=f"{hospitals} hospitals, {scheme} split: the paper and ours")
