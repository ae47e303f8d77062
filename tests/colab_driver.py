"""Run chapters top to bottom as on Colab, for tests/test_colab_path.py: `python colab_driver.py OUT NB...`.

Run by the fresh environment's Python, from a scratch folder. Each notebook executes in a kernel of that Python
(the kernel spec in $JUPYTER_PATH), with the results lookups it makes ($FEDMED_RESULTS_LOG) attributed to the
cell that made them; a last cell, added here only, reports where fedmedlib, its results and its data came from.
Writes OUT (JSON): per chapter, its cells' lookups and texts, the report, the error if any, and the seconds taken.
"""

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPORT = """import json, sys, fedmedlib
from fedmedlib import data
from fedmedlib.experiments import results
print("COLAB-PATH-REPORT " + json.dumps(dict(fedmedlib=fedmedlib.__file__, executable=sys.executable,
      results_dir=str(results.results_dir()), packaged=str(results.PACKAGED),
      data=str(data.ensure_file(download=False)), colab="google.colab" in sys.modules)))"""


def _texts(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", "") + o["data"].get("text/html", ""))
        elif o.get("output_type") == "error":
            out.append(f"{o.get('ename')}: {o.get('evalue')}")
    return "".join(out)


def run(path: Path, log: Path) -> dict:
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    lookups: dict[int, list] = {}
    seen = [len(log.read_text().splitlines()) if log.exists() else 0]  # earlier chapters wrote those

    def attribute(cell, cell_index, **_):
        lines = log.read_text().splitlines() if log.exists() else []
        lookups[cell_index] = [json.loads(line) for line in lines[seen[0]:]]
        seen[0] = len(lines)

    client = NotebookClient(nb, kernel_name="colab", timeout=900, resources={"metadata": {"path": os.getcwd()}},
                            on_cell_executed=attribute)
    started, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err)[-3000:]
    cells = [dict(index=i, lookups=lookups.get(i, []), text=_texts(c))
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    report = next((json.loads(line.split(" ", 1)[1]) for c in cells for line in c["text"].splitlines()
                   if line.startswith("COLAB-PATH-REPORT ")), None)
    return dict(chapter=path.name, seconds=time.perf_counter() - started, error=error, cells=cells[:-1],
                report=report)


def main(out: str, *notebooks: str) -> None:
    log = Path(os.environ["FEDMED_RESULTS_LOG"])
    chapters = []
    for nb in notebooks:
        chapters.append(run(Path(nb), log))
        Path(out).write_text(json.dumps(chapters, indent=1))  # written per chapter: a time-out loses little
        print(f"{Path(nb).name}: {chapters[-1]['seconds']:.0f} s{' ERROR' if chapters[-1]['error'] else ''}",
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
