#!/usr/bin/env bash
# Compile the Space's requirements.txt from pyproject.toml.
#
# The Space (ZeroGPU, Python 3.12, x86_64 Linux) installs requirements.txt: the library's dependencies plus the
# `app` extra, with torch pinned by space/constraints.txt to a version ZeroGPU supports (the CUDA wheel from PyPI).
# The `local` and `dev` extras are never compiled in, nor is the medcot package itself: the Space runs app.py from
# the repository root, where medcot/ is importable.
#
# Usage: bash scripts/compile-requirements.sh [OUTPUT]   (OUTPUT defaults to requirements.txt)
# Versions already pinned in OUTPUT are kept when they still satisfy pyproject.toml; pass --upgrade through
# UV_EXTRA_ARGS=--upgrade to move every pin to the newest release.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
output="${1:-requirements.txt}"

if command -v uv >/dev/null 2>&1; then
    uv_cmd=(uv)
else
    uv_cmd=(python3 -m uv)
fi

extra_args=()
if [[ -n "${UV_EXTRA_ARGS:-}" ]]; then
    read -r -a extra_args <<<"$UV_EXTRA_ARGS"
fi

"${uv_cmd[@]}" pip compile pyproject.toml \
    --extra app \
    --python-version 3.12 \
    --python-platform x86_64-manylinux_2_28 \
    -c space/constraints.txt \
    --custom-compile-command "bash scripts/compile-requirements.sh" \
    --quiet \
    "${extra_args[@]}" \
    -o "$output"
