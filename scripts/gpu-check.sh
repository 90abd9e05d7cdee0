#!/usr/bin/env bash
# The check for a CUDA machine: the tiny test model and the embedded Gemma 3 270M on CUDA in bf16, answers streamed
# through the app, decode tok/s + time to first token for transformers' generate(), the static step eager and the
# static step compiled ahead of time (AOTInductor, as ZeroGPU's startup compiles it; its compile time too), and the
# ZeroGPU duration the app would ask at each speed (medcot/gpu_budget.py's formula, with a fresh worker's measured
# start-up), written to docs/bench/gpu.json (benchmarks/gpu_check.py says how each figure is measured).
#
# Usage: bash scripts/gpu-check.sh [--new-tokens N] [--rounds N] [--skip-embedded] [--out FILE]
#        python -m benchmarks.gpu_check --dry-run   (anywhere: every part on the CPU with the tiny model)
# Needs a CUDA build of torch in the active environment (or .venv): the CPU wheel the tests use cannot run it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/python ]]; then
    # shellcheck source=/dev/null
    . .venv/bin/activate
fi

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: torch sees no CUDA device; install a CUDA build of torch on a GPU machine" >&2
    exit 2
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # the embedded base needs no Hub; nothing else is fetched
exec python -m benchmarks.gpu_check "$@"
