"""The book's tables: one way to write a number, and tables that fit the text column.

Every chapter table goes through `table(...)`. It formats each column with one of the formatters below, writes
"—" for a value that was not measured (never `NaN` or `None`) and says why in a footnote, and renders as HTML whose
cells wrap, so no table is wider than the page's text column. Outside a notebook (`print`, a terminal) the same
table prints as plain text.

    >>> percent(0.8493)
    '84.9'
    >>> mean_std(dict(mean=85.77, std=1.98, n=3))
    '85.8 ± 2.0 (3)'
    >>> epsilon(5.999994), epsilon(1161.442679), epsilon(0.099839)
    ('6.00', '1,161', '0.0998')
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping

MISSING = "—"
# Readable headers for the per-round histories the chapters show (a run's "rounds" list).
ROUND_COLUMNS = {"train_loss": "train loss", "val_accuracy": "val. acc. (%)", "test_accuracy": "test acc. (%)",
                 "epsilon": "ε so far", "seconds": "seconds", "aggregated": "updates summed"}
DEFAULT_NOTE = "not measured yet: the run that gives it has not finished (the text says which script runs it)"


def is_missing(value) -> bool:
    """None, NaN and pandas' NA are 'not measured'."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and pd.NA (whose comparison raises or is NA)
    except (TypeError, ValueError):
        return True


def percent(fraction, digits: int = 1) -> str:
    """An accuracy given as a fraction (0.849) written in percent with one decimal ('84.9')."""
    if is_missing(fraction):
        return MISSING
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"percent() takes a fraction in [0, 1], got {fraction!r}: pass accuracy / 100 "
                         "if it is already in percent, or use number()")
    return f"{100 * float(fraction):.{digits}f}"


def mean_std(row: Mapping) -> str:
    """'86.5 ± 0.4 (3)' from a summary with mean and std in percent and n seeds; '—' when no seed has run."""
    if not row or row.get("n", 0) == 0 or is_missing(row.get("mean")):
        return MISSING
    std = row.get("std")
    return f"{row['mean']:.1f}" + ("" if is_missing(std) else f" ± {std:.1f}") + f" ({row['n']})"


