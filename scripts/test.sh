#!/usr/bin/env bash
# The README's test command: installs dependencies, builds kvsim with warnings as errors, runs
# the whole GoogleTest suite, then the same suite under AddressSanitizer + UBSan, then a short
# libFuzzer run of every harness (scripts/fuzz.sh), then the clang-format check. Set
# KVSIM_SKIP_SANITIZERS=1 or KVSIM_SKIP_FUZZ=1 to skip those passes locally. The
# sanitizer build leaves MPI out (Open MPI's own allocations trip LeakSanitizer); the Release
# suite runs the MPI sweep tests under mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# ccache hits across clones (CI builds a fresh clone in another folder).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1

bash scripts/install_deps.sh

echo "== Release build (-Werror) and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSIM_WERROR=ON
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600

if [ "${KVSIM_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSIM_WERROR=ON \
    -DKVSIM_SANITIZE="address;undefined" -DKVSIM_BUILD_BENCH=OFF -DKVSIM_MPI=OFF
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 1200
fi

if [ "${KVSIM_SKIP_FUZZ:-0}" != 1 ]; then
  # A short pass over every libFuzzer harness, from the seed corpora plus what earlier runs
  # found (build-fuzz/corpus); README "Fuzzing" has the long run.
  echo "== libFuzzer short run (${KVSIM_FUZZ_SECONDS:-20}s per harness)"
  bash scripts/fuzz.sh "${KVSIM_FUZZ_SECONDS:-20}"
fi

echo "== clang-format check"
git ls-files -z '*.h' '*.cc' | xargs -0 -r clang-format --dry-run --Werror
echo "scripts/test.sh: all checks passed"
