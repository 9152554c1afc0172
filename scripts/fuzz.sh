#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/, KVSIM_FUZZ=ON: clang with ASan + UBSan) in build-fuzz/
# and runs each for SECONDS (default 30) from its seed corpus fuzz/corpus/<harness>/:
#   scripts/fuzz.sh [SECONDS] [HARNESS...]
# New coverage goes to build-fuzz/corpus/<harness>/ (kept between runs, never committed); a
# crash, hang (> 10 s per input), out-of-memory (> 2 GiB) or exception other than InputError
# stops that harness and leaves the input in build-fuzz/artifacts/<harness>/. Exits non-zero
# if any harness found something. scripts/test.sh runs a short pass; README "Fuzzing" the long.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
all=(trace_reader gguf llama2c tokenizer paging_input toml_config)
harnesses=("${@:-${all[@]}}")
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSIM_FUZZ=ON -DKVSIM_WERROR=ON -DKVSIM_MPI=OFF -DKVSIM_BUILD_TESTS=OFF \
  -DKVSIM_BUILD_BENCH=OFF >/dev/null
targets=()
for h in "${harnesses[@]}"; do targets+=("${h}_fuzzer"); done
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

# Inputs larger than the biggest seed add nothing but time: HDF5 seeds are ~12-50 KiB, model
# seeds ~3-4 KiB, text seeds well under 1 KiB.
max_len() {
  case $1 in
    trace_reader) echo 65536 ;;
    gguf | llama2c | tokenizer) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

failed=()
for h in "${harnesses[@]}"; do
  work=build-fuzz/corpus/$h
  artifacts=build-fuzz/artifacts/$h/
  mkdir -p "$work" "$artifacts"
  echo "== fuzz $h for ${seconds}s"
  # UBSan reports are fatal (-fno-sanitize-recover); print their stack. Leaks inside libhdf5's
  # own error paths are the library's (fuzz/lsan.supp).
  if UBSAN_OPTIONS=print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    LSAN_OPTIONS=suppressions=fuzz/lsan.supp \
    "build-fuzz/fuzz/${h}_fuzzer" -max_total_time="$seconds" -max_len="$(max_len "$h")" \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts" -print_final_stats=1 \
    "$work" "fuzz/corpus/$h" >"build-fuzz/$h.log" 2>&1; then
    grep -E "stat::number_of_executed_units|stat::new_units_added" "build-fuzz/$h.log" |
      tr '\n' ' '
    echo
  else
    echo "fuzz $h: FAILED, see build-fuzz/$h.log and $artifacts"
    grep -E "^==[0-9]+==ERROR|runtime error|kvsim fuzz:|deadly signal|timeout|out-of-memory" \
      "build-fuzz/$h.log" | head -5 || true
    failed+=("$h")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "scripts/fuzz.sh: findings in ${failed[*]}"
  exit 1
fi
echo "scripts/fuzz.sh: ${#harnesses[@]} harnesses ran ${seconds}s each without findings"
