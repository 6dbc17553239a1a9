#!/usr/bin/env bash
# FerrousForge's two commands (README.md):
#   ./dev.sh run [forge serve flags] set up .venv, pull smollm2:135m, serve it on :11434
#                                    with the browser demo at /web/
#   ./dev.sh test [pytest args]      set up .venv and test needs, run ruff, mypy, pytest
#   ./dev.sh setup                   only set up .venv (with the dev tools)
#   ./dev.sh bench [bench/serve.py flags]  build llama-server once, then bench/serve.py
# Both are idempotent: a second run reuses .venv, node_modules and the cached llama wheel.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=$VENV/bin/python
LLAMA_VERSION=0.3.36
WHEELS=${FORGE_WHEEL_CACHE:-$HOME/.cache/ferrousforge/wheels}
TEST_HOME=${FORGE_TEST_HOME:-$HOME/.cache/ferrousforge/test-home}
LLAMA_SERVER=${FORGE_LLAMA_SERVER:-$HOME/.cache/ferrousforge/llama-server-$LLAMA_VERSION/llama-server}
# DESIGN.md §6: the native build crashes on quantized models here (AMX); pin the ISA.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

setup_venv() {
  if [ ! -x "$PY" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
}

setup_llama() {
  if "$PY" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
    return
  fi
  local wheel
  wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    say "building llama-cpp-python $LLAMA_VERSION once (5-10 minutes; cached in $WHEELS)"
    mkdir -p "$WHEELS"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$PY" -m pip wheel --no-deps --no-cache-dir -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)
  fi
  say "installing $(basename "$wheel")"
  "$PY" -m pip install -q --no-deps "$wheel"
}

setup_project() {  # $1: extras, e.g. "llama" or "llama,dev"
  local stamp="$VENV/.forge-setup-$1" sum done extra
  sum=$(cat pyproject.toml dev.sh | sha256sum | cut -c1-64)
  for done in "$VENV"/.forge-setup-*; do  # an install with these extras (or more) is current
    [ "$(cat "$done" 2>/dev/null)" = "$sum" ] || continue
    for extra in ${1//,/ }; do
      [[ ",${done##*/.forge-setup-}," == *",$extra,"* ]] || continue 2
    done
    "$PY" -c "import ferrousforge" 2>/dev/null && return
  done
  say "installing ferrousforge[$1] (editable)"
  "$PY" -m pip install -q -e ".[$1]"
  echo "$sum" >"$stamp"
}

setup_torch() {  # exactly this version: a local CPU wheel here; anything else pulls CUDA builds
  "$PY" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null ||
    "$PY" -m pip install -q "torch==2.13.0"
}

apt_install() {  # $1: why; the rest: Debian packages, installed only when missing
  local why=$1 missing=() pkg
  shift
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || { say "no apt-get: install ${missing[*]} by hand ($why)"; return; }
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  say "installing ${missing[*]} (Debian) for $why"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_test_system() {
  # lavapipe: the Vulkan adapter wgpu's tests run on; chromium: the browser Playwright drives
  # (never `playwright install`: browser downloads fail here)
  apt_install "wgpu's lavapipe adapter and Playwright's browser" mesa-vulkan-drivers chromium
  # JupyterHub's proxy, for the hub tests (a Node program from npm, installed once)
  command -v configurable-http-proxy >/dev/null ||
    npm install -g --ignore-scripts --no-audit --no-fund --loglevel=error configurable-http-proxy@5
}

setup_jupyter_extension() {  # editable installs skip the data file that enables it: copy it
  mkdir -p "$VENV/etc/jupyter/jupyter_server_config.d"
  cp jupyter-config/ferrousforge.json "$VENV/etc/jupyter/jupyter_server_config.d/"
}

setup_web() {  # the browser build: runtimes from npm into web/vendor (web/build.mjs)
  command -v npm >/dev/null || apt_install "the browser build (npm)" nodejs npm
  local sum
  sum=$(cat package.json package-lock.json | sha256sum | cut -c1-64)
  if [ "$(cat node_modules/.forge-stamp 2>/dev/null)" != "$sum" ]; then
    say "installing the browser runtimes (npm ci; bench/browser.py also wants the dev ones)"
    # --ignore-scripts: no package may download anything at install time (DESIGN.md §6)
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$sum" >node_modules/.forge-stamp
  fi
  PYTHON="$PY" npm run --silent build
}

setup_llama_server() {  # the bench's peer: llama.cpp's own server, from the wheel's vendored source
  [ -x "$LLAMA_SERVER" ] && return
  local src
  src=$(mktemp -d)
  say "building llama-server from llama-cpp-python $LLAMA_VERSION's llama.cpp once (about 5 minutes)"
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$src" "llama-cpp-python==$LLAMA_VERSION"
  tar -xzf "$src"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$src"
  # shellcheck disable=SC2086  # the flags are words
  cmake -S "$src/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp" -B "$src/build" $LLAMA_CMAKE_ARGS \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$src/build" --target llama-server -j "$(nproc)" >/dev/null
  mkdir -p "$(dirname "$LLAMA_SERVER")"
  cp "$src/build/bin/llama-server" "$LLAMA_SERVER"
  rm -rf "$src"
}

cmd_bench() {
  cmd_setup
  setup_llama_server
  setup_project "llama,torch,onnx,tvm,wgpu,jax,tensorflow,jupyter,hub,dev,bench"  # llama_cpp.server, the other peer
  FORGE_LLAMA_SERVER="$LLAMA_SERVER" "$PY" bench/serve.py "$@"
}

cmd_setup() {
  setup_venv
  setup_llama
  setup_torch
  setup_project "llama,torch,onnx,tvm,wgpu,jax,tensorflow,jupyter,hub,dev"
  setup_jupyter_extension
  setup_web
}

cmd_run() {
  setup_venv
  setup_llama
  setup_torch  # the ONNX export of minilm:l6 that the demo's embeddings run in the browser
  setup_project "llama,onnx,torch"
  setup_web
  "$VENV/bin/forge" pull smollm2:135m
  "$VENV/bin/forge" pull minilm:l6
  ensure_onnx "${FORGE_HOME:-$HOME/.ferrousforge}"
  exec "$VENV/bin/forge" serve --preload smollm2:135m "$@"
}

ensure_onnx() {  # $1: a store home; converts minilm:l6 to ONNX (for ORT-web) once
  [ -f "$1/manifests/library/minilm/l6-onnx.json" ] ||
    FORGE_HOME="$1" "$VENV/bin/forge" convert minilm:l6 --to onnx
}

cmd_test() {
  cmd_setup
  setup_test_system
  say "pulling smollm2:135m and minilm:l6 for the real-model tier into $TEST_HOME"
  FORGE_HOME="$TEST_HOME" "$VENV/bin/forge" pull smollm2:135m
  FORGE_HOME="$TEST_HOME" "$VENV/bin/forge" pull minilm:l6
  ensure_onnx "$TEST_HOME"
  say "ruff"
  "$VENV/bin/ruff" format --check .
  "$VENV/bin/ruff" check .
  say "mypy"
  "$VENV/bin/mypy"
  say "pytest (fast tiers, then the slow real-model tier)"
  FORGE_TEST_HOME="$TEST_HOME" "$VENV/bin/pytest" "$@"
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  setup) cmd_setup ;;
  bench) shift; cmd_bench "$@" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
