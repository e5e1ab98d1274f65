#!/usr/bin/env bash
# Install the peers that benchmarks/bench_peers.py times (into the current environment; use a venv
# made with --system-site-packages to keep them apart from sdlib's own).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements-peers.txt
python -m pip install -q --no-deps keras-cv==0.9.0
python -c "import keras_cv, diffusers, torch; print('keras-cv', keras_cv.__version__, 'diffusers', diffusers.__version__, 'torch', torch.__version__)"
