"""The book's one table helper: how numbers are written, missing values, and the rules chapters keep."""

import glob
import json
import math

import pandas as pd
import pytest

from fedmedlib.book import tables


def test_percent_mean_std_and_epsilon_formats():
    assert tables.percent(0.8493) == "84.9"
    assert tables.percent(1.0) == "100.0"
    assert tables.mean_std(dict(mean=85.77, std=1.98, n=3)) == "85.8 ± 2.0 (3)"
    assert tables.mean_std(dict(mean=86.31, std=None, n=1)) == "86.3 (1)"
    assert tables.mean_std(dict(mean=None, std=None, n=0)) == tables.MISSING
    assert [tables.epsilon(v) for v in (5.999994, 1161.442679, 0.099839, 21.8, 0.5, math.inf)] == [
        "6.00", "1,161", "0.0998", "21.8", "0.500", "∞"]
    assert tables.number(1234.5678, 1) == "1,234.6" and tables.number(7) == "7" and tables.number(True) == "yes"


def test_percent_refuses_a_value_already_in_percent():
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\].*number\\(\\)"):
        tables.percent(84.9)


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA])
def test_missing_values_become_a_dash_with_a_footnote(missing):
    t = tables.table([dict(run="a", acc=0.5), dict(run="b", acc=missing)], {"acc": "percent"}, index="run",
                     note="not run yet")
    assert t.cell(0, "acc") == "50.0" and t.cell(1, "acc") == tables.MISSING
    html = t._repr_html_()
    assert "NaN" not in html and "None" not in html and "<NA>" not in html
    assert "— not run yet" in html and "— not run yet" in repr(t)


def test_no_footnote_when_nothing_is_missing():
    t = tables.table([dict(run="a", acc=0.5)], {"acc": "percent"}, index="run")
    assert t.notes == [] and '<p class="fm-note">' not in t._repr_html_()


def test_dataframe_index_becomes_row_labels_and_columns_are_renamed():
    frame = pd.DataFrame({"acc": [0.9, 0.8]}, index=pd.Index(["x", "y"], name="model"))
    t = tables.table(frame, {"acc": "percent"}, columns={"acc": "test acc. (%)"})
    assert t.index_names == ["model"] and t.header == ["test acc. (%)"]
    assert t.rows == [(["x"], ["90.0"]), (["y"], ["80.0"])]
    plain = tables.table(pd.DataFrame({"a": [1.0]}), {"a": "number"})
    assert plain.index_names == [] and plain.rows == [([], ["1.0"])]


def test_cells_wrap_so_the_table_fits_the_text_column():
    html = tables.table([dict(k="a", v="x" * 200)], index="k")._repr_html_()
    assert "white-space:normal" in html and "overflow-wrap:anywhere" in html and "max-width:100%" in html


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="formats name columns the table does not have: \\['nope'\\]"):
        tables.table([dict(a=1)], {"nope": "number"})
    with pytest.raises(ValueError, match="unknown format 'percentage'"):
        tables.table([dict(a=1)], {"a": "percentage"})
    with pytest.raises(ValueError, match="index column 'b' is not in the rows"):
        tables.table([dict(a=1)], index="b")


def _visible_code_cells():
    for path in sorted(glob.glob("notebooks/*.ipynb")):
        for i, cell in enumerate(json.load(open(path, encoding="utf-8"))["cells"]):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if cell["cell_type"] == "code" and not tags & {"remove-cell", "remove-input"}:
                yield path, i, "".join(cell["source"]), tags


def test_chapters_show_tables_through_the_helper_not_raw_dataframes():
    """A DataFrame shown as a cell's last line prints raw floats and NaN; chapters use tables.table."""
    for path, i, src, _ in _visible_code_cells():
        last = src.strip().splitlines()[-1] if src.strip() else ""
        assert not last.startswith(("pd.DataFrame(", "table.style", "summary", "points")), (path, i, last)


def test_visible_code_is_short_and_narrow_and_never_only_glue():
    for path, i, src, tags in _visible_code_cells():
        lines = src.splitlines()
        assert all(len(line) <= 100 for line in lines), f"{path} cell {i}: a line is over 100 characters"
        if "hide-input" in tags:
            continue
        assert len(lines) <= 15, f"{path} cell {i}: {len(lines)} lines (at most 15 visible)"
        assert "glue(" not in src, f"{path} cell {i}: glue calls belong in a remove-cell cell after it"


def test_numbers_stay_on_one_line_and_text_wraps():
    html = tables.table([dict(k="a", n=85.77, t="a long explanation")], {"n": "number"}, index="k")._repr_html_()
    assert '<td class="fm-num">85.8</td>' in html and '<td class="fm-text">a long explanation</td>' in html
    assert [tables._kind(v) for v in ("85.8 ± 2.0 (3)", "1,161", "-16.1", "∞", "—", "{'lr': 2.0}")] == [
        "fm-num", "fm-num", "fm-num", "fm-num", "fm-missing", "fm-text"]


def test_text_keeps_small_floats_significant_digits():
    # A recipe's weight decay of 5e-4 once read "0.001" in chapter 2's table.
    assert [tables.text(v) for v in (5e-4, 0.05, 0.1, 0.9, 128.0, 0.0)] == [
        "0.0005", "0.05", "0.100", "0.900", "128.000", "0.000"]
