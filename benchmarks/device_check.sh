#!/usr/bin/env bash
# The device check (issue 33, item 6; docs/gpu.md, "The device check"): on a machine with a GPU,
# install the harness into the Python that has torch, then run benchmarks/device_check.py, which
# compares the smoke suite's records on the GPU (fp32, bf16) with the CPU's, the robustness
# perturbations computed on the GPU with the CPU's (and, where TorchIO imports, a robustness record of
# each path), measures volumes/s and pretrains simclr3d at paper scale for two minutes. Everything it
# measured: $OUT/device_check.json (or --out DIR). Meant to finish within 8 minutes on one H100; every
# stage has its own budget.
#
# The GPU machine has no network and its own torch, and lacks some of the project's dependencies,
# so they travel as wheels for its Python (cp312 at last look), downloaded beforehand on a machine
# with a network, from the repository root, into a folder git ignores (e.g. under .venv/):
#
#   pip download --python-version 3.12 --only-binary=:all: --no-deps -d .venv/device-wheels \
#       monai nibabel nilearn lifelines torchio pydantic pydantic-core annotated-types \
#       typing-inspection autograd formulaic interface-meta narwhals deprecated wrapt humanize \
#       einops jaxtyping wadler-lindig typer click shellingham tqdm \
#       rich markdown-it-py mdurl pygments pyyaml filelock threadpoolctl joblib
#   pip wheel --no-deps -w .venv/device-wheels autograd-gamma   # pure Python, published as source only
#
# A device call sends the working tree and its carried paths, 64 MiB in all; the tracked tree alone
# is over that (the reference weights), so set aside what the check does not read first, and put it
# back after the call (benchmarks/device_travel.py; it says whether the call fits):
#
#   python benchmarks/device_travel.py aside --carry .venv/device-wheels
#   python benchmarks/device_travel.py back
#
# (.venv/ is ignored by git: a device run must be told to carry .venv/device-wheels.)
#
# (--no-deps: torch, numpy, scipy, pandas, scikit-learn and matplotlib are the machine's own and
# too big to carry; the small pure-Python ones at the end may be there already, and installing them
# again changes nothing that matters; add any the report names under environment.missing_imports.
# SimpleITK, which torchio imports, is a 50 MB wheel: it is left behind, so torchio shows under
# missing_imports; only the robustness protocol needs it, and the smoke suite has none. Without it
# the perturbations stage compares the GPU with the same torch code on the CPU (and with MONAI's
# CPU path for gibbs and rician_noise) and the robustness stage is skipped. It cannot come along:
# the trimmed tree and the other wheels are 48 MiB of the 64 a call may send.)
# Then, on the GPU machine:
#
#   bash benchmarks/device_check.sh --wheels .venv/device-wheels [--out DIR] [other options of
#       device_check.py, e.g. --pretrain-seconds 60]
#
# and here, to see that it still runs (about 85 s on two idle CPU cores; no robustness records):
#
#   bash benchmarks/device_check.sh --device cpu --dry-run --out "$(mktemp -d)"
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -n "$WHEELS" ]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "device_check.sh: no wheels in $WHEELS (see the pip download command at the top of this script)" >&2
    exit 2
  fi
  # only the carried wheels, nothing resolved from an index (there is none), no dependency pulled in
  timeout 120 "$PYTHON" -m pip install --quiet --no-index --no-deps "${wheels[@]}"
  # the harness itself, editable, so the encoders' entry points are declared (no build isolation:
  # its build requirements are the machine's setuptools)
  timeout 60 "$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
fi

exec "$PYTHON" benchmarks/device_check.py ${ARGS[@]+"${ARGS[@]}"}
