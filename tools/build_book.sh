#!/usr/bin/env bash
# Build the book.
#   bash tools/build_book.sh        readers' build: install, run every chapter with the default model
#                                   (mini-shapes on CPU, offline), render to _build/html
#   bash tools/build_book.sh --ci   CI build: run every notebook CI-sized through nbmake on copies in
#                                   _build/ci-src (the committed notebooks are never overwritten),
#                                   render those with -W, then check the pages in headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-readers}
if [ "$mode" = "--ci" ]; then
  bash tools/install_chromium.sh  # the page check at the end; fail now rather than after the notebooks
fi

if [ "${SDLIB_SKIP_INSTALL:-0}" != "1" ]; then
  python -m pip install -q -r requirements.txt
  python -m pip install -q --no-deps -e .
fi
export TF_CPP_MIN_LOG_LEVEL=3
# TensorFlow 2.21 prints C++ start-up logs (oneDNN, CUDA probing) that ignore TF_CPP_MIN_LOG_LEVEL, and
# ipykernel would copy them into the first cell's output. With capture_fd_output off they stay in this
# script's log; Python's own warnings still show in the cells.
IPYTHONDIR=$(mktemp -d)
export IPYTHONDIR
trap 'rm -rf "$IPYTHONDIR"' EXIT
mkdir -p "$IPYTHONDIR/profile_default"
echo "c.IPKernelApp.capture_fd_output = False" > "$IPYTHONDIR/profile_default/ipython_kernel_config.py"

if [ "$mode" = "--ci" ]; then
  export SDLIB_CI=1 SDLIB_PRESET=${SDLIB_PRESET:-tiny}
  # nbmake skips any path containing "_build", so the executed copies live in ci-book/.
  src=ci-book/src
  rm -rf ci-book && mkdir -p "$src"
  cp -r _config.yml _toc.yml book notebooks "$src"/
  start=$(date +%s)
  # nbmake executes each notebook; --overwrite keeps the executed copy, which the book renders.
  # Two notebooks at a time (pytest-xdist): most cells leave a core idle.
  (cd "$src" && python -m pytest --nbmake --overwrite --nbmake-timeout=600 -q -n 2 notebooks/)
  echo "notebooks executed in $(( $(date +%s) - start )) s"
  sed -i 's/execute_notebooks: force/execute_notebooks: "off"/' "$src/_config.yml"
  start=$(date +%s)
  jupyter-book build "$src" -W --keep-going --path-output ci-book/out
  echo "book built in $(( $(date +%s) - start )) s"
  python tools/check_book.py ci-book/out/_build/html --screenshot ci-book/chapter1.png
else
  start=$(date +%s)
  jupyter-book build . -W --keep-going
  echo "book built (every chapter executed) in $(( $(date +%s) - start )) s: _build/html/index.html"
  echo "(maintainers: python tools/store_outputs.py copies the fresh outputs into notebooks/)"
fi
