#!/usr/bin/env bash
# The GPU plan: run the PAPER profile's grid on one (offline) GPU machine, resumably.
#
# Where PyPI is reachable, once:   bash scripts/gpu_paper_grid.sh --fetch-wheels   (fills .whl/, ~1 MB)
# Bring to the GPU machine:        this checkout, .whl/, and data/bloodmnist.npz (md5 7053d035...)
# On the GPU machine:              bash scripts/gpu_paper_grid.sh [--hospitals 10] [--seeds 0] ...
# Every finished cell is a results/federated-<hash>.json plus a line in results/benchmarks/gpu_paper_grid.json;
# run it again after an interruption and it continues (cells done are skipped, a cell in flight resumes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=(opacus==1.6.0 opt_einsum medmnist==3.0.2 flwr==1.42.0 tqdm)

if [ "${1:-}" = "--fetch-wheels" ]; then
  # Pure-Python wheels, no dependencies: the GPU image brings torch, numpy (and usually scipy, cryptography).
  "$PY" -m pip download --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}"
  exit 0
fi

missing=()
for pair in opacus:opacus opt_einsum:opt_einsum medmnist:medmnist tqdm:tqdm; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ -d .whl ] || { echo "missing ${missing[*]} and no .whl/ folder: run '$0 --fetch-wheels' where PyPI is reachable" >&2; exit 1; }
  "$PY" -m pip install --no-deps --no-index --find-links .whl "${missing[@]}"
fi
export FEDMED_DATA=${FEDMED_DATA:-$PWD/data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export FEDMED_PROGRESS=0
exec "$PY" scripts/gpu_paper_grid.py "$@"
