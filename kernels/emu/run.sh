#!/usr/bin/env bash
# Builds and runs the CPU emulation of every kernel (kernels/emu/emu_test.cpp) with the host C++
# compiler. No GPU or CUDA toolkit needed. Usage: kernels/emu/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/kosmos2-kernels-emu"
"${CXX:-g++}" -std=c++20 -O2 -pthread -Wall -Wno-unknown-pragmas -Wno-unused-function \
    -o "$out" "$here/emu_test.cpp"
"$out"
