#!/usr/bin/env bash
# The keras.io guide's benchmark on a GPU: 3 images x 50 steps at 512x512, sdlib's modes warm and
# cold, and diffusers (float32 and float16) on the same card in the same run. Random SD v1.5 weights
# (the time does not depend on them), one fresh process per row (benchmarks/bench_peers.py).
#
#   bash benchmarks/gpu_benchmark.sh fetch   # where pip reaches PyPI: wheels for a Python 3.12 GPU
#                                            # machine without keras/diffusers, into .whl/
#   bash benchmarks/gpu_benchmark.sh         # on the GPU machine (uses .whl/ if present)
#
# Keras runs on JAX there (KERAS_BACKEND, default jax: a GPU TensorFlow wheel is too large to carry),
# so every sdlib mode is XLA-compiled: "Standard" is "XLA" there and runs once. Budget: ~1 min per row
# on an H100, 4 rows; a row is stopped after ROW_TIMEOUT seconds (default 150).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(keras==3.15.1 namex optree diffusers==0.42.1 importlib_metadata lazy-importer)

if [ "${1:-}" = "fetch" ]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  ls -la .whl
  exit 0
fi

if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/sdlib-gpu-site .whl/*.whl
  export PYTHONPATH="/tmp/sdlib-gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
"$PY" - <<'PYCHECK'
import importlib, sys
missing = [name for name in ("keras", "diffusers", "transformers", "torch", "jax", "safetensors", "regex")
           if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing on this machine: {missing}; run `bash benchmarks/gpu_benchmark.sh fetch` "
             "where PyPI is reachable and bring .whl/ along")
import jax, torch
print("jax devices:", jax.devices(), "| torch cuda:", torch.cuda.is_available())
PYCHECK
MODES=()
if [ "$KERAS_BACKEND" = "jax" ]; then  # on JAX "XLA" is "Standard" and "XLA + mixed" is "Mixed"
  MODES=(--modes "sdlib:Standard" "sdlib:Mixed precision" "diffusers:eager float32"
         "diffusers:eager bfloat16")
fi
"$PY" benchmarks/bench_peers.py --size 512 --components pipeline --steps 50 --batch-size 3 \
  --libraries sdlib diffusers --repeats 3 --timeout "${ROW_TIMEOUT:-150}" "${MODES[@]}" "${@}"
