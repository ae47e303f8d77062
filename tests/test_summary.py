"""The introduction's summary figure reads the committed grid: every reading, the paper's number beside ours."""

from fedmedlib.book import summary
from fedmedlib.experiments import grid


def test_the_summary_has_every_reading_in_the_books_order_with_the_papers_numbers():
    rows = summary.readings()
    assert [r["column"] for r in rows] == list(summary.READINGS)
    papers = {r["column"]: r["paper"] for r in rows}
    assert papers["dp-sa-"] == grid.PAPER_TABLE[10]["dp-sa-"] and papers["as_claimed"] == grid.PAPER_TABLE[10]["dp+"]
    assert papers["as_should"] is None  # the paper has no split-noise reading
    assert all(r["hospitals"] == 10 and r["split"] == "paper" for r in rows)


def test_the_summary_figure_has_one_bar_label_per_reading():
    fig = summary.figure()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == sorted(r["label"] for r in summary.readings())
