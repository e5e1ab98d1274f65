#!/usr/bin/env bash
# The test command of the README: install, lint, unit + parity tests on TensorFlow, the parity tests
# again on JAX and (where torch is installed: CI installs its CPU build) on torch, then every notebook
# (CI-sized) and the book built from those executed copies.
set -euo pipefail
cd "$(dirname "$0")/.."

# The book check at the very end needs Chromium: find it (or install it) now, not after ten minutes.
bash tools/install_chromium.sh

python -m pip install -q -r requirements.txt
python -m pip install -q --no-deps -e .

echo "== ruff"
ruff check .

# Two pytest workers (pytest-xdist) keep both cores busy where one TensorFlow test alone would not
# (tracing, small ops): 460 s instead of 816 s here. --dist loadfile gives each file to one worker,
# so a module's fixtures are built once and one local Ray runs at a time. The JAX and torch runs
# stay in one process: there two workers were slower (170 s vs 134 s, 298 s vs 166 s), each
# backend already filling both cores (XLA's compiler, torch's intra-op threads).
echo "== pytest (TensorFlow backend)"
KERAS_BACKEND=tensorflow python -m pytest -q -rs -n 2 --dist loadfile --durations=10

echo "== parity tests (JAX backend)"
KERAS_BACKEND=jax python -m pytest -q -rs tests/test_parity.py tests/test_samplers.py tests/test_editing.py \
  tests/test_adapters_parity.py tests/test_lora.py tests/test_lcm.py tests/test_lcm_unet.py

if python -c "import torch" 2>/dev/null; then
  echo "== parity tests (torch backend)"
  KERAS_BACKEND=torch python -m pytest -q -rs tests/test_parity.py tests/test_samplers.py tests/test_editing.py \
    tests/test_adapters_parity.py tests/test_lora.py tests/test_lcm.py tests/test_lcm_unet.py \
    tests/test_layers.py tests/test_pipeline.py
else
  echo "== parity tests (torch backend): torch is not installed here, so they do not run;"
  echo "   'pip install torch' (CPU build: --index-url https://download.pytorch.org/whl/cpu) adds them"
fi

if [ -d notebooks ] && ls notebooks/*.ipynb >/dev/null 2>&1; then
  echo "== notebooks and book (CI-sized)"
  bash tools/build_book.sh --ci
fi
