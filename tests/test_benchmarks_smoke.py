"""benchmarks/fl_round.py at CI size (--smoke): every row runs and the JSON holds the ratios."""

import importlib.util
import json
from pathlib import Path

from fedmedlib import privacy

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "fl_round.py"


def test_fl_round_smoke_writes_every_row_with_ratios(real_data_root, tmp_path, monkeypatch):
    # The plumbing is under test, not the calibration (≈5-10 s per hospital with PRV): any σ will do.
    monkeypatch.setattr(privacy, "noise_multiplier", lambda *args, **kwargs: 1.0)
    spec = importlib.util.spec_from_file_location("fl_round", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "fl_round.json"
    bench.main(["--smoke", "--root", str(real_data_root), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    expected = {(dp, row) for dp in ("none", "dpsgd") for row in bench.ROWS if row != "flower-recipe"}
    assert {(r["dp"], r["row"]) for r in rows} == expected
    assert all(r["seconds"] > 0 and r["vs_engine"] > 0 for r in rows)