def epsilon(value) -> str:
    """ε with the digits that carry meaning: three significant figures below 100, whole numbers with thousands
    separators above, '∞' for no privacy."""
    if is_missing(value):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "∞"
    if value >= 100:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def number(value, digits: int = 1) -> str:
    """A plain quantity (minutes, noise multipliers, ratios) with `digits` decimals and thousands separators."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}"


def text(value) -> str:
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # Three decimals, but never fewer than 3 significant digits: 5e-4 must not read as 0.001.
        return f"{value:.3g}" if 0 < abs(value) < 0.1 else number(value, 3)
    return str(value)


NUMBER = re.compile(r"^(?:[−+-]?[\d,]+(?:\.\d+)?(?: ± [\d.]+)?(?: \(\d+\))?|∞|yes|no)$")


def _kind(cell: str) -> str:
    """CSS class of a cell: numbers stay on one line, right-aligned; text wraps, left-aligned."""
    if cell == MISSING:
        return "fm-missing"
    return "fm-num" if NUMBER.match(cell) else "fm-text"


Formatter = Callable[[object], str]
FORMATS: dict[str, Formatter] = {"percent": percent, "mean_std": mean_std, "epsilon": epsilon, "number": number,
                                 "text": text, "integer": lambda v: number(v if is_missing(v) else int(v)),
                                 "number2": lambda v: number(v, 2), "number3": lambda v: number(v, 3),
                                 "number0": lambda v: number(v, 0), "sig3": epsilon,
                                 "signed": lambda v: MISSING if is_missing(v) else f"{v:+.1f}"}


def _formatter(spec) -> Formatter:
    if callable(spec):
        return spec
    if spec not in FORMATS:
        raise ValueError(f"unknown format {spec!r}: use a function or one of {sorted(FORMATS)}")
    return FORMATS[spec]


class Table:
    """A formatted table: HTML that wraps inside the text column in the book, plain text elsewhere."""

    def __init__(self, header: list[str], index_names: list[str], rows: list[tuple[list[str], list[str]]],
                 caption: str = "", notes: list[str] | None = None):
        self.header, self.index_names, self.rows = header, index_names, rows
        self.caption, self.notes = caption, list(notes or [])

    def cell(self, row: int, column: str) -> str:
        """The formatted text of one cell (for tests and for glue)."""
        return self.rows[row][1][self.header.index(column)]

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in self.index_names + self.header)
        body = []
        for index, values in self.rows:
            cells = "".join(f'<th scope="row">{esc(v)}</th>' for v in index)
            cells += "".join(f'<td class="{_kind(v)}">{esc(v)}</td>' for v in values)
            body.append(f"<tr>{cells}</tr>")
        caption = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        notes = "".join(f'<p class="fm-note">{esc(n)}</p>' for n in self.notes)
        # Inline style, so that the table also wraps on Colab and in a plain Jupyter page.
        style = ("<style>table.fm-table{border-collapse:collapse;width:auto;max-width:100%;table-layout:auto;"
                 "font-size:0.86em;margin:0.4em 0}table.fm-table th,table.fm-table td{white-space:normal;"
                 "overflow-wrap:anywhere;padding:0.25em 0.6em;border-bottom:1px solid #ddd;vertical-align:top}"
                 "table.fm-table td.fm-num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}"
                 "table.fm-table td.fm-text{text-align:left}"
                 "table.fm-table td.fm-missing{text-align:center;color:#777}"
                 "table.fm-table caption{caption-side:top;text-align:left;font-weight:600;padding-bottom:0.3em}"
                 "p.fm-note{font-size:0.8em;color:#555;margin:0.2em 0}</style>")
        return (f'{style}<div class="fm-table-wrap"><table class="fm-table">{caption}<thead><tr>{head}</tr>'
                f'</thead><tbody>{"".join(body)}</tbody></table>{notes}</div>')

    def __repr__(self) -> str:
        names = self.index_names + self.header
        lines = [[*i, *v] for i, v in self.rows]
        widths = [max([len(n)] + [len(line[k]) for line in lines]) for k, n in enumerate(names)]
        fmt = "  ".join(f"{{:{w}}}" for w in widths)
        out = ([self.caption] if self.caption else []) + [fmt.format(*names)]
        out += [fmt.format(*line) for line in lines] + self.notes
        return "\n".join(out)


def table(data, formats: Mapping[str, object] | None = None, *, index: str | list[str] | None = None,
          columns: Mapping[str, str] | None = None, caption: str = "", note: str = DEFAULT_NOTE,
          default: object = "text") -> Table:
    """The one way a chapter shows a table.

    data: a list of dicts (one per row) or a pandas DataFrame. formats: column -> formatter name (see FORMATS)
    or function; other columns use `default`. index: the column(s) shown as row labels. columns: renames for
    display (old -> new), applied after formatting. note: the footnote shown when any cell is missing ("—").
    """
    records, index_cols = _records(data, index)
    formats = dict(formats or {})
    if records:
        unknown = set(formats) - set(records[0])
        if unknown:
            raise ValueError(f"formats name columns the table does not have: {sorted(unknown)}; "
                             f"its columns are {list(records[0])}")
    value_cols = [c for c in (records[0] if records else []) if c not in index_cols]
    rename = dict(columns or {})
    rows, missing = [], False
    for rec in records:
        idx = [_formatter(formats.get(c, "text"))(rec[c]) for c in index_cols]
        vals = [_formatter(formats.get(c, default))(rec[c]) for c in value_cols]
        missing |= MISSING in vals
        rows.append((idx, vals))
    return Table([str(rename.get(c, c)) for c in value_cols], [str(rename.get(c, c)) for c in index_cols], rows,
                 caption,
                 notes=[f"{MISSING} {note}"] if missing and note else [])


def _records(data, index) -> tuple[list[dict], list[str]]:
    index_cols = [index] if isinstance(index, str) else list(index or [])
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a DataFrame: its index becomes row labels
        frame = data if not index_cols else data.set_index(index_cols)
        names = [n if n is not None else "" for n in frame.index.names]
        if not index_cols and not any(names) and _is_range_index(frame):
            return frame.to_dict("records"), []
        records = []
        for key, row in zip(frame.index, frame.to_dict("records")):
            key = key if isinstance(key, tuple) else (key,)
            records.append({**dict(zip(names, key)), **row})
        return records, names
    records = [dict(r) for r in data]
    for c in index_cols:
        if records and c not in records[0]:
            raise ValueError(f"index column {c!r} is not in the rows; their columns are {list(records[0])}")
    return records, index_cols


def _is_range_index(frame) -> bool:
    import pandas as pd

    return isinstance(frame.index, pd.RangeIndex)
